"""Live worker slots: each worker registers its pool's size and queues, so the producer
sizes packs to the workers that are there (producer/packing.py).

A worker's record (`mf:worker:<hostname>`: its slots, its queues) expires `lease_ttl`
after its last renewal, like a lease: a thread renews it every `lease_ttl`/3, a clean
shutdown deletes it, and a dead worker's lapses. `mf:workers` indexes the records; a
reader drops the names whose record has lapsed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from typing import Any

import redis
from celery.signals import worker_ready, worker_shutdown

from workers import keys
from workers.connections import redis_client

log = logging.getLogger(__name__)

# KEYS: the index. ARGV: the records' key prefix. The live records; lapsed names leave the
# index (one script: a worker registering meanwhile is never dropped).
_LIVE = """
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local record = redis.call('GET', ARGV[1] .. name)
  if record then out[#out + 1] = record else redis.call('SREM', KEYS[1], name) end
end
return out
"""


def register(r: redis.Redis, worker: str, slots: int, queues: list[str], ttl: float) -> None:
    record = {"worker": worker, "slots": slots, "queues": sorted(queues), "pid": os.getpid(),
              "at": time.time()}
    pipe = r.pipeline(transaction=True)
    pipe.set(keys.worker_slots(worker), json.dumps(record), px=max(1, int(ttl * 1000)))
    pipe.sadd(keys.WORKERS, worker)
    pipe.execute()


def unregister(r: redis.Redis, worker: str) -> None:
    pipe = r.pipeline(transaction=True)
    pipe.delete(keys.worker_slots(worker))
    pipe.srem(keys.WORKERS, worker)
    pipe.execute()


def live_workers(r: redis.Redis) -> list[dict[str, Any]]:
    """The records of the workers registered now, by name."""
    records = [json.loads(raw) for raw in r.eval(_LIVE, 1, keys.WORKERS, keys.worker_slots(""))]
    return sorted(records, key=lambda rec: str(rec.get("worker")))


def slots_by_queue(workers: list[dict[str, Any]]) -> dict[str, int]:
    """Queue -> slots of the live workers consuming it (a worker counts in each of its queues)."""
    slots: Counter[str] = Counter()
    for rec in workers:
        for queue in rec.get("queues", []):
            slots[queue] += int(rec.get("slots", 0))
    return dict(slots)


def _pool_slots(consumer: Any) -> int:
    """The pool's processes now (an autoscaled pool grows and shrinks), else the configured size."""
    try:
        return int(consumer.pool.num_processes)
    except (AttributeError, TypeError, ValueError):
        return int(getattr(consumer.controller, "concurrency", 1) or 1)


class _Heartbeat(threading.Thread):
    """In every worker's main process: register now, renew every lease_ttl/3 until stopped."""

    def __init__(self, consumer: Any, r: redis.Redis, ttl: float) -> None:
        super().__init__(name="slots-heartbeat", daemon=True)
        self.consumer, self.r, self.ttl = consumer, r, ttl
        self.worker: str = consumer.hostname
        self.stop = threading.Event()

    def beat(self) -> None:
        queues = list(self.consumer.app.amqp.queues.consume_from)  # add_consumer updates it
        register(self.r, self.worker, _pool_slots(self.consumer), queues, self.ttl)

    def beat_logged(self) -> None:
        try:
            self.beat()
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("registering %s's slots failed (tried again in %.0fs): %s",
                        self.worker, self.ttl / 3, exc)
        except Exception:  # a bug must not stop the thread: the producer would fall back
            log.exception("registering %s's slots failed", self.worker)

    def run(self) -> None:
        while not self.stop.wait(self.ttl / 3):
            self.beat_logged()


_threads: list[_Heartbeat] = []


@worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    settings = getattr(getattr(sender, "app", None), "modelfleet_settings", None)
    if settings is None:
        return
    r = redis_client(settings, settings.backend(), socket_connect_timeout=settings.broker_connect_timeout,
                     retry_on_timeout=True, decode_responses=True)
    thread = _Heartbeat(sender, r, settings.lease_ttl)
    # The first registration before the worker answers a ping (worker_ready comes before
    # its event loop): a batch sent once the fleet is up is sized for all of it.
    thread.beat_logged()
    thread.start()
    _threads.append(thread)


@worker_shutdown.connect
def _stop(**_: Any) -> None:
    """A clean shutdown deletes the record at once, so no producer counts the worker again."""
    while _threads:
        thread = _threads.pop()
        thread.stop.set()
        thread.join(timeout=5)
        try:
            unregister(thread.r, thread.worker)
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("could not remove %s's slots (they lapse within %.0fs): %s",
                        thread.worker, thread.ttl, exc)
