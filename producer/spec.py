"""Batch spec: load YAML, expand matrix and segments, validate with named errors.

Every problem is reported with the file, the model and the field; nothing is
enqueued unless the whole batch is valid.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from producer.datamemo import DataMemo
from producer.packing import Pack
from producer.signatures import SignatureTable
from workers.contracts import (
    DEFER_TASK_CHECKS,
    MAX_NAME_CHARS,
    SLUG_RULE,
    CsvDataset,
    ModelSpec,
    SklearnDataset,
    SlugName,
    SyntheticDataset,
    is_slug,
    loc_text,
)
from workers.pipeline.errors import PipelineError
from workers.settings import Settings

Priority = Literal["high", "normal", "low"]

# Fields replaced whole by a model rather than merged with the defaults: mixing
# two datasets' or two estimators' fields (or two search spaces) would make no sense.
_REPLACED_WHOLE = frozenset({"dataset", "estimator", "search"})


# libyaml's safe loader when PyYAML was built with it: ~10x faster on big specs.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# What a plain scalar may resolve to on the fast path (immutable values, so cached).
_PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{t}"
                        for t in ("null", "bool", "int", "float", "str", "timestamp"))
# Nesting levels a spec document may have (real specs use fewer than 10): keeps every
# recursive step (PyYAML's composer, the defaults merge, error paths) far from the stack's end.
MAX_DEPTH = 64
# Problems listed per kind of check before the rest are summed up in one line.
_MAX_LISTED = 20


class SpecError(ValueError):
    """A batch spec is invalid; `problems` lists each one with file, model and field."""

    def __init__(self, problems: list[str], total: int | None = None) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        # How many problems were found: `problems` may list the first ones and sum up the rest.
        self.total = len(problems) if total is None else total


class MatrixSpec(BaseModel):
    """Cartesian product of axes; each axis maps a label to the value of one model field."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    base: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, dict[str, Any]] = Field(min_length=1)


class BatchFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The batch id (name, time, random suffix) names Redis keys and record files.
    name: SlugName
    defaults: dict[str, Any] = Field(default_factory=dict)
    models: list[dict[str, Any]] = Field(default_factory=list)
    matrix: MatrixSpec | None = None
    # Models per chain: "auto" packs small models from their recorded cost, 1 sends one chain each.
    pack: Annotated[int, Field(ge=1, le=1000)] | Literal["auto"] = "auto"
    # Queue priority of every stage of this batch: an urgent batch overtakes queued work.
    priority: Priority = "normal"
    # At most this many stages of this batch run at once, whatever the number of workers.
    max_parallel: Annotated[int, Field(ge=1)] | None = None
    # A batch whose gates did not all pass exits 1 (as `--fail-on-gate` does).
    fail_on_gate: bool = False


@dataclass(frozen=True)
class Batch:
    """A validated batch: its name, its expanded models and the spec text as submitted."""

    name: str
    models: list[ModelSpec]
    source: str
    path: str
    pack: Pack = "auto"
    priority: Priority = "normal"
    max_parallel: int | None = None
    fail_on_gate: bool = False


