"""Predict a frame: with one model, or each row by its own segment's model of a family
(`FAMILY-VALUE`).

    predict_frame("iris-forest@production", frame, runtime)
    predict_frame("store@production", frame, runtime, segment_by="Store")
    predict_frame("store@production", frame, runtime, segment_by="Store", fallback="latest")

A segment is served by its model at the alias. Its rows are left without a prediction
when its value names no model (`unknown`), or when its model is registered but never took
the alias, its gate failed (`unpromoted`, with the gate's reason). With `fallback="latest"`,
those are scored by their latest registered version, and a `served_by` column marks every
row: the alias, or `latest`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from producer.serving import MODEL, PREDICTION, DeployedModel, load_deployed
from producer.spec import segment_model_name
from workers.contracts import ChainState, CsvDataset
from workers.pipeline.schema import SchemaError
from workers.pipeline.scoring import segment_keys, typed  # as `score --segment-by` on the workers
from workers.runtime import Runtime

SERVED_BY, LATEST = "served_by", "latest"
FALLBACKS = (LATEST,)


@dataclass(frozen=True)
class Unpromoted:
    """A segment whose model is registered but not at the alias, and why (its latest gate)."""

    model: str  # the segment's model name
    version: int  # its latest registered version
    reason: str
    rows: int
    served: bool  # scored with that version (fallback "latest")

    def describe(self) -> str:
        return f"{self.model}: registered (version {self.version}), not promoted: {self.reason}"


@dataclass
class Predicted:
    """A frame with its predictions: the input's columns, `prediction` and, per segment, the
    `model` version that made each row's (and, with a fallback, `served_by`). Rows left empty
    are counted per segment value: `unknown` (no model) and `unpromoted` (not at the alias;
    with a fallback these were scored, `served` true)."""

    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    unknown: dict[str, int] = field(default_factory=dict)
    unpromoted: dict[str, Unpromoted] = field(default_factory=dict)

    @property
    def unpredicted(self) -> int:
        """Rows left without a prediction."""
        return sum(self.unknown.values()) + sum(u.rows for u in self.unpromoted.values() if not u.served)


def predict_frame(ref: str, frame: pd.DataFrame, runtime: Runtime, segment_by: str | None = None,
                  fallback: str | None = None) -> Predicted:
    """Predict every row with `ref`, or with `segment_by`: each row with its own segment's
    model of the family `ref` (`FAMILY@ALIAS`, or `FAMILY` for each segment's latest)."""
    if segment_by is None:
        if fallback is not None:
            raise ValueError("--fallback is for segment families (with --segment-by)")
        model = load_deployed(ref, runtime)
        values, seen = model.predict_frame(frame)
        return Predicted(frame.assign(**{PREDICTION: values}), seen)
    return predict_segments(ref, frame, runtime, segment_by, fallback)


def family_parts(ref: str) -> tuple[str, str]:
    """`FAMILY@ALIAS` or `FAMILY` (each segment's latest) -> (family, alias or "")."""
    if "/" in ref:
        raise ValueError(f"{ref}: a segment family is FAMILY@ALIAS or FAMILY (each segment's "
                         "latest), not one version")
    family, at, alias = ref.partition("@")
    if at and not alias:
        raise ValueError(f"{ref}: the alias after '@' is empty (FAMILY@ALIAS, or FAMILY for each "
                         "segment's latest version)")
    return family, alias


def predict_segments(ref: str, frame: pd.DataFrame, runtime: Runtime, segment_by: str,
                     fallback: str | None = None) -> Predicted:
    """Each row with its own segment's model of the family `ref` (`FAMILY@ALIAS`, or `FAMILY`
    for each segment's latest); `fallback="latest"`: a segment whose model never took the
    alias is scored by its latest version."""
    if segment_by not in frame.columns:
        raise SchemaError(segment_by, f"missing from the input, needed by --segment-by; it has "
                          f"{[str(c) for c in frame.columns]}")
    family, alias = family_parts(ref)
    if fallback is not None and fallback not in FALLBACKS:
        raise ValueError(f"--fallback {fallback!r}: the one fallback is {LATEST!r}")
    if fallback is not None and not alias:
        raise ValueError(f"--fallback {fallback}: {ref} names no alias, so every segment is served by "
                         "its latest version already (FAMILY@ALIAS)")
    keys = segment_keys(frame[segment_by])
    out = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    used = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    served = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    result = Predicted(frame)
    # By position: a schema error names the row of the whole frame (the file's row), as without segments.
    for value, rows in frame.groupby(keys, sort=False, dropna=False).indices.items():
        if pd.isna(value):  # no segment value: nothing to route by
            result.unknown["(missing)"] = len(rows)
            continue
        name = segment_model_name(family, str(value))
        model = _segment_model(name, alias, runtime)
        if model is None or not _serves(model, segment_by, str(value), family):
            result.unknown[str(value)] = len(rows)  # also another value's model by name ("-1", "1")
            continue
        if isinstance(model, dict):  # registered, never at the alias: say why; maybe its latest
            why = (model.get("decision") or {}).get("reason", "no decision recorded")
            result.unpromoted[str(value)] = Unpromoted(name, int(model["version"]), why, len(rows),
                                                       served=fallback == LATEST)
            if fallback != LATEST:
                continue
            model = load_deployed(f"{name}/{model['version']}", runtime)
        try:
            predicted, seen = model.predict_frame(frame.iloc[rows])
        except SchemaError as exc:
            raise exc.of(rows=rows) from None
        out.iloc[rows] = list(predicted)
        used.iloc[rows] = model.ref
        served.iloc[rows] = LATEST if str(value) in result.unpromoted else alias
        result.notes += seen
    if used.isna().all() and any(value != "(missing)" for value in [*result.unknown, *result.unpromoted]):
        # Not one segment has a model there: the family or the alias is wrong, not the rows.
        why = (f"; {len(result.unpromoted)} registered but not promoted (`--fallback latest` scores "
               f"them with their latest version), e.g. {next(iter(result.unpromoted.values())).describe()}"
               if result.unpromoted else "")
        raise ValueError(f"{ref}: no {segment_by} segment of {family!r} has a model"
                         + (f" at alias {alias!r}" if alias else "") + why)
    columns = {PREDICTION: typed(out), MODEL: used, **({SERVED_BY: served} if fallback else {})}
    result.frame = frame.assign(**columns)
    return result


def _segment_model(name: str, alias: str, runtime: Runtime) -> DeployedModel | dict[str, Any] | None:
    """The segment's model at the alias (or its latest, with no alias); its latest version's
    record where it has versions but none at the alias; None where it has none."""
    try:
        return load_deployed(f"{name}@{alias}" if alias else name, runtime)
    except KeyError:
        versions = runtime.registry.versions(name) if alias else []
        return versions[-1] if versions else None


def _serves(model: DeployedModel | dict[str, Any], segment_by: str, value: str, family: str) -> bool:
    """is_segment for a loaded model or a version's record."""
    if isinstance(model, DeployedModel):
        return is_segment(model.ref, model.lineage, segment_by, value, family)
    return is_segment(f"{model['name']}/{model['version']}", ChainState.model_validate(model["lineage"]),
                      segment_by, value, family)


def is_segment(ref: str, lineage: ChainState, segment_by: str, value: str, family: str) -> bool:
    """Whether version `ref` is the family's `segment_by`=`value` segment (not another value's
    model by name: "-1" and "1" are both shop-1); ValueError where it is not segmented by that
    column at all (the family, or the column, is not what the user thinks)."""
    dataset = lineage.job.model.dataset
    if not isinstance(dataset, CsvDataset) or dataset.segment_by != segment_by:
        raise ValueError(f"model {ref} is not a {segment_by} segment of {family!r}")
    return dataset.segment == value

