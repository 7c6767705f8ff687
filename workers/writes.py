"""One step's index writes: Redis commands in one pipeline, journal lines in one append.

The storage classes (Tracker, StepCache, Registry) queue their commands and
journal records on a `Writes`; the stage sends them with `execute()`: one
round trip to Redis and one `write()` to the journal, whatever the step recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import NoScriptError

from workers.backpressure import is_full, until_accepted
from workers.journal import Journal


class Writes:
    def __init__(self, client: redis.Redis, journal: Journal) -> None:
        self.client = client
        self.pipe = client.pipeline(transaction=False)
        self.journal = journal
        self.records: list[dict[str, Any] | str] = []
        # (pipeline index, record from that command's reply): a snapshot read back in the same trip.
        self._from_reply: list[tuple[int, Callable[[Any], dict[str, Any]]]] = []
        # (pipeline index, fallback): scripts sent by sha, redone through their Script on NOSCRIPT.
        self._scripts: list[tuple[int, Callable[[], Any]]] = []

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
        stack = list(self.pipe.command_stack)
        replies = self.pipe.execute(raise_on_error=False)
        if any(is_full(reply) for reply in replies):
            # Redis is full (maxmemory): wait until it takes writes, then send them all again
            # (what it applied the first time, deletes and expiries, is safe to repeat).
            replies = until_accepted(lambda: self._send(stack), "a step's records")
        for index, redo in self._scripts:
            # A restarted Redis has forgotten our scripts: load and run that one again.
            if isinstance(replies[index], NoScriptError):
                replies[index] = redo()
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        self.journal.append(self.records + [make(replies[i]) for i, make in self._from_reply])
        return list(replies)

    def _send(self, stack: list[Any]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        pipe.command_stack = list(stack)
        replies = pipe.execute(raise_on_error=False)
        if full := next((reply for reply in replies if is_full(reply)), None):
            raise full
        return list(replies)
