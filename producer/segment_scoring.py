"""Score a large table by segment on the workers: each row by its own segment's model.

    result = score_segments("store@production", Path("big.parquet"), "Store", runtime, app, Path("out"))

The input is read a chunk at a time (never whole, here): each chunk is stored as a
Parquet artifact and sent at once as a `score` task that names the models of the
segment values in it (resolved here once per value, so an alias that moves mid-job
does not split it). Rows of a value with no model are left without a prediction
and counted, as in `predict --segment-by`. The output, DIR/predictions.parquet (the
input's columns plus `prediction` and `model`), is written a chunk at a time as well,
with each column's type widened across chunks (an integer column with a fraction
further down is written as float).
"""

from __future__ import annotations

import io
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from producer.scoring import OUTPUT, SCORE_TASK, NoScoreWorkers, Scored, score_workers
from producer.segments import family_parts, is_segment
from producer.spec import segment_model_name
from producer.tables import iter_table
from workers.contracts import ChainState, ScoreChunk, ScoredChunk, ScoreModel
from workers.pipeline.scoring import MODEL, PREDICTION, segment_keys, to_parquet
from workers.runtime import Runtime
from workers.settings import SCORE_QUEUE


class SegmentScoreError(ValueError):
    """A chunk's rows that do not fit their model, or a family with no model for any row."""


def segment_model(runtime: Runtime, family: str, alias: str, segment_by: str,
                  value: str) -> ScoreModel | None:
    """The version of `value`'s segment model a score task loads, or None (no model there)."""
    name = segment_model_name(family, value)
    try:
        record = runtime.registry.resolve(f"{name}@{alias}" if alias else name)
    except KeyError:
        return None
    ref = f"{record['name']}/{record['version']}"
    lineage = ChainState.model_validate(record["lineage"])
    if not is_segment(ref, lineage, segment_by, value, family):
        return None
    if lineage.trained is None or lineage.prepared is None:
        raise ValueError(f"{ref}: version record has no trained model in its lineage")
    if lineage.prepared.history_digest is not None:
        raise ValueError(f"{ref} is a lag model: its lags follow each series row by row across the "
                         "whole input; use `modelfleet predict --segment-by`")
    return ScoreModel(ref=ref, model_digest=lineage.trained.model_digest,
                      transform_digest=lineage.prepared.transform_digest,
                      input_schema=lineage.prepared.input_schema, trusted_types=record.get("trusted_types"))


def score_segments(ref: str, input_path: Path, segment_by: str, runtime: Runtime, app: Any, out_dir: Path,
                   chunk_rows: int = 100_000, timeout: float | None = None,
                   check_workers: bool = True) -> Scored:
    """Score `input_path` by segment on the workers (see the module's docstring)."""
    started = time.perf_counter()
    family, alias = family_parts(ref)
    if check_workers and not score_workers(app, runtime):
        raise NoScoreWorkers(f"no worker consumes the {SCORE_QUEUE!r} queue")
    store = runtime.store
    models: dict[str, ScoreModel | None] = {}
    chunks: list[str] = []
    schemas: list[pa.Schema] = []
    sent: list[Any] = []
    answers: list[ScoredChunk] = []
    first_sent: float | None = None
    try:
        for i, frame in enumerate(iter_table(input_path, chunk_rows, (segment_by,))):
            if segment_by not in frame.columns:
                raise SegmentScoreError(f"{input_path}: column {segment_by!r}: missing from the input, "
                                        f"needed by --segment-by; it has {[str(c) for c in frame.columns]}")
            values = [str(v) for v in segment_keys(frame[segment_by]).dropna().unique()]
            for value in values:
                if value not in models:
                    models[value] = segment_model(runtime, family, alias, segment_by, value)
            data = to_parquet(frame)
            chunks.append(store.put(data))
            schemas.append(pq.read_schema(io.BytesIO(data)))
            job = ScoreChunk(chunk=i, chunk_digest=chunks[-1], segment_by=segment_by,
                             segments={v: m for v in values if (m := models[v]) is not None})
            first_sent = first_sent or time.perf_counter()
            sent.append(app.signature(SCORE_TASK, args=(job.model_dump(mode="json"),), queue=SCORE_QUEUE,
                                      argsrepr=f"score family={family} chunk={i + 1}").apply_async())
        answers = [ScoredChunk.model_validate(r.get(timeout=_left(started, timeout))) for r in sent]
        scored = time.perf_counter()
        if bad := next((a for a in answers if a.error), None):
            raise SegmentScoreError(f"{input_path}, chunk {bad.chunk + 1} (rows {bad.chunk * chunk_rows + 1}-"
                                    f"{(bad.chunk + 1) * chunk_rows}): {bad.error}")
        unknown: Counter[str] = Counter()
        for a in answers:
            unknown.update(a.unknown)
        rows = sum(a.rows for a in answers)
        if sum(unknown.values()) == rows and set(unknown) != {"(missing)"}:
            raise SegmentScoreError(f"{ref}: no {segment_by} segment of {family!r} has a model"
                                    + (f" at alias {alias!r}" if alias else ""))
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / OUTPUT
        _write(path, store, chunks, schemas, [a.result_digest for a in answers])
    finally:
        for r in sent:
            r.forget()
        for digest in [*chunks, *(a.result_digest for a in answers if a.result_digest)]:
            store.delete_object(digest)
    used = {m.ref for m in models.values() if m is not None}
    return Scored(f"{len(used)} segment model(s) of {ref}", rows, len(chunks), path,
                  scored - (first_sent or scored), time.perf_counter() - started,
                  dict(Counter(a.worker for a in answers)), dict(unknown))


def _left(started: float, timeout: float | None) -> float | None:
    return None if timeout is None else max(0.1, timeout - (time.perf_counter() - started))


def _write(path: Path, store: Any, chunks: list[str], schemas: list[pa.Schema], results: list[str]) -> None:
    """The input's chunks with their predictions, in order, one chunk in memory at a time."""
    inputs = [pa.schema([f for f in s if f.name not in (PREDICTION, MODEL)]) for s in schemas]
    predicted = [pq.read_schema(io.BytesIO(store.get(d))) for d in results]  # two small columns each
    try:
        schema = pa.unify_schemas([*inputs, *predicted], promote_options="permissive").remove_metadata()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SegmentScoreError(f"the input's chunks do not share column types ({exc}); "
                                "write it as Parquet with one type per column") from exc
    if all(schema.field(f.name).type == f.type for f in inputs[0]):
        # pandas' own notes on the input's columns (Int64, object) hold for every chunk: kept.
        schema = schema.with_metadata(schemas[0].metadata)
    with pq.ParquetWriter(path, schema) as writer:
        for chunk, result in zip(chunks, results, strict=True):
            table = pq.read_table(io.BytesIO(store.get(chunk)))
            table = table.drop_columns([c for c in (PREDICTION, MODEL) if c in table.column_names])
            scored = pq.read_table(io.BytesIO(store.get(result)))
            for column in (PREDICTION, MODEL):
                table = table.append_column(column, scored[column])
            writer.write_table(table.select(schema.names).cast(schema))
