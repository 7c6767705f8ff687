"""One step's index writes: Redis commands in one pipeline, journal lines in one append.

The storage classes (Tracker, StepCache, Registry) queue their commands and
journal records on a `Writes`; the stage sends them with `execute()`: one
round trip to Redis and one `write()` to the journal, whatever the step recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import NoScriptError

from workers.backpressure import is_full, until_accepted
from workers.journal import Journal

log = logging.getLogger(__name__)


class Writes:
    def __init__(self, client: redis.Redis, journal: Journal, earlier: Writes | None = None) -> None:
        self.client = client
        self.pipe = client.pipeline(transaction=False)
        self.journal = journal
        self.records: list[dict[str, Any] | str] = []
        # (pipeline index, record from that command's reply): a snapshot read back in the same trip.
        self._from_reply: list[tuple[int, Callable[[Any], dict[str, Any]]]] = []
        # (pipeline index, fallback): scripts sent by sha, redone through their Script on NOSCRIPT.
        self._scripts: list[tuple[int, Callable[[], Any]]] = []
        # (channel, message) published once the rest is sent and journaled (workers/tracking.py).
        self.notices: list[tuple[str, str]] = []
        # Cache leases whose release these writes carry (workers/cache.py).
        self.releases: set[str] = set()
        # Earlier models' writes of the same pack and stage, not sent yet (see `take`).
        self.earlier = earlier
        # (hash, field) -> amount: counters summed here and sent as one HINCRBY(FLOAT) each,
        # so a pack's members add to a stage's cost and the cache's hits in one command.
        self.counters: dict[tuple[str, str], int | float] = {}

    def __len__(self) -> int:
        return len(self.pipe.command_stack) + len(self.records) + len(self.counters)

    def take(self, other: Writes) -> None:
        """Queue `other`'s commands and records after these: sent with them, in one trip."""
        offset = len(self.pipe.command_stack)
        self.pipe.command_stack.extend(other.pipe.command_stack)
        self.records += other.records
        self._from_reply += [(offset + i, make) for i, make in other._from_reply]
        self._scripts += [(offset + i, redo) for i, redo in other._scripts]
        self.releases |= other.releases
        self.notices += other.notices
        for field, amount in other.counters.items():
            self.count(*field, amount)

    def before_lease(self, name: str) -> None:
        """About to take lease `name`: if earlier writes still hold it, send them first
        (a pack's two models with one preprocess key would otherwise wait on themselves)."""
        if self.earlier is not None and name in self.earlier.releases:
            self.earlier.execute()

    def count(self, key: str, field: str, amount: int | float) -> None:
        """Add `amount` to a hash field (HINCRBY, or HINCRBYFLOAT for a float) when these are sent."""
        self.counters[key, field] = self.counters.get((key, field), 0) + amount

    def record(self, record: dict[str, Any] | str) -> None:
        """A journal record: a dict, or a line already encoded (journal.encoded)."""
        self.records.append(record)

    def record_reply(self, make: Callable[[Any], dict[str, Any]]) -> None:
        """Journal make(reply) of the command queued last (e.g. an HGETALL after the write)."""
        self._from_reply.append((len(self.pipe) - 1, make))

    def script(self, script: Any, keys: list[str], args: list[Any]) -> None:
        """Queue a registered redis-py Script by its sha, without redis-py's per-pipeline SCRIPT EXISTS."""
        self.pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        self._scripts.append((len(self.pipe) - 1, lambda: script(keys=keys, args=args, client=self.client)))

    def execute(self) -> list[Any]:
        """Send everything queued (then empty, ready for more); the replies, in order."""
        for (key, field), amount in self.counters.items():  # after the rest: indexes stay valid
            if isinstance(amount, float):
                self.pipe.hincrbyfloat(key, field, amount)
            else:
                self.pipe.hincrby(key, field, amount)
        self.counters = {}
        stack = list(self.pipe.command_stack)
        records, from_reply, scripts, notices = self.records, self._from_reply, self._scripts, self.notices
        self.records, self._from_reply, self._scripts, self.releases, self.notices = [], [], [], set(), []
        if not stack:
            self.journal.append(records)
            self._publish(notices)
            return []
        replies = self.pipe.execute(raise_on_error=False)
        if any(is_full(reply) for reply in replies):
            # Redis is full (maxmemory): wait until it takes writes, then send them all again
            # (what it applied the first time, deletes and expiries, is safe to repeat).
            replies = until_accepted(lambda: self._send(stack), "a step's records")
        for index, redo in scripts:
            # A restarted Redis has forgotten our scripts: load and run that one again.
            if isinstance(replies[index], NoScriptError):
                replies[index] = redo()
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        self.journal.append(records + [make(replies[i]) for i, make in from_reply])
        self._publish(notices)
        return list(replies)

    def _publish(self, notices: list[tuple[str, str]]) -> None:
        # Last: whoever a notice wakes finds the records in Redis and in the journal. A notice
        # only wakes a waiter early (it polls anyway): one that cannot be sent is not worth
        # the stage's retry, whose records are already stored.
        if notices:
            pipe = self.client.pipeline(transaction=False)
            for channel, message in notices:
                pipe.publish(channel, message)
            try:
                pipe.execute()
            except redis.exceptions.RedisError as exc:
                log.warning("%d finished-model notice(s) not sent, waiters will poll: %s", len(notices), exc)

    def _send(self, stack: list[Any]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        pipe.command_stack = list(stack)
        replies = pipe.execute(raise_on_error=False)
        if full := next((reply for reply in replies if is_full(reply)), None):
            raise full
        return list(replies)
