"""Run and batch records in Redis, with a JSON copy beside the artifacts.

Every Redis write is a single command or pipeline (no read-modify-write, no
Redis locks), so thousands of workers can record at once. Run records are
written once; the copy of a record that changes (a model's state) is written
under a per-record file lock (ArtifactStore.write_snapshot). The file copies
let `modelfleet reindex` rebuild the index from the artifact root alone:

    batches/<batch>.json         the batch record (spec text, submitter, commit)
    specs/<batch>.json           each model's ModelSpec as submitted (for `retry`)
    states/<batch>/<model>.json  a model's latest state in that batch
    runs/<batch>/<run>.json      one stage execution
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from functools import partial
from typing import Any

import redis

from workers import keys
from workers.store import ArtifactStore, atomic_write

TERMINAL = frozenset({"deployed", "failed", "cancelled"})
RETRYABLE = frozenset({"failed", "cancelled"})
_CHUNK = 500
_WRITE_CHUNK = 2000


def initial_state(created: float) -> dict[str, str]:
    """A model's state before any worker touched it (reindex rebuilds the same)."""
    return {"status": "queued", "stage": "", "updated": str(created)}


def _json_object(members: Iterable[tuple[bytes, bytes]]) -> Iterator[bytes]:
    """A JSON object's bytes from its members' encoded keys and values, piece by piece."""
    yield b"{"
    for i, (key, value) in enumerate(members):
        yield b"%s%s: %s" % (b",\n" if i else b"", key, value)
    yield b"}"


def has_tags(record: dict[str, Any], tags: dict[str, str] | None) -> bool:
    """Whether a record's tags include every key=value in `tags`."""
    have = record.get("tags") or {}
    return all(have.get(k) == v for k, v in (tags or {}).items())


