"""A submitted batch: poll its status until every model is done."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from producer.status import BatchStatus, batch_status
from workers.runtime import Runtime


@dataclass
class BatchHandle:
    batch_id: str
    runtime: Runtime
    # The batch's record, read once: a poll reads only its models' states.
    _record: dict[str, Any] | None = field(default=None, repr=False)

    def status(self) -> BatchStatus:
        return batch_status(self.runtime, self.batch_id)

    def progress(self) -> BatchStatus:
        """The status as a poll needs it: counts and stages done, rows without metrics."""
        if self._record is None:
            self._record = self.runtime.tracker.get_batch(self.batch_id)
        return batch_status(self.runtime, self.batch_id, progress_only=True, record=self._record)

    def wait(self, timeout: float | None = None, poll: float = 0.5,
             on_progress: Callable[[BatchStatus], None] | None = None) -> BatchStatus:
        """Poll the tracking records until every model is deployed, failed or cancelled; the
        progress a poll reads is a few fields a model, the status returned is the whole one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        unreachable_since: float | None = None
        while True:
            try:
                status = self.progress()
                if status.done:
                    status = self.status()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                # Redis is failing over or restarting: the batch goes on; keep polling a while.
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if (now - unreachable_since > self.runtime.settings.failover_wait
                        or (deadline is not None and now > deadline)):
                    raise
                time.sleep(poll)
                continue
            unreachable_since = None
            if on_progress is not None:
                on_progress(status)
            if status.done:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch {self.batch_id} not done after {timeout}s: "
                                   f"{status.counts}")
            time.sleep(poll)
