"""Batch spec: load YAML, expand matrix and segments, validate with named errors.

Every problem is reported with the file, the model and the field; nothing is
enqueued unless the whole batch is valid.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from producer.packing import Pack
from workers.contracts import SLUG, CsvDataset, ModelSpec
from workers.pipeline.data import inspect_csv
from workers.pipeline.errors import PipelineError
from workers.settings import Settings

# Fields replaced whole by a model rather than merged with the defaults: mixing
# two datasets' or two estimators' fields would make no sense.
_REPLACED_WHOLE = frozenset({"dataset", "estimator"})


# libyaml's safe loader when PyYAML was built with it: ~10x faster on big specs.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# What a plain scalar may resolve to on the fast path (immutable values, so cached).
_PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{t}"
                        for t in ("null", "bool", "int", "float", "str", "timestamp"))


class SpecError(ValueError):
    """A batch spec is invalid; `problems` lists each one with file, model and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class MatrixSpec(BaseModel):
    """Cartesian product of axes; each axis maps a label to the value of one model field."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    base: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, dict[str, Any]] = Field(min_length=1)


class BatchFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=SLUG.pattern)
    defaults: dict[str, Any] = Field(default_factory=dict)
    models: list[dict[str, Any]] = Field(default_factory=list)
    matrix: MatrixSpec | None = None
    # Models per chain: "auto" packs small models from their recorded cost, 1 sends one chain each.
    pack: Annotated[int, Field(ge=1, le=1000)] | Literal["auto"] = "auto"


@dataclass(frozen=True)
class Batch:
    """A validated batch: its name, its expanded models and the spec text as submitted."""

    name: str
    models: list[ModelSpec]
    source: str
    path: str
    pack: Pack = "auto"


def load_batch(path: Path | str, settings: Settings) -> Batch:
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([f"{where}: cannot read the spec: {exc.strerror or exc}"]) from exc
    try:
        raw = _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SpecError([f"{where}: malformed YAML{at}: {getattr(exc, 'problem', exc)}"]) from exc
    if not isinstance(raw, dict):
        raise SpecError([f"{where}: the spec must be a mapping with 'name' and 'models' or 'matrix'"])
    try:
        spec = BatchFile.model_validate(raw)
    except ValidationError as exc:
        raise SpecError([f"{where}: field {_loc(e['loc'])!r}: {e['msg']}" for e in exc.errors()]) from exc
    return Batch(spec.name, validate_models(spec, settings, where), text, where, spec.pack)


def _load_yaml(text: str) -> Any:
    """yaml.safe_load's result, built from the parser's events when the document allows.

    PyYAML composes the whole node graph before constructing anything: for a
    100,000-model spec that was 400 MB of nodes and marks and most of the load
    time. Plain documents (mappings, sequences, untagged scalars: every spec we
    know of) are built here directly from the events, with the loader's own
    resolver and scalar constructors; anything else (anchors, aliases, merge
    keys, explicit tags, complex keys, several documents) and every error go
    through yaml.load, so results and error messages are yaml.load's.
    """
    try:
        return _load_plain_yaml(text)
    except (_NotPlain, yaml.YAMLError):
        return yaml.load(text, Loader=_YAML_LOADER)


class _NotPlain(Exception):
    """The document needs PyYAML's full composer and constructor."""


def _load_plain_yaml(text: str) -> Any:
    loader = _YAML_LOADER(text)
    try:
        get, resolve, constructors = loader.get_event, loader.resolve, loader.yaml_constructors
        if not isinstance(get(), yaml.StreamStartEvent) or not isinstance(get(), yaml.DocumentStartEvent):
            raise _NotPlain
        scalars: dict[str, Any] = {}  # a plain scalar's value depends on its text only
        # The container being filled, and for a mapping whether a key waits for its value.
        stack: list[tuple[Any, Any, bool]] = []
        current: Any = None
        root: Any = None
        key: Any = None
        has_key = False
        while True:
            event = get()
            kind = type(event)
            if kind is yaml.ScalarEvent:
                if event.anchor is not None or event.tag is not None:
                    raise _NotPlain
                if not event.implicit[0]:  # quoted or block scalar: a string
                    value = event.value
                elif event.value in scalars:
                    value = scalars[event.value]
                else:
                    tag = resolve(yaml.ScalarNode, event.value, event.implicit)
                    if tag not in _PLAIN_TAGS:  # '<<' (merge), '=' (value)
                        raise _NotPlain
                    node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark)
                    value = scalars[event.value] = constructors[tag](loader, node)
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                default = "map" if kind is yaml.MappingStartEvent else "seq"
                if event.anchor is not None or event.tag not in (None, f"tag:yaml.org,2002:{default}"):
                    raise _NotPlain
                if current is not None and isinstance(current, dict) and not has_key:
                    raise _NotPlain  # a mapping or sequence as a key
                stack.append((current, key, has_key))
                current, has_key = ({} if default == "map" else []), False
                continue
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                value = current
                current, key, has_key = stack.pop()
            elif kind is yaml.DocumentEndEvent:
                break
            else:  # an alias
                raise _NotPlain
            if isinstance(current, dict):
                if has_key:
                    current[key] = value
                    has_key = False
                else:
                    key, has_key = value, True
            elif isinstance(current, list):
                current.append(value)
            else:
                root = value
        if not isinstance(get(), yaml.StreamEndEvent):
            raise _NotPlain  # another document: yaml.load says so
        return root
    finally:
        loader.dispose()


