"""Riding out a Redis that refuses writes because it is full (`maxmemory` with `noeviction`).

Such a Redis still answers reads, deletes and expiries; every command that may grow
memory (SET, HSET, LPUSH, a MULTI, ...) gets `OOM command not allowed`. Nothing a
worker holds may be dropped then: a stage's records, a message it took off a queue
(kombu keeps it only in memory until its unacked copy is written), an ack. So the
writer waits until Redis takes the writes again (someone freed memory or raised
`maxmemory`) and sends them again, logging while it waits. The commands sent again
are those of one step (workers/writes.py) or one kombu operation; those Redis had
applied the first time are deletes, expiries and reads, which are safe to repeat.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import redis

log = logging.getLogger(__name__)
T = TypeVar("T")

# How often the waiting writer tries again, and says so in its log.
RETRY_EVERY = 0.5
LOG_EVERY = 10.0


def is_full(error: object) -> bool:
    """Whether a Redis reply or exception is the refusal of a full Redis (also from a script)."""
    return isinstance(error, redis.exceptions.OutOfMemoryError) or (
        isinstance(error, redis.exceptions.ResponseError) and "OOM command not allowed" in str(error))


@contextlib.contextmanager
def full_is_transient() -> Iterator[None]:
    """Raise a full Redis's refusal inside a Lua script (a ResponseError: "Error running script
    ... OOM command not allowed") as redis-py's OutOfMemoryError, which a stage retries like a
    plain command's refusal instead of failing its model."""
    try:
        yield
    except redis.exceptions.ResponseError as exc:
        if is_full(exc) and not isinstance(exc, redis.exceptions.OutOfMemoryError):
            raise redis.exceptions.OutOfMemoryError(str(exc)) from exc
        raise


def until_accepted(send: Callable[[], T], what: str) -> T:
    """send() until Redis is not full any more; any other error goes up."""
    waiting_since = logged = 0.0
    while True:
        try:
            result = send()
        except redis.exceptions.RedisError as exc:
            if not is_full(exc):
                raise
            now = time.monotonic()
            if not waiting_since:
                waiting_since = now
            if now - logged >= LOG_EVERY:
                log.warning("Redis is full (used memory above maxmemory) and refuses writes; %s waits "
                            "until it takes them (%.0f s so far)", what, now - waiting_since)
                logged = now
            time.sleep(RETRY_EVERY)
            continue
        if waiting_since:
            log.warning("Redis takes writes again; %s went on after %.1f s", what,
                        time.monotonic() - waiting_since)
        return result


def full_reason(client: redis.Redis) -> str | None:
    """Why Redis refuses writes now (its used memory above `maxmemory` under `noeviction`),
    or None; for commands to say so instead of failing on the first write."""
    memory = client.info("memory")
    limit, used = int(memory.get("maxmemory", 0)), int(memory.get("used_memory", 0))
    if not limit or used <= limit or memory.get("maxmemory_policy") != "noeviction":
        return None
    return (f"Redis is full: it uses {used:,} bytes, above its maxmemory of {limit:,} "
            "(maxmemory-policy noeviction), and refuses writes; workers wait until memory is "
            "freed or maxmemory is raised")
