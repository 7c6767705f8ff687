"""The `score` task: predict one chunk of a table on a worker (queue `score`).

Thin: the message (workers.contracts.ScoreChunk) names the model's artifacts and
the chunk's; the task reads both from the artifact store (each verified against
its digest; the model loaded trusting only allow-listed types, through the process's
model cache), calls the pure `score_frame` (or `score_segments`: each row by its
segment's model) and stores the predictions as a new artifact, whose digest it returns.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from celery import Task, shared_task

from workers.contracts import ColumnSchema, ScoreChunk, ScoredChunk
from workers.modelcache import cached_served
from workers.pipeline.schema import SchemaError
from workers.pipeline.scoring import Segment, from_parquet, score_frame, score_segments, to_parquet
from workers.runtime import Runtime
from workers.settings import SCORE_QUEUE
from workers.task import TRANSIENT

SCORE_TASK = f"modelfleet.{SCORE_QUEUE}"


class ScoreTask(Task):  # type: ignore[misc]
    autoretry_for = TRANSIENT
    retry_backoff = 2
    retry_jitter = True
    resultrepr_maxsize = 120
    _runtime: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            type(self)._runtime = Runtime.from_settings(self.app.modelfleet_settings)
        assert self._runtime is not None
        return self._runtime

    def model(self, model_digest: str, transform_digest: str | None,
              trusted_types: dict[str, list[str]] | None) -> Any:
        # The process's model cache: every chunk of a job uses the same models.
        rt = self.runtime
        return cached_served(rt.store.get, model_digest, transform_digest, rt.settings, trusted_types)

    def segment(self, job: ScoreChunk, value: str) -> Segment | None:
        found = (job.segments or {}).get(value)
        if found is None:
            return None
        return found.ref, self.model(found.model_digest, found.transform_digest, found.trusted_types), \
            _schema(found.input_schema)


def _schema(columns: list[ColumnSchema] | None) -> list[dict[str, Any]] | None:
    return None if columns is None else [c.model_dump(exclude_none=True) for c in columns]


@shared_task(name=SCORE_TASK, base=ScoreTask, bind=True)  # type: ignore[misc]
def score(self: ScoreTask, message: dict[str, Any]) -> dict[str, Any]:
    job = ScoreChunk.model_validate(message)
    started = time.perf_counter()
    frame = from_parquet(self.runtime.store.get(job.chunk_digest))
    unknown: dict[str, int] = {}
    if job.segment_by is None:
        assert job.model_digest is not None  # the contract's validator: one model or segments
        scored = score_frame(self.model(job.model_digest, job.transform_digest, job.trusted_types),
                             _schema(job.input_schema), frame)
    else:
        try:
            scored, unknown = score_segments(frame, job.segment_by, lambda v: self.segment(job, v))
        except SchemaError as exc:  # the producer names the chunk; nothing is stored
            return _answer(self, job, "", len(frame), started, error=str(exc))
    return _answer(self, job, self.runtime.store.put(to_parquet(scored)), len(scored), started,
                   unknown=unknown)


def _answer(task: ScoreTask, job: ScoreChunk, digest: str, rows: int, started: float,
            **fields: Any) -> dict[str, Any]:
    return ScoredChunk(chunk=job.chunk, result_digest=digest, rows=rows,
                       seconds=time.perf_counter() - started,
                       worker=task.request.hostname or socket.gethostname(), **fields).model_dump()