def validate_models(spec: BatchFile, settings: Settings, where: str) -> list[ModelSpec]:
    raw_models = [(f"models[{i}]", _merge(spec.defaults, m)) for i, m in enumerate(spec.models)]
    if spec.matrix is not None:
        raw_models += _expand_matrix(spec.matrix, spec.defaults, where, settings.max_models_per_batch)
    if not raw_models:
        raise SpecError([f"{where}: the batch has no models (give 'models' or 'matrix')"])
    problems: list[str] = []
    models: list[ModelSpec] = []
    checked: dict[str, PipelineError | None] = {}
    csv_segments: dict[str, list[str]] = {}
    for position, raw in raw_models:
        label = f"model {raw.get('name', '?')!r} ({position})"
        try:
            model = ModelSpec.model_validate(raw)
        except ValidationError as exc:
            problems += [f"{where}: {label}: field {_loc(e['loc'])!r}: {e['msg']}" for e in exc.errors()]
            continue
        try:
            _check_estimator(model, settings, checked)
            models += _expand_segments(model, settings, csv_segments)
        except PipelineError as exc:
            problems.append(f"{where}: {label}: field {exc.field!r}: {exc.message}")
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            problems.append(f"{where}: model {model.name!r}: field 'name': duplicate model name")
        seen.add(model.name)
    if len(models) > settings.max_models_per_batch:
        problems.append(f"{where}: the batch has {len(models)} models, more than the maximum "
                        f"{settings.max_models_per_batch} (MODELFLEET_MAX_MODELS_PER_BATCH)")
    if problems:
        raise SpecError(problems)
    return models


def _expand_matrix(matrix: MatrixSpec, defaults: dict[str, Any], where: str,
                   limit: int) -> list[tuple[str, dict[str, Any]]]:
    size = 1
    for values in matrix.axes.values():
        size *= len(values)
    # Refuse before expanding, so a typo cannot allocate a billion models.
    if size > limit:
        raise SpecError([f"{where}: field 'matrix.axes': expands to {size} models, more than the "
                         f"maximum {limit} (MODELFLEET_MAX_MODELS_PER_BATCH)"])
    names = list(matrix.axes)
    out = []
    for combo in itertools.product(*(matrix.axes[n].items() for n in names)):
        labels = {axis: label for axis, (label, _) in zip(names, combo, strict=True)}
        try:
            name = matrix.name.format(**labels)
        except KeyError as exc:
            raise SpecError([f"{where}: field 'matrix.name': {matrix.name!r} uses an unknown axis "
                             f"{exc}; axes are {names}"]) from exc
        # Attribute, index and format-spec errors too: the template is user text (found by hypothesis).
        except (IndexError, ValueError, AttributeError, TypeError) as exc:
            raise SpecError([f"{where}: field 'matrix.name': {matrix.name!r} is not a valid name "
                             f"template ({exc}); use plain {{axis}} fields from {names}"]) from exc
        model = _merge(defaults, matrix.base)
        for axis, (_, value) in zip(names, combo, strict=True):
            model = _merge(model, {axis: value})
        model["name"] = name
        out.append((f"matrix {labels}", model))
    return out


def _expand_segments(model: ModelSpec, settings: Settings,
                     seen: dict[str, list[str]]) -> list[ModelSpec]:
    """One model per distinct value of a CSV's segment column; the file is read once."""
    ds = model.dataset
    if not isinstance(ds, CsvDataset):
        return [model]
    key = json.dumps(ds.model_dump(exclude={"segment"}), sort_keys=True)
    if key not in seen:
        seen[key] = inspect_csv(ds, settings.data_root)
    if ds.segment_by is None or ds.segment is not None:
        return [model]
    out = []
    for value in seen[key]:
        dataset = ds.model_copy(update={"segment": value})
        out.append(model.model_copy(update={
            "name": f"{model.name}-{_slug(value)}", "dataset": dataset,
            "tags": {**model.tags, ds.segment_by: value}}))
    return out


def _check_estimator(model: ModelSpec, settings: Settings,
                     checked: dict[str, PipelineError | None]) -> None:
    """Build the estimator once per distinct (task, class, params) to reject bad params now."""
    # Imported here: only validation needs scikit-learn, not every command that loads this module.
    from workers.pipeline.estimators import build_estimator

    key = json.dumps([model.task, model.estimator.model_dump()], sort_keys=True)
    if key not in checked:
        try:
            build_estimator(model.estimator, model.task, settings.allowed_estimator_prefixes)
            checked[key] = None
        except PipelineError as exc:
            checked[key] = exc
    if (error := checked[key]) is not None:
        raise error


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in _REPLACED_WHOLE:
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", value.strip().lower()).strip("-") or "blank"


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(root)"
