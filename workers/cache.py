"""Step cache: keys from a stage's inputs, lookup, and a single-flight lease.

A key hashes the stage name, its code version, the library versions that change
results, its parameters and the digests of its input artifacts. While one
worker computes a key it holds a Redis lease renewed by a heartbeat thread;
others needing the same key wait on the lease and then reuse the result. A dead
holder stops renewing, so its lease expires within `lease_ttl` seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy
import redis
import sklearn
from redis.exceptions import LockError

from workers import keys
from workers.store import ArtifactStore

# Bump a stage's version whenever its code changes what it produces.
STAGE_VERSIONS = {"preprocess": 2, "train": 1, "evaluate": 1, "deploy": 1}
# Deploy registers by the evaluation report instead (idempotent in the registry).
CACHED_STAGES = frozenset({"preprocess", "train", "evaluate"})
LIBRARY_VERSIONS = {"scikit-learn": sklearn.__version__, "numpy": numpy.__version__}


class LeaseTimeout(RuntimeError):
    """Waited too long for another worker computing the same step (transient)."""


def cache_key(stage: str, params: Any, inputs: list[str]) -> str:
    payload = {"stage": stage, "version": STAGE_VERSIONS[stage], "libs": LIBRARY_VERSIONS,
               "params": params, "inputs": inputs}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class StepCache:
    def __init__(self, client: redis.Redis, store: ArtifactStore, lease_ttl: float,
                 wait_timeout: float) -> None:
        self.r = client
        self.store = store
        self.lease_ttl = lease_ttl
        self.wait_timeout = wait_timeout

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self.r.hget(keys.CACHE, key)
        if raw is None:
            return None
        entry = json.loads(raw)
        # An index entry whose artifacts were pruned is a miss, not an error.
        if not all(self.store.exists(d) for d in entry["artifacts"]):
            return None
        return dict(entry["value"])

    def put(self, key: str, stage: str, value: dict[str, Any], artifacts: list[str]) -> None:
        entry = {"key": key, "stage": stage, "value": value, "artifacts": artifacts,
                 "created": time.time()}
        self.r.hset(keys.CACHE, key, json.dumps(entry))
        self.store.write_record(f"cache/{key[:2]}/{key}.json", entry)

    def compute_once(self, key: str, stage: str,
                     compute: Callable[[], tuple[dict[str, Any], list[str]]],
                     use_cache: bool = True) -> tuple[dict[str, Any], bool]:
        """(value, was_hit): reuse a stored result, or compute it exactly once across workers."""
        if use_cache and (hit := self._hit(key)) is not None:
            return hit, True
        lock = self.r.lock(keys.lease(key), timeout=self.lease_ttl, sleep=0.05,
                           blocking_timeout=self.wait_timeout, thread_local=False)
        if not lock.acquire():
            raise LeaseTimeout(f"waited {self.wait_timeout}s for another worker on {stage}")
        try:
            # Whoever held the lease before us may have just stored the result.
            if use_cache and (hit := self._hit(key)) is not None:
                return hit, True
            with _heartbeat(lock, self.lease_ttl / 3):
                value, artifacts = compute()
            self.put(key, stage, value, artifacts)
            self.r.hincrby(keys.CACHE_STATS, "misses", 1)
            return value, False
        finally:
            # If the lease expired under us the result is stored anyway.
            with contextlib.suppress(LockError):
                lock.release()

    def _hit(self, key: str) -> dict[str, Any] | None:
        value = self.get(key)
        if value is not None:
            self.r.hincrby(keys.CACHE_STATS, "hits", 1)
        return value

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(v) for v in self.r.hvals(keys.CACHE)]

    def stats(self) -> dict[str, int]:
        raw = self.r.hgetall(keys.CACHE_STATS)
        return {k: int(v) for k, v in raw.items()}

    def summary(self) -> dict[str, Any]:
        """Entries, artifact objects and bytes on disk, hits, misses and the hit rate."""
        stats = self.stats()
        hits, misses = stats.get("hits", 0), stats.get("misses", 0)
        objects, size = self.store.usage()
        return {"entries": int(self.r.hlen(keys.CACHE)), "objects": objects, "bytes": size,
                "hits": hits, "misses": misses,
                "hit_rate": hits / (hits + misses) if hits + misses else None}

    def reindex(self, runs: list[dict[str, Any]]) -> int:
        """Rebuild the index from the JSON copies, and the hit/miss counters from the runs.

        Every counted hit or miss left a run record with that `cache_hit`, so
        counting the succeeded runs of cached stages gives the same numbers.
        """
        entries = self.store.iter_records("cache")
        pipe = self.r.pipeline(transaction=False)
        for entry in entries:
            pipe.hset(keys.CACHE, entry["key"], json.dumps(entry))
        cached = [r for r in runs if r["status"] == "succeeded" and r["stage"] in CACHED_STAGES]
        hits = sum(1 for r in cached if r["cache_hit"])
        pipe.delete(keys.CACHE_STATS)
        if cached:
            pipe.hset(keys.CACHE_STATS, mapping={"hits": hits, "misses": len(cached) - hits})
        pipe.execute()
        return len(entries)

    def prune(self, older_than: float, keep: set[str]) -> tuple[int, int]:
        """Drop entries older than `older_than` seconds and objects nobody references.

        `keep` holds digests that must survive (registered model versions).
        Returns (entries removed, objects removed).
        """
        cutoff = time.time() - older_than
        removed = 0
        live: set[str] = set(keep)
        for entry in self.entries():
            if entry["created"] < cutoff:
                self.r.hdel(keys.CACHE, entry["key"])
                (self.store.root / "cache" / entry["key"][:2] / f"{entry['key']}.json").unlink(
                    missing_ok=True)
                removed += 1
            else:
                live.update(entry["artifacts"])
        objects = 0
        if self.store.objects.exists():
            for path in self.store.objects.rglob("*"):
                digest = path.parent.name + path.name
                if path.is_file() and digest not in live and path.stat().st_mtime < cutoff:
                    path.unlink()
                    objects += 1
        return removed, objects


@contextmanager
def _heartbeat(lock: Any, every: float) -> Iterator[None]:
    """Renew the lease while the body runs, so only a dead holder loses it."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                lock.reacquire()
            except LockError:
                return

    thread = threading.Thread(target=beat, name="lease-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
