"""The `score` task: predict one chunk of a table on a worker (queue `score`).

Thin: the message (workers.contracts.ScoreChunk) names the model's artifacts and
the chunk's; the task reads both from the artifact store (each verified against
its digest; the model loaded trusting only allow-listed types), calls the pure
`score_frame` and stores the predictions as a new artifact, whose digest it returns.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from celery import Task, shared_task

from workers.contracts import ScoreChunk, ScoredChunk
from workers.modelcache import cached_served
from workers.pipeline.scoring import from_parquet, score_frame, to_parquet
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

    def model(self, job: ScoreChunk) -> Any:
        # The process's model cache: every chunk of a job uses the same model.
        rt = self.runtime
        return cached_served(rt.store.get, job.model_digest, job.transform_digest,
                             rt.settings.allowed_estimator_prefixes, rt.settings.model_cache_size,
                             job.trusted_types)


@shared_task(name=SCORE_TASK, base=ScoreTask, bind=True)  # type: ignore[misc]
def score(self: ScoreTask, message: dict[str, Any]) -> dict[str, Any]:
    job = ScoreChunk.model_validate(message)
    started = time.perf_counter()
    schema = None if job.input_schema is None else [c.model_dump(exclude_none=True) for c in job.input_schema]
    frame = from_parquet(self.runtime.store.get(job.chunk_digest))
    scored = score_frame(self.model(job), schema, frame)
    digest = self.runtime.store.put(to_parquet(scored))
    return ScoredChunk(chunk=job.chunk, result_digest=digest, rows=len(scored),
                       seconds=time.perf_counter() - started,
                       worker=self.request.hostname or socket.gethostname()).model_dump()
