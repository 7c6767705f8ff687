"""Step cache: keys from a stage's inputs, lookup, and a single-flight lease.

A key hashes the stage name, its code (a hash of the source the stage runs, see
fingerprint.py), the library versions that change results, its parameters and
the digests of its input artifacts. While one
worker computes a key it holds a Redis lease renewed by a heartbeat thread;
others needing the same key wait on the lease and then reuse the result. A dead
holder stops renewing, so its lease expires within `lease_ttl` seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.exceptions import LockError

from workers import keys
from workers.journal import Journal, encoded, open_journal
from workers.store import ArtifactStore
from workers.writes import Writes

# Deploy registers by the evaluation report instead (idempotent in the registry).
CACHED_STAGES = frozenset({"preprocess", "train", "evaluate"})
# From the installed distributions' metadata: importing scikit-learn to read its version
# cost every producer command (even `status`) about 1.5 s.
LIBRARY_VERSIONS = {name: importlib.metadata.version(name) for name in ("scikit-learn", "numpy")}


class LeaseTimeout(RuntimeError):
    """Waited too long for another worker computing the same step (transient)."""


def cache_key(stage: str, params: Any, inputs: list[str], code: str = "") -> str:
    """The step's key; `code` is the stage's fingerprint (workers.stages.stage_code_version)."""
    payload = {"stage": stage, "code": code, "libs": LIBRARY_VERSIONS,
               "params": params, "inputs": inputs}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# KEYS: cache hash, lease. ARGV: cache key, use cache ('1'/'0'), lease token, lease ttl in ms,
# the batch whose own entries a '0' may still reuse ('' for none).
# One round trip: the stored entry if there is one, else the lease if nobody holds it.
_LOOKUP_OR_LEASE = """
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if entry and (ARGV[2] == '1' or (ARGV[5] ~= '' and cjson.decode(entry)['batch'] == ARGV[5])) then
  return {'hit', entry}
