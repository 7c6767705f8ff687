"""Score a large table on the workers: chunks through the artifact store, one `score` task each.

    result = score_table("iris-forest@production", frame, runtime, app, Path("out"), chunk_rows=100_000)

The rows are checked against the version's input schema here first (nothing is sent
if they do not fit); each chunk is stored as a Parquet artifact and its task carries
only digests (JSON); workers write their predictions as artifacts too, and the chunks'
predictions are joined in order to the input, in DIR/predictions.parquet. The chunk and
result artifacts are removed afterwards: they are this job's scratch, not the platform's memory.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from celery import group

from producer.serving import PREDICTION, served_history
from workers.contracts import ChainState, ScoreChunk, ScoredChunk
from workers.pipeline.history import HistoryError, with_lags
from workers.pipeline.schema import SchemaError, check_frame
from workers.pipeline.scoring import from_parquet, to_parquet
from workers.runtime import Runtime
from workers.settings import SCORE_QUEUE
from workers.slots import live_workers

SCORE_TASK = f"modelfleet.{SCORE_QUEUE}"  # as workers/scoring.py names it
OUTPUT = "predictions.parquet"


@dataclass
class Scored:
    """What a scoring job did: rows, chunks, where, and how fast (the send-to-last-result part)."""

    model: str
    rows: int
    chunks: int
    path: Path
    scoring_seconds: float
    total_seconds: float
    per_worker: dict[str, int] = field(default_factory=dict)
    # By segment: rows per segment value with no model (left without a prediction).
    unknown: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.scoring_seconds if self.scoring_seconds else float("inf")


class NoScoreWorkers(RuntimeError):
    """No worker consumes the score queue: the chunks would only wait."""


def score_workers(app: Any, runtime: Runtime | None = None, timeout: float = 2.0) -> list[str]:
    """The workers that consume the `score` queue now (none: a job would only wait).

    First from the workers' own registrations (workers/slots.py: one Redis read); only
    when none of those consumes the queue, by asking every worker (an inspect broadcast
    that waits out its whole timeout, 2 s of every `score`)."""
    if runtime is not None:
        registered = [str(w["worker"]) for w in live_workers(runtime.redis)
                      if SCORE_QUEUE in w.get("queues", [])]
        if registered:
            return sorted(registered)
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    return sorted(w for w, queues in replies.items() if any(q["name"] == SCORE_QUEUE for q in queues))


def score_table(ref: str, frame: pd.DataFrame, runtime: Runtime, app: Any, out_dir: Path,
                chunk_rows: int = 100_000, timeout: float | None = None,
                check_workers: bool = True) -> Scored:
    """Score `frame` with `ref` on the workers; the rows are checked first, and (with
    `check_workers`) that some worker consumes the queue, before anything is stored or sent."""
    started = time.perf_counter()
    record = runtime.registry.resolve(ref)
    lineage = ChainState.model_validate(record["lineage"])
    if lineage.trained is None or lineage.prepared is None:
        raise ValueError(f"{ref}: version record has no trained model in its lineage")
    model = f"{record['name']}/{record['version']}"
    schema = lineage.prepared.input_schema
    history = served_history(lineage, runtime)
    if history is not None:  # a lag model: its lag features from its stored history, here
        try:
            frame = with_lags(frame, history, lineage.job.model.features.dates.format)
        except HistoryError as exc:
            raise HistoryError(f"{model}: {exc}") from None
    rows = frame
    if schema is not None:
        try:
            rows = check_frame(frame, [c.model_dump(exclude_none=True) for c in schema])[0]
        except SchemaError as exc:
            raise exc.of(model) from None
    if check_workers and not score_workers(app, runtime):
        raise NoScoreWorkers(f"no worker consumes the {SCORE_QUEUE!r} queue")
    store = runtime.store
    chunks = [store.put(to_parquet(rows.iloc[i:i + chunk_rows])) for i in range(0, len(rows), chunk_rows)]
    jobs = [ScoreChunk(model_digest=lineage.trained.model_digest, chunk=i, chunk_digest=digest,
                       transform_digest=lineage.prepared.transform_digest, input_schema=schema,
                       trusted_types=record.get("trusted_types"))
            for i, digest in enumerate(chunks)]
    sent = time.perf_counter()
    results = group(app.signature(SCORE_TASK, args=(job.model_dump(mode="json"),), queue=SCORE_QUEUE,
                                  argsrepr=f"score model={record['name']} version={record['version']} "
                                           f"chunk={job.chunk + 1}/{len(jobs)}")
                    for job in jobs).apply_async()
    try:
        answers = sorted((ScoredChunk.model_validate(a) for a in results.get(timeout=timeout)),
                         key=lambda a: a.chunk)
    finally:
        results.forget()
    scored = time.perf_counter()
    predictions = pd.concat([from_parquet(store.get(a.result_digest)) for a in answers], ignore_index=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / OUTPUT
    frame.assign(**{PREDICTION: predictions[PREDICTION].to_numpy()}).to_parquet(path, index=False)
    for digest in [*chunks, *(a.result_digest for a in answers)]:
        store.delete_object(digest)
    return Scored(model, len(frame), len(chunks), path, scored - sent, time.perf_counter() - started,
                  dict(Counter(a.worker for a in answers)))