def load_batch(path: Path | str, settings: Settings) -> Batch:
    """The validated batch of a spec file, or SpecError; nothing else, whatever the file holds.

    Hostile input is refused before it costs much: the file's size, its encoding,
    its nesting depth, every string's length, non-finite numbers, aliases that
    expand it past the size limit, and the model count before any expansion.
    """
    path = Path(path)
    where = str(path)
    text = _read_text(path, where, settings.max_spec_bytes)
    try:
        raw = _load_yaml(text, settings.max_spec_bytes)
    except _Refused as exc:
        raise SpecError([f"{where}: {exc}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = str(getattr(exc, "problem", None) or exc)
        raise SpecError([f"{where}: malformed YAML{at}: {_cut(problem, 300)}"]) from exc
    except ValueError as exc:  # a scalar its constructor refuses: 2024-02-30, an int of 5000 digits
        raise SpecError([f"{where}: malformed YAML: {_cut(str(exc), 300)}"]) from exc
    if not isinstance(raw, dict):
        raise SpecError([f"{where}: the spec must be a mapping with 'name' and 'models' or 'matrix'"])
    measure = _Measure(settings.max_string_chars)
    measure.size(raw)
    if measure.problems:
        raise _refused([f"{where}: {_at(raw, p)}: {msg}" for p, msg in measure.problems], where)
    listed = raw.get("models")
    if isinstance(listed, list) and len(listed) > settings.max_models_per_batch:
        raise SpecError([f"{where}: field 'models': {len(listed)} models, more than the maximum "
                         f"{settings.max_models_per_batch} (MODELFLEET_MAX_MODELS_PER_BATCH)"])
    try:
        spec = BatchFile.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{where}: field {_loc(e['loc'])!r}: {e['msg']}" for e in exc.errors()]
        # Report the models' problems too, where the top level allows reading them.
        if (salvaged := _salvage(raw, exc)) is not None:
            try:
                validate_models(salvaged, settings, where, measure)
            except SpecError as more:
                problems += more.problems
        raise _refused(problems, where) from exc
    return Batch(spec.name, validate_models(spec, settings, where, measure), text, where, spec.pack,
                 spec.priority, spec.max_parallel, fail_on_gate=spec.fail_on_gate)


def _salvage(raw: dict[str, Any], exc: ValidationError) -> BatchFile | None:
    """The batch without its invalid top-level fields (name, pack, matrix, unknown keys), so
    its models can still be checked; None if the defaults or the models themselves are broken."""
    fixed = dict(raw)
    for error in exc.errors():
        top = error["loc"][0] if error["loc"] else None
        if top in ("defaults", "models") or top is None:
            return None
        if top == "name":
            fixed["name"] = "salvaged"
        else:
            fixed.pop(str(top), None)
    try:
        return BatchFile.model_validate(fixed)
    except ValidationError:
        return None


def _read_text(path: Path, where: str, limit: int) -> str:
    """The spec's text: at most `limit` bytes of UTF-8 (newlines as Path.read_text gives them)."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise SpecError([f"{where}: cannot read the spec: {exc.strerror or exc}"]) from exc
    if len(data) > limit:
        raise SpecError([f"{where}: the spec is larger than the maximum {limit} bytes "
                         "(MODELFLEET_MAX_SPEC_BYTES)"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpecError([f"{where}: the spec is not UTF-8 text: byte 0x{data[exc.start]:02x} at line "
                         f"{line} (offset {exc.start})"]) from None
    if "\r" in text:  # universal newlines, as read_text() gave them before
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


class _Refused(Exception):
    """The document is refused before it is built (too deep, aliases expand it too far)."""


def _load_yaml(text: str, max_size: int = 20_000_000) -> Any:
    """yaml.safe_load's result, built from the parser's events when the document allows.

    PyYAML composes the whole node graph before constructing anything: for a
    100,000-model spec that was 400 MB of nodes and marks and most of the load
    time. Plain documents (mappings, sequences, untagged scalars: every spec we
    know of) are built here directly from the events, with the loader's own
    resolver and scalar constructors; anything else (anchors, aliases, merge
    keys, explicit tags, complex keys, several documents) and every error go
    through PyYAML's composer and constructor, so results and error messages are
    yaml.load's. Between the two, the node graph is checked: its depth, and its
    size with every alias and merge key written out (at most `max_size`: an alias
    bomb is refused before the constructor copies merged mappings out).
    Raises _Refused for a document nested deeper than MAX_DEPTH.
    """
    try:
        return _load_plain_yaml(text)
    except (_NotPlain, yaml.YAMLError):
        pass
    _check_depth(text)  # PyYAML's composer recurses per level
    loader = _YAML_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, max_size)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _too_deep() -> _Refused:
    return _Refused(f"the document is nested more than {MAX_DEPTH} levels deep")


def _check_depth(text: str) -> None:
    loader = _YAML_LOADER(text)
    try:
        depth = 0
        while True:
            event = loader.get_event()
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _too_deep()
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                depth -= 1
            elif event is None or isinstance(event, yaml.StreamEndEvent):
                return
    finally:
        loader.dispose()


def _check_nodes(root: yaml.Node, limit: int) -> None:
    """Refuse a node graph that refers to itself or, with every alias and merge written
    out, is larger than `limit` (characters plus one per node). Iterative, linear in the
    graph's distinct nodes."""
    sizes: dict[int, int] = {}
    entered: set[int] = set()  # the nodes on the current path
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children: list[yaml.Node]
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        if done:
            entered.discard(key)
            size = 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else
                        sum(sizes[id(c)] for c in children))
            if size > limit:
                raise _Refused(f"with its aliases written out the document is larger than the maximum "
                               f"{limit} (MODELFLEET_MAX_SPEC_BYTES)")
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in entered:
            raise _Refused("an alias refers to a node that contains it (a recursive document)")
        entered.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


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
                if len(stack) > MAX_DEPTH:
                    raise _too_deep()
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


def validate_models(spec: BatchFile, settings: Settings, where: str,
                    measure: _Measure | None = None) -> list[ModelSpec]:
    limit = settings.max_models_per_batch
    combos = _matrix_size(spec.matrix)
    # Refuse before expanding, so a typo cannot allocate a billion models.
    if spec.matrix is not None and combos > limit:
        raise SpecError([f"{where}: field 'matrix.axes': expands to {combos} models, more than the "
                         f"maximum {limit} (MODELFLEET_MAX_MODELS_PER_BATCH)"])
    if len(spec.models) + combos > limit:
        raise SpecError([f"{where}: the batch has {len(spec.models) + combos} models ('models' and "
                         f"'matrix'), more than the maximum {limit} (MODELFLEET_MAX_MODELS_PER_BATCH)"])
    _check_expanded_size(spec, measure or _Measure(settings.max_string_chars), settings, where)
    raw_models = [(f"models[{i}]", _merge(spec.defaults, m)) for i, m in enumerate(spec.models)]
    # Every problem of the batch is collected before anything is refused: the matrix's too.
    problems: list[str] = []
    if spec.matrix is not None:
        expanded, problems = _expand_matrix(spec.matrix, spec.defaults, where, limit)
        raw_models += expanded
    if not raw_models and not problems:
        raise SpecError([f"{where}: the batch has no models (give 'models' or 'matrix')"])
    models: list[ModelSpec] = []
    checked: dict[str, PipelineError | None] = {}
    csv_segments: dict[str, list[str]] = {}
    table = SignatureTable.open(settings.check_cache_dir)
    memo = DataMemo.open(settings.check_cache_dir)
    for index, (position, raw) in enumerate(raw_models):
        label = f"model {_short(raw.get('name', '?'))} ({position})"
        try:
            model = ModelSpec.model_validate(raw, context={DEFER_TASK_CHECKS: True})
        except ValidationError as exc:
            problems += [f"{where}: {label}: field {_loc(e['loc'])!r}: {e['msg']}" for e in exc.errors()]
            continue
        found = [f"{where}: {label}: field {loc_text(loc)!r}{_inherited(spec, position, loc)}: {msg}"
                 for loc, msg in model.task_problems()]
        expanded_models: list[ModelSpec] = []
        try:
            _check_estimator(model, settings, checked, table)
            # Models still to come count too: segments may only use what is left.
            room = limit - len(models) - (len(raw_models) - index - 1)
            expanded_models = _expand_segments(model, settings, csv_segments, room, memo)
            if not found:  # preparing the data needs a consistent split, features and cv
                _check_features(model, settings, checked, memo)
        except PipelineError as exc:
            found.append(f"{where}: {label}: field {exc.field!r}: {exc.message}")
        problems += found
        if not found:
            models += expanded_models
    table.save()
    memo.save()
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            problems.append(f"{where}: model {model.name!r}: field 'name': duplicate model name")
        seen.add(model.name)
    if not models and not problems:
        problems.append(f"{where}: the batch has no models")
    if len(models) > limit:
        problems.append(f"{where}: the batch has {len(models)} models, more than the maximum "
                        f"{limit} (MODELFLEET_MAX_MODELS_PER_BATCH)")
    if problems:
        raise _refused(problems, where)
    return models


def _inherited(spec: BatchFile, position: str, loc: tuple[str | int, ...]) -> str:
    """' (from defaults)' when a model's field came from the batch's defaults, not its own entry."""
    def has(tree: Any) -> bool:
        for part in loc[:-1] if isinstance(loc[-1], int) else loc:
            if not isinstance(tree, dict) or part not in tree:
                return False
            tree = tree[part]
        return True

    if spec.matrix is not None and loc[0] in spec.matrix.axes:
        return ""
    own: Any = spec.models[int(position[7:-1])] if position.startswith("models[") else (
        spec.matrix.base if spec.matrix is not None else {})
    return " (from 'defaults')" if not has(own) and has(spec.defaults) else ""


def _matrix_size(matrix: MatrixSpec | None) -> int:
    return 0 if matrix is None else math.prod(len(values) for values in matrix.axes.values())


def _name_fields(template: str, axes: list[str]) -> list[tuple[str, str | None]] | str:
    """A matrix name template as (literal text, axis or None) parts: plain {axis} fields only;
    or why it is not one.

    Format specs and conversions are refused: `{axis:>999999999}` would build a
    gigabyte per name, and attribute or index lookups reach into the label strings.
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        return (f"{_short(template)} is not a valid name template ({exc}); use plain {{axis}} "
                f"fields from {axes}")
    out: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parts:
        if field is not None and (spec or conversion or not field.isidentifier()):
            return (f"{_short(template)} is not a valid name template ({_short('{' + field + '}')} "
                    f"is not a plain field); use plain {{axis}} fields from {axes}")
        if field is not None and field not in axes:
            return f"{_short(template)} uses an unknown axis {_short(field)}; axes are {axes}"
        out.append((literal, field))
    return out


def _expand_matrix(matrix: MatrixSpec, defaults: dict[str, Any], where: str,
                   limit: int) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """The matrix's models (position, raw fields) and the problems found expanding it.

    With a bad name template the models are still expanded (named by their place),
    so their other problems are reported with it.
    """
    size = _matrix_size(matrix)
    # Refuse before expanding, so a typo cannot allocate a billion models.
    if size > limit:
        raise SpecError([f"{where}: field 'matrix.axes': expands to {size} models, more than the "
                         f"maximum {limit} (MODELFLEET_MAX_MODELS_PER_BATCH)"])
    names = list(matrix.axes)
    template = _name_fields(matrix.name, names)
    problems = [f"{where}: field 'matrix.name': {template}"] if isinstance(template, str) else []
    fixed = sum(len(literal) for literal, _ in template) if not isinstance(template, str) else 0
    out = []
    for index, combo in enumerate(itertools.product(*(matrix.axes[n].items() for n in names))):
        labels = {axis: label for axis, (label, _) in zip(names, combo, strict=True)}
        model = _merge(defaults, matrix.base)
        for axis, (_, value) in zip(names, combo, strict=True):
            model = _merge(model, {axis: value})
        if isinstance(template, str):
            model["name"] = f"matrix-{index}"
        else:
            # Measured before it is built: a long label used many times would be a long name.
            length = fixed + sum(len(labels[axis]) for _, axis in template if axis is not None)
            if length > MAX_NAME_CHARS:
                problems.append(f"{where}: model of matrix {_short(labels)}: field 'name': the "
                                f"template makes a name of {length} characters; the name {SLUG_RULE}")
                continue
            model["name"] = "".join(literal + (labels[axis] if axis is not None else "")
                                    for literal, axis in template)
        # Axis labels become tags (explicit tags win), so `leaderboard --best-per AXIS` and
        # `--tag AXIS=LABEL` work on every matrix batch.
        if isinstance(model.get("tags", {}), dict):
            model["tags"] = {**labels, **model.get("tags", {})}
        out.append((f"matrix {_short(labels)}", model))
    return out, problems


def _expand_segments(model: ModelSpec, settings: Settings, seen: dict[str, list[str]],
                     room: int | None = None, memo: DataMemo | None = None) -> list[ModelSpec]:
    """One model per distinct value of a CSV's segment column; the file is read once
    (and not at all when the memo has its values for the file as it is).

    The values are user text too: each must fit the string limit, each derived name
    must be a safe slug like a given one, and there must be `room` for all of them.
    """
    ds = model.dataset
    if not isinstance(ds, CsvDataset):
        return [model]
    memo = memo or DataMemo(None)
    key = json.dumps(ds.model_dump(exclude={"segment"}), sort_keys=True)
    remembered = memo.key("segments", key, ds, settings.data_root)
    if key not in seen and (values := memo.get(remembered)) is not None:
        seen[key] = values
    if key not in seen:
        # Imported here: pandas costs every producer command (even `status`) half a second.
        from workers.pipeline.data import inspect_csv

        try:
            seen[key] = inspect_csv(ds, settings.data_root)
        except PipelineError:
            raise
        except (OSError, ValueError) as exc:  # not UTF-8, a NUL in the path, a huge field
            raise PipelineError("dataset.path",
                                f"cannot read {_short(ds.path)}: {_cut(str(exc), 200)}") from exc
        memo.put(remembered, seen[key])
    if ds.segment_by is None or ds.segment is not None:
        return [model]
    values = seen[key]
    if not values:  # found by hypothesis: a header and no rows made a batch of no models
        raise PipelineError("dataset.segment_by", f"column {_short(ds.segment_by)} has no values: "
                            "no rows to make models from")
    if room is not None and len(values) > room:
        raise PipelineError("dataset.segment_by", f"column {_short(ds.segment_by)} has {len(values)} "
                            f"distinct values: more models than the maximum "
                            f"{settings.max_models_per_batch} (MODELFLEET_MAX_MODELS_PER_BATCH) "
                            "allows with the others")
    out = []
    for value in values:
        if len(value) > settings.max_string_chars:
            raise PipelineError("dataset.segment_by", f"column {_short(ds.segment_by)} has a value of "
                                f"{len(value)} characters, more than the maximum "
                                f"{settings.max_string_chars} (MODELFLEET_MAX_STRING_CHARS)")
        name = segment_model_name(model.name, value)
        if not is_slug(name):
            raise PipelineError("name", f"segment {_short(value)} makes the model name {_short(name)}, "
                                f"which is not valid: the name {SLUG_RULE}")
        dataset = ds.model_copy(update={"segment": value})
        out.append(model.model_copy(update={
            "name": name, "dataset": dataset, "tags": {**model.tags, ds.segment_by: value}}))
    return out


def _check_estimator(model: ModelSpec, settings: Settings, checked: dict[str, PipelineError | None],
                     table: SignatureTable) -> None:
    """Build the estimator (and its search) once per distinct (task, class, params, search)
    to reject bad classes and params, at any depth, now; without building it where the
    signature table proves it would pass, or the same check passed before on the same code
    (producer/signatures.py)."""
    search = [model.search.model_dump(), model.search_metric] if model.search else None
    key = json.dumps([model.task, model.estimator.model_dump(), search], sort_keys=True)
    allowed = settings.allowed_estimator_prefixes
    if key not in checked and (table.accepts(model, allowed) or table.passed_before(model, allowed)):
        checked[key] = None
    if key not in checked:
        # Imported here: only a real check needs scikit-learn, not every command that loads this.
        from workers.pipeline.estimators import build_estimator
        from workers.pipeline.search import build_search

        try:
            estimator = build_estimator(model.estimator, model.task, allowed)
            if model.search is not None:
                build_search(estimator, model.search, model.search_metric, model.task, allowed)
            checked[key] = None
        except PipelineError as exc:
            checked[key] = exc
        table.learn(model, allowed, passed=checked[key] is None)
    if (error := checked[key]) is not None:
        raise error


def _check_features(model: ModelSpec, settings: Settings, checked: dict[str, PipelineError | None],
                    memo: DataMemo | None = None) -> None:
    """Prepare a file dataset's whole table once per distinct (data, features, split), so a
    missing column, a text column named numeric or a date in the wrong format is a spec error
    now rather than a failed run of every segment later. Shipped datasets are checked when
    the model names features or a split (synthetic ones may be large: checked by the worker)."""
    ds = model.dataset
    if isinstance(ds, SyntheticDataset) or (isinstance(ds, SklearnDataset) and
                                             "features" not in model.model_fields_set and
                                             "split" not in model.model_fields_set):
        return
    memo = memo or DataMemo(None)
    key = json.dumps(["features", model.task, ds.model_dump(), model.features.model_dump(mode="json"),
                      model.split.model_dump(mode="json"), model.preprocess.model_dump()], sort_keys=True)
    remembered = memo.key("features", key, ds, settings.data_root)
    if key not in checked and memo.get(remembered):  # passed before, on this very file
        checked[key] = None
    if key not in checked:
        # Imported here: only validation needs pandas and scikit-learn.
        from workers.pipeline.data import load_dataset
        from workers.pipeline.preprocess import prepare

        checked[key] = None
        try:
            prepare(load_dataset(ds, model.task, settings.data_root), model)
            memo.put(remembered, True)
        except PipelineError as exc:
            checked[key] = exc
        except (ValueError, TypeError, KeyError, OSError) as exc:  # pandas on a hostile file
            checked[key] = PipelineError("dataset", f"cannot prepare the data: {_cut(str(exc), 200)}")
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


def segment_model_name(family: str, value: str) -> str:
    """The model `segment_by` makes for one value: `store` and "8" -> `store-8`."""
    return f"{family}-{_slug(value)}"


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", value.strip().lower()).strip("-") or "blank"


def _loc(loc: Iterable[Any]) -> str:
    """A field's path (`evaluation.metrics[0]`); user-given keys shortened (they are echoed)."""
    return loc_text([p if isinstance(p, int) or len(str(p)) <= 40 else _short(p, 40) for p in loc])


def _short(value: Any, limit: int = 60) -> str:
    """repr() of user text, cut to `limit` characters: newlines and control characters show escaped."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 5]}...{text[-2:]}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


def _refused(problems: list[str], where: str) -> SpecError:
    """A SpecError listing at most _MAX_LISTED problems of one check, then how many more there are."""
    if len(problems) <= _MAX_LISTED:
        return SpecError(problems)
    return SpecError([*problems[:_MAX_LISTED], f"{where}: ... and {len(problems) - _MAX_LISTED} more "
                      "problem(s)"], total=len(problems))


def _at(raw: dict[str, Any], path: tuple[Any, ...]) -> str:
    """Where a problem found in the raw document is: the model (by name) and the field."""
    models = raw.get("models")
    if (len(path) >= 2 and path[0] == "models" and isinstance(models, list)
            and isinstance(path[1], int) and path[1] < len(models)):
        entry = models[path[1]]
        name = entry.get("name", "?") if isinstance(entry, dict) else "?"
        field = _loc(path[2:])
        return f"model {_short(name)} (models[{path[1]}]): field {field!r}"
    return f"field {_loc(path)!r}"


class _Measure:
    """The size of a loaded document as if written out (characters plus one per value),
    and its hostile values: strings longer than the limit, NaN and infinities, cycles.

    Containers are measured once each (aliases make the document a graph); the
    walk's depth is bounded by the loader's MAX_DEPTH.
    """

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.sizes: dict[int, int] = {}
        self.entered: set[int] = set()
        self.path: list[Any] = []
        self.problems: list[tuple[tuple[Any, ...], str]] = []

    def size(self, value: Any) -> int:
        if isinstance(value, str):
            if len(value) > self.max_chars:
                self.problems.append((tuple(self.path), f"a string of {len(value)} characters, more than "
                                      f"the maximum {self.max_chars} (MODELFLEET_MAX_STRING_CHARS)"))
            return 1 + len(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                self.problems.append((tuple(self.path), f"{value} is not a finite number"))
            return 1
        if isinstance(value, bytes | bytearray):
            return 1 + len(value)
        if not isinstance(value, dict | list):
            return 1
        key = id(value)
        if (known := self.sizes.get(key)) is not None:
            return known
        if key in self.entered:
            self.problems.append((tuple(self.path), "an alias refers to a value that contains it"))
            return 1
        self.entered.add(key)
        total = 1
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            self.path.append(k)
            total += self.size(v) + (self.size(k) if isinstance(value, dict) else 0)
            self.path.pop()
        self.entered.discard(key)
        self.sizes[key] = total
        return total


def _check_expanded_size(spec: BatchFile, measure: _Measure, settings: Settings, where: str) -> None:
    """Refuse a batch whose models, with the defaults (and the matrix base and axis values)
    merged into each, would be larger than the spec file may be: a small `defaults`
    repeated into many models, or aliased into them, is as big as if written out."""
    limit = settings.max_spec_bytes
    defaults = measure.size(spec.defaults)
    total = sum(defaults + measure.size(m) for m in spec.models)
    if spec.matrix is not None:
        combos = _matrix_size(spec.matrix)
        total += combos * (defaults + measure.size(spec.matrix.base))
        for values in spec.matrix.axes.values():
            total += sum(measure.size(v) for v in values.values()) * (combos // max(1, len(values)))
    if total > limit:
        raise SpecError([f"{where}: with 'defaults' (and the matrix) merged into each model, the "
                         f"batch's models are {total} characters and values, more than the maximum "
                         f"{limit} (MODELFLEET_MAX_SPEC_BYTES)"])