end
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then return {'lease', ''} end
return {'busy', ''}
"""


class StepCache:
    def __init__(self, client: redis.Redis, store: ArtifactStore, lease_ttl: float,
                 wait_timeout: float, journal: Journal | None = None) -> None:
        self.r = client
        self.store = store
        self.lease_ttl = lease_ttl
        self.wait_timeout = wait_timeout
        self.journal = journal or open_journal(store.root)
        self._lookup = client.register_script(_LOOKUP_OR_LEASE)

    def get(self, key: str, batch: str | None = None) -> dict[str, Any] | None:
        """The stored value of `key`; with `batch`, only one that batch stored."""
        raw = self.r.hget(keys.CACHE, key)
        return self._usable(raw, batch)

    def _usable(self, raw: str | None, batch: str | None = None) -> dict[str, Any] | None:
        if raw is None:
            return None
        entry = json.loads(raw)
        if batch is not None and entry.get("batch") != batch:
            return None
        # An index entry whose artifacts were pruned is a miss, not an error.
        if not all(self.store.exists(d) for d in entry["artifacts"]):
            return None
        return dict(entry["value"])

    def put(self, writes: Writes, key: str, stage: str, value: dict[str, Any], artifacts: list[str],
            batch: str = "") -> None:
        """Queue a cache entry (index and journal), naming the batch that computed it."""
        body = json.dumps({"key": key, "stage": stage, "value": value, "artifacts": artifacts,
                           "created": time.time(), **({"batch": batch} if batch else {})})
        writes.pipe.hset(keys.CACHE, key, body)
        writes.record(encoded("cache", "entry", body))

    def compute_once(self, key: str, stage: str,
                     compute: Callable[[], tuple[dict[str, Any], list[str]]],
                     use_cache: bool = True, writes: Writes | None = None,
                     batch: str = "") -> tuple[dict[str, Any], bool]:
        """(value, was_hit): reuse a stored result, or compute it exactly once across workers.

        `use_cache=False` (a batch sent with --no-cache): nothing stored before is reused,
        except what `batch` itself stored: a step that several of its models share (one
        store's split for ten estimators) is still computed once, as in a first batch.
        The entry, the hit/miss count and the lease's release are queued on `writes`
        (sent with the stage's other records); without one they are sent here.
        """
        own = writes is None
        writes = writes if writes is not None else Writes(self.r, self.journal)
        writes.before_lease(keys.lease(key))
        value, lease = self._hit_or_lease(key, stage, use_cache, batch)
        if value is not None:
            writes.count(keys.CACHE_STATS, "hits", 1)
        else:
            assert lease is not None
            try:
                with _heartbeat(lease, self.lease_ttl / 3):
                    value, artifacts = compute()
            except BaseException:
                _release(lease)
                raise
            self.put(writes, key, stage, value, artifacts, batch)
            writes.count(keys.CACHE_STATS, "misses", 1)
            # If the lease expired under us the result is stored anyway.
            writes.script(lease.lua_release, [lease.name], [lease.local.token])
            writes.releases.add(lease.name)
        if own:
            writes.execute()
        return value, lease is None

    def _hit_or_lease(self, key: str, stage: str, use_cache: bool,
                      batch: str = "") -> tuple[dict[str, Any] | None, Any]:
        """(stored value, None) or (None, a lease we hold); waits while another worker computes."""
        lease = self.r.lock(keys.lease(key), timeout=self.lease_ttl, sleep=0.05,
                            blocking_timeout=self.wait_timeout, thread_local=False)
        token = uuid.uuid4().hex
        only = None if use_cache else batch  # whose entries count: anyone's, this batch's or none
        kind, raw = self._lookup(keys=[keys.CACHE, lease.name],
                                 args=[key, "1" if use_cache else "0", token, int(self.lease_ttl * 1000),
                                       only or ""])
        if kind == "hit" and (value := self._usable(raw, only)) is not None:
            return value, None
        if kind == "lease":
            lease.local.token = token
        elif not lease.acquire(token=token):  # pruned artifacts, or another worker holds the lease
            raise LeaseTimeout(f"waited {self.wait_timeout}s for another worker on {stage}")
        # Whoever held the lease before us may have just stored the result.
        if kind == "busy" and (use_cache or only) and (value := self.get(key, only)) is not None:
            _release(lease)
            return value, None
        return None, lease

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

    def journaled_entries(self) -> list[dict[str, Any]]:
        """The entries on the artifact root: the newest per key, minus those pruned after it."""
        newest = {e["key"]: e for e in self.store.iter_records("cache")}
        pruned: dict[str, float] = {}
        for rec in self.journal.replay():
            if rec["kind"] == "cache":
                entry = rec["entry"]
                if entry["key"] not in newest or entry["created"] >= newest[entry["key"]]["created"]:
                    newest[entry["key"]] = entry
            elif rec["kind"] == "cache_pruned":
                pruned[rec["key"]] = max(pruned.get(rec["key"], 0.0), rec["created"])
        return [e for k, e in newest.items() if e["created"] > pruned.get(k, -1.0)]

    def reindex(self, runs: list[dict[str, Any]]) -> int:
        """Rebuild the index from the JSON copies, and the hit/miss counters from the runs.

        Every counted hit or miss left a run record with that `cache_hit`, so
        counting the succeeded runs of cached stages gives the same numbers.
        """
        entries = self.journaled_entries()
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
        live: set[str] = set(keep)
        writes = Writes(self.r, self.journal)
        for entry in self.entries():
            if entry["created"] < cutoff:
                writes.pipe.hdel(keys.CACHE, entry["key"])
                # Replay drops this entry (and any older one of the key), not a later recompute.
                writes.record({"kind": "cache_pruned", "key": entry["key"], "created": entry["created"]})
                self.store.delete_record(f"cache/{entry['key'][:2]}/{entry['key']}.json")
            else:
                live.update(entry["artifacts"])
        removed = len(writes.records)
        writes.execute()
        objects = 0
        for digest, stored in self.store.objects():
            if digest not in live and stored.mtime < cutoff:
                self.store.delete_object(digest)
                objects += 1
        return removed, objects


def _release(lease: Any) -> None:
    with contextlib.suppress(LockError, redis.exceptions.RedisError):
        lease.release()


class _LeaseKeeper:
    """One heartbeat thread per process renews every lease the process holds.

    Starting a thread per stage cost about a millisecond; one long-lived thread
    costs nothing while no lease is held. A broker outage does not stop it: it
    retries every second and renews as soon as Redis answers. If the outage
    outlasted a lease and nobody took it meanwhile, it takes the lease back; if
    another worker did, it lets that lease go (the result is stored either way,
    see docs/guarantees.md).
    """

    def __init__(self) -> None:
        self._leases: dict[int, tuple[Any, float]] = {}  # id -> (lease, renew every)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid = 0

    @contextmanager
    def holding(self, lease: Any, every: float) -> Iterator[None]:
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child: its own thread
                self._pid = os.getpid()
                self._leases = {}
                threading.Thread(target=self._run, name="lease-heartbeat", daemon=True).start()
            self._leases[id(lease)] = (lease, every)
        self._wake.set()
        try:
            yield
        finally:
            with self._lock:
                self._leases.pop(id(lease), None)

    def _run(self) -> None:
        due: dict[int, float] = {}
        while True:
            with self._lock:
                held = dict(self._leases)
            now = time.monotonic()
            for key, (lease, every) in held.items():
                due.setdefault(key, now + every)
                if now < due[key]:
                    continue
                outcome = self._renew(lease)
                if outcome == "lost":
                    with self._lock:
                        self._leases.pop(key, None)
                due[key] = now + (min(every, 1.0) if outcome == "retry" else every)
            due = {k: t for k, t in due.items() if k in held}
            self._wake.wait(max(0.05, min(due.values(), default=now + 60) - time.monotonic()))
            self._wake.clear()

    @staticmethod
    def _renew(lease: Any) -> str:
        """'ok' (renewed or taken back), 'retry' (Redis did not answer) or 'lost' (another holds it)."""
        try:
            lease.reacquire()
            return "ok"
        except LockError:
            try:
                taken = lease.redis.set(lease.name, lease.local.token, nx=True,
                                        px=int(lease.timeout * 1000))
            except redis.exceptions.RedisError:
                return "retry"
            return "ok" if taken else "lost"
        except redis.exceptions.RedisError:
            return "retry"


_keeper = _LeaseKeeper()


def _heartbeat(lease: Any, every: float) -> Any:
    """Renew the lease while the body runs, so only a dead holder loses it."""
    return _keeper.holding(lease, every)


def keep_alive(client: redis.Redis, key: str, token: str, ttl: float) -> Any:
    """Renew `key` (set to `token`, expiring after `ttl` s) while the body runs.

    Every copy of a task uses the task id as token, so any live copy keeps it.
    """
    marker = client.lock(key, timeout=ttl, thread_local=False)
    marker.local.token = token
    return _keeper.holding(marker, ttl / 3)
