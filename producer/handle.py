"""A submitted batch: poll its status until every model is done."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from producer.status import PROGRESS_FIELDS, BatchStatus, batch_status, summarize
from workers import keys
from workers.runtime import Runtime
from workers.tracking import TERMINAL


@dataclass
class BatchHandle:
    batch_id: str
    runtime: Runtime
    # The batch's record, read once: a poll reads only its models' states.
    _record: dict[str, Any] | None = field(default=None, repr=False)

    def status(self) -> BatchStatus:
        return batch_status(self.runtime, self.batch_id)

    def progress(self, settled: dict[str, dict[str, str]] | None = None) -> BatchStatus:
        """The status as a poll needs it: counts and stages done, rows without metrics.

        `settled` holds the states of models already in a final state (filled in here): they
        are not read again, so a poll late in a big batch reads only the models still going.
        """
        if self._record is None:
            self._record = self.runtime.tracker.get_batch(self.batch_id)
        if self._record is None:
            raise KeyError(f"no batch {self.batch_id!r}")
        settled = {} if settled is None else settled
        models = self._record["models"]
        fresh = self.runtime.tracker.model_states(self.batch_id, [m for m in models if m not in settled],
                                                  PROGRESS_FIELDS)
        settled.update({name: state for name, state in fresh.items() if state.get("status") in TERMINAL})
        return summarize(self._record, {name: settled.get(name) or fresh[name] for name in models})

    def wait(self, timeout: float | None = None, poll: float = 0.5,
             on_progress: Callable[[BatchStatus], None] | None = None) -> BatchStatus:
        """Poll the tracking records until every model is deployed, failed or cancelled; the
        progress a poll reads is a few fields a model, the status returned is the whole one.

        Between polls it listens for models that finish (workers publish them), so the last
        one is seen within FINISHED_GAP instead of up to `poll` later.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        unreachable_since: float | None = None
        settled: dict[str, dict[str, str]] = {}
        gap = FINISHED_GAP
        with _Finished(self.runtime.redis, self.batch_id) as finished:
            while True:
                try:
                    started = time.monotonic()
                    status = self.progress(settled)
                    # The waiter shares the machine with the workers: its polls may take a
                    # small share of one core, however many models a poll reads.
                    gap = min(max(FINISHED_GAP, (time.monotonic() - started) / POLL_SHARE), MAX_GAP)
                    if status.done:
                        status = self.status()
                        if not status.done:  # a settled model was reset meanwhile (`retry`)
                            settled.clear()
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
                going = {m for m in self._record["models"] if m not in settled} if self._record else None
                finished.pause(poll, gap, going)


# After a model finishes, the next poll waits at least this long: a batch whose models finish
# every few milliseconds is read a few times a second, not once per model.
FINISHED_GAP = 0.05
# ... and at least its last read's time over this share, at most MAX_GAP: reading a 450-model
# batch after every finished model cost the CLI ~1.1 s of CPU, on a 2-core machine its workers needed.
POLL_SHARE = 0.05
MAX_GAP = 2.0


class _Finished:
    """The batch's finished-model notices (workers/tracking.py publishes them); a plain sleep
    wherever the subscription fails (Redis restarting, failing over)."""

    def __init__(self, client: redis.Redis, batch_id: str) -> None:
        self.channel = keys.batch_finished(batch_id)
        self.client = client
        self.pubsub: Any = None

    def __enter__(self) -> _Finished:
        try:
            self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            self.pubsub.subscribe(self.channel)  # before the first poll: no notice is missed
        except redis.exceptions.RedisError:
            self.close()
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.pubsub is not None:
            with contextlib.suppress(Exception):
                self.pubsub.close()
            self.pubsub = None

    def pause(self, poll: float, gap: float = FINISHED_GAP, waiting: set[str] | None = None) -> None:
        """Return once a model finished (but not before `gap`), or after `poll`; at once when
        every model in `waiting` has finished (the last model of a batch is not seen a gap late)."""
        started = time.monotonic()
        if self.pubsub is None:
            time.sleep(poll)
            return
        heard: set[str] = set()
        try:
            while (left := poll - (time.monotonic() - started)) > 0:
                if self._heard(heard, left):
                    break
            # The notices of this gap: one poll reads them all.
            while not (waiting is not None and waiting <= heard):
                left = gap - (time.monotonic() - started)
                if not self._heard(heard, max(left, 0.0)) and left <= 0:
                    break
        except redis.exceptions.RedisError:
            self.close()
            time.sleep(max(0.0, poll - (time.monotonic() - started)))

    def _heard(self, heard: set[str], timeout: float) -> bool:
        """Wait up to `timeout` for one notice; its model goes into `heard`."""
        message = self.pubsub.get_message(timeout=timeout)
        if message is None:
            return False
        data = message["data"]
        heard.add(data.decode() if isinstance(data, bytes) else str(data))
        return True
