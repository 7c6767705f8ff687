"""Run and batch records in Redis, with a JSON copy beside the artifacts.

Every write is a single Redis command or pipeline (no read-modify-write, no
locks), so thousands of workers can record at once. The file copies let
`modelfleet reindex` rebuild the index from the artifact root alone.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis

from workers import keys
from workers.store import ArtifactStore

TERMINAL = frozenset({"deployed", "failed", "cancelled"})


class Tracker:
    def __init__(self, client: redis.Redis, store: ArtifactStore) -> None:
        self.r = client
        self.store = store

    # --- batches -------------------------------------------------------------
    def create_batch(self, record: dict[str, Any], models: list[str]) -> None:
        """The batch record and every model's initial state, written in one transaction."""
        batch_id = record["id"]
        pipe = self.r.pipeline(transaction=True)
        pipe.set(keys.batch(batch_id), json.dumps(record))
        pipe.zadd(keys.BATCHES, {batch_id: record["created"]})
        for name in models:
            pipe.hset(keys.batch_model(batch_id, name),
                      mapping={"status": "queued", "stage": "", "updated": time.time()})
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

    def set_model_state(self, batch_id: str, model: str, **fields: Any) -> None:
        mapping = {k: json.dumps(v) if isinstance(v, dict | list) else ("" if v is None else v)
                   for k, v in fields.items()}
        mapping["updated"] = time.time()
        self.r.hset(keys.batch_model(batch_id, model), mapping=mapping)

    def model_states(self, batch_id: str, models: list[str]) -> dict[str, dict[str, str]]:
        pipe = self.r.pipeline(transaction=False)
        for name in models:
            pipe.hgetall(keys.batch_model(batch_id, name))
        return {name: dict(raw)
                for name, raw in zip(models, pipe.execute(), strict=True)}

    # --- runs ----------------------------------------------------------------
    def record_run(self, run: dict[str, Any]) -> str:
        run = {"id": uuid.uuid4().hex, **run}
        pipe = self.r.pipeline(transaction=False)
        pipe.set(keys.run(run["id"]), json.dumps(run))
        pipe.zadd(keys.RUNS, {run["id"]: run["started"]})
        pipe.zadd(keys.batch_runs(run["batch_id"]), {run["id"]: run["started"]})
        pipe.zadd(keys.model_runs(run["model"]), {run["id"]: run["started"]})
        pipe.execute()
        self.store.write_record(f"runs/{run['batch_id']}/{run['id']}.json", run)
        return str(run["id"])

    def runs(self, batch_id: str | None = None, model: str | None = None,
             status: str | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
        index = (keys.batch_runs(batch_id) if batch_id else
                 keys.model_runs(model) if model else keys.RUNS)
        ids = self.r.zrange(index, 0, limit - 1)
        if not ids:
            return []
        raws = self.r.mget([keys.run(i) for i in ids])
        out = [json.loads(r) for r in raws if r]
        return [r for r in out
                if (model is None or r["model"] == model)
                and (status is None or r["status"] == status)]