class Tracker:
    def __init__(self, client: redis.Redis, store: ArtifactStore) -> None:
        self.r = client
        self.store = store

    # --- batches -------------------------------------------------------------
    def create_batch(self, record: dict[str, Any], models: list[str],
                     specs: Mapping[str, str] | None = None) -> None:
        """Each model's initial state and spec (its JSON text), then the batch record.

        Models go in pipelined chunks (one MULTI for 100,000 models held every
        command in memory at once). The record and its index entry, written
        last in one transaction, make the batch visible: no reader sees a batch
        whose models are not all there.
        """
        batch_id = record["id"]
        state = initial_state(record["created"])
        items = list(specs.items()) if specs else []
        for start in range(0, max(len(models), len(items)), _WRITE_CHUNK):
            pipe = self.r.pipeline(transaction=False)
            for name in models[start:start + _WRITE_CHUNK]:
                pipe.hset(keys.batch_model(batch_id, name), mapping=state)
            if part := items[start:start + _WRITE_CHUNK]:
                pipe.hset(keys.batch_specs(batch_id), mapping=dict(part))
            pipe.execute()
        if specs:
            # Written from the texts, not re-encoded: indenting 100,000 specs took seconds.
            atomic_write(self.store.root / "specs" / f"{batch_id}.json",
                         _json_object((json.dumps(n).encode(), s.encode()) for n, s in items))
        pipe = self.r.pipeline(transaction=True)
        pipe.set(keys.batch(batch_id), json.dumps(record))
        pipe.zadd(keys.BATCHES, {batch_id: record["created"]})
        pipe.execute()
        self.store.write_record(f"batches/{batch_id}.json", record)

    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        raw = self.r.get(keys.batch(batch_id))
        return json.loads(raw) if raw else None

    def update_batch(self, batch_id: str, **fields: Any) -> None:
        record = self.get_batch(batch_id)
        if record is None:
            raise KeyError(batch_id)
        record.update(fields)
        self.r.set(keys.batch(batch_id), json.dumps(record))
        self.store.write_record(f"batches/{batch_id}.json", record)

    def list_batches(self, limit: int = 50) -> list[str]:
        return [b for b in self.r.zrevrange(keys.BATCHES, 0, limit - 1)]

    def model_specs(self, batch_id: str) -> dict[str, dict[str, Any]]:
        """Each model's ModelSpec JSON as submitted ({} for batches recorded before specs were kept)."""
        return {k: json.loads(v) for k, v in self.r.hgetall(keys.batch_specs(batch_id)).items()}

    def set_model_state(self, batch_id: str, model: str, **fields: Any) -> None:
        mapping = {k: json.dumps(v) if isinstance(v, dict | list) else ("" if v is None else v)
                   for k, v in fields.items()}
        mapping["updated"] = time.time()
        key = keys.batch_model(batch_id, model)
        self.r.hset(key, mapping=mapping)
        self.store.write_snapshot(f"states/{batch_id}/{model}.json", lambda: self.r.hgetall(key))

    def reset_models(self, batch_id: str, models: Iterable[str]) -> None:
        """Back to the initial state (for `retry`): old errors and stage marks go."""
        now = time.time()
        for name in models:
            key = keys.batch_model(batch_id, name)
            pipe = self.r.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping=initial_state(now))
            pipe.execute()
            self.store.write_snapshot(f"states/{batch_id}/{name}.json", partial(self.r.hgetall, key))

    def model_states(self, batch_id: str, models: list[str]) -> dict[str, dict[str, str]]:
        pipe = self.r.pipeline(transaction=False)
        for name in models:
            pipe.hgetall(keys.batch_model(batch_id, name))
        return {name: dict(raw)
                for name, raw in zip(models, pipe.execute(), strict=True)}

    # --- runs ----------------------------------------------------------------
    def record_run(self, run: dict[str, Any]) -> str:
        run = {"id": uuid.uuid4().hex, **run}
        self._index_runs(self.r.pipeline(transaction=False), [run]).execute()
        self.store.write_record(f"runs/{run['batch_id']}/{run['id']}.json", run)
        return str(run["id"])

    @staticmethod
    def _index_runs(pipe: Any, runs: Iterable[dict[str, Any]]) -> Any:
        for run in runs:
            pipe.set(keys.run(run["id"]), json.dumps(run))
            pipe.zadd(keys.RUNS, {run["id"]: run["started"]})
            pipe.zadd(keys.batch_runs(run["batch_id"]), {run["id"]: run["started"]})
            pipe.zadd(keys.model_runs(run["model"]), {run["id"]: run["started"]})
        return pipe

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        raw = self.r.get(keys.run(run_id))
        return json.loads(raw) if raw else None

    def runs(self, batch_id: str | None = None, model: str | None = None,
             status: str | None = None, limit: int = 10_000,
             tags: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Runs oldest first, filtered; `limit` keeps the newest that many of the index."""
        index = (keys.batch_runs(batch_id) if batch_id else
                 keys.model_runs(model) if model else keys.RUNS)
        ids = self.r.zrange(index, -limit, -1)
        out: list[dict[str, Any]] = []
        for start in range(0, len(ids), _CHUNK):
            raws = self.r.mget([keys.run(i) for i in ids[start:start + _CHUNK]])
            out += [json.loads(r) for r in raws if r]
        return [r for r in out
                if (model is None or r["model"] == model)
                and (status is None or r["status"] == status)
                and has_tags(r, tags)]

    # --- rebuild from the artifact root -------------------------------------
    def reindex(self) -> dict[str, int]:
        """Rebuild batches, specs, model states and runs from the JSON copies."""
        counts = {"batches": 0, "runs": 0}
        for record in self.store.iter_records("batches"):
            batch_id = record["id"]
            pipe = self.r.pipeline(transaction=False)
            pipe.set(keys.batch(batch_id), json.dumps(record))
            pipe.zadd(keys.BATCHES, {batch_id: record["created"]})
            states_dir = self.store.root / "states" / batch_id
            for name in record["models"]:
                copy = states_dir / f"{name}.json"
                state = json.loads(copy.read_text()) if copy.exists() else initial_state(record["created"])
                pipe.delete(keys.batch_model(batch_id, name))
                pipe.hset(keys.batch_model(batch_id, name), mapping=state)
            specs = self.store.root / "specs" / f"{batch_id}.json"
            if specs.exists():
                pipe.hset(keys.batch_specs(batch_id), mapping={
                    n: json.dumps(s, sort_keys=True) for n, s in json.loads(specs.read_text()).items()})
            pipe.execute()
            counts["batches"] += 1
        runs = self.store.iter_records("runs")
        for start in range(0, len(runs), _CHUNK):
            self._index_runs(self.r.pipeline(transaction=False), runs[start:start + _CHUNK]).execute()
        counts["runs"] = len(runs)
        return counts
