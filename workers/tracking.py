"""Run and batch records in Redis, with a durable copy on the artifact root.

Every Redis write is a single command or pipeline (no read-modify-write, no
Redis locks), so thousands of workers can record at once. A stage queues its
run record and state change on the step's `Writes` (one round trip, one
journal append). `modelfleet reindex` rebuilds the index from the artifact root:

    batches/<batch>.json   the batch record (spec text, submitter, commit), once per batch
    specs/<batch>.json     each model's ModelSpec as submitted (for `retry`), once per batch
    journal/*.jsonl        run records, and each model state as read back after every change;
                           a state carries `rev` (incremented by every change), so replay keeps
                           the newest whatever the order of the files
    states/, runs/         the per-record copies of older versions, still read by reindex
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import redis

from workers import keys
from workers.journal import Journal, encoded, open_journal
from workers.store import ArtifactStore
from workers.writes import Writes

# A model's outcome: registered and promoted (its gate passed), registered only (it did not),
# failed or cancelled. "deployed" is the word for "registered" in records before the split.
DEPLOYED = frozenset({"promoted", "registered", "deployed"})
TERMINAL = DEPLOYED | {"failed", "cancelled"}
RETRYABLE = frozenset({"failed", "cancelled"})
_CHUNK = 500
_WRITE_CHUNK = 2000


def initial_state(created: float) -> dict[str, str]:
    """A model's state before any worker touched it (reindex rebuilds the same)."""
    return {"status": "queued", "stage": "", "updated": str(created), "rev": "0"}


def state_mapping(fields: dict[str, Any]) -> dict[str, Any]:
    """Field values as a Redis hash stores them (JSON for dicts and lists, '' for None)."""
    mapping = {k: json.dumps(v) if isinstance(v, dict | list) else ("" if v is None else v)
               for k, v in fields.items()}
    mapping["updated"] = time.time()
    return mapping


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
    def __init__(self, client: redis.Redis, store: ArtifactStore, journal: Journal | None = None) -> None:
        self.r = client
        self.store = store
        self.journal = journal or open_journal(store.root)

    def writes(self) -> Writes:
        return Writes(self.r, self.journal)

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
            self.store.root.write(f"specs/{batch_id}.json",
                                  _json_object((json.dumps(n).encode(), s.encode()) for n, s in items))
        pipe = self.r.pipeline(transaction=True)
        pipe.set(keys.batch(batch_id), json.dumps(record))
        pipe.zadd(keys.BATCHES, {batch_id: record["created"]})
        pipe.execute()
        self.store.write_record(f"batches/{batch_id}.json", record)

    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        raw = self.r.get(keys.batch(batch_id))
        return json.loads(raw) if raw else None

    def get_batches(self, batch_ids: list[str]) -> list[dict[str, Any]]:
        """The records of these batches (one MGET), skipping any that are gone."""
        raws = self.r.mget([keys.batch(b) for b in batch_ids]) if batch_ids else []
        return [json.loads(raw) for raw in raws if raw]

    def update_batch(self, batch_id: str, **fields: Any) -> None:
        record = self.get_batch(batch_id)
        if record is None:
            raise KeyError(batch_id)
        record.update(fields)
        self.r.set(keys.batch(batch_id), json.dumps(record))
        self.store.write_record(f"batches/{batch_id}.json", record)

    def set_cancelled(self, batch_id: str, cancelled: bool = True) -> None:
        """The batch's cancelled flag, which every stage checks when it begins."""
        if cancelled:
            self.r.set(keys.cancelled(batch_id), time.time())
        else:
            self.r.delete(keys.cancelled(batch_id))

    def record_task_ids(self, batch_id: str, task_ids: Mapping[str, list[str]]) -> None:
        """Keep each model's chain task ids (model name -> ids), so `cancel` can revoke them."""
        if task_ids:
            self.r.hset(keys.batch_tasks(batch_id),
                        mapping={name: json.dumps(ids) for name, ids in task_ids.items()})

    def task_ids(self, batch_id: str) -> dict[str, list[str]]:
        return {name: json.loads(ids) for name, ids in self.r.hgetall(keys.batch_tasks(batch_id)).items()}

    def dead_letter(self, task: str, letter: str, keep: int = 1000) -> None:
        """Keep a refused message (newest first, the last `keep`) and count it per task name."""
        pipe = self.r.pipeline(transaction=False)
        pipe.lpush(keys.DEAD_LETTERS, letter)
        pipe.ltrim(keys.DEAD_LETTERS, 0, keep - 1)
        pipe.hincrby(keys.DEAD_LETTER_COUNTS, task, 1)
        pipe.execute()

    def list_batches(self, limit: int = 50) -> list[str]:
        return [b for b in self.r.zrevrange(keys.BATCHES, 0, limit - 1)]

    def model_specs(self, batch_id: str) -> dict[str, dict[str, Any]]:
        """Each model's ModelSpec JSON as submitted ({} for batches recorded before specs were kept)."""
        return {k: json.loads(v) for k, v in self.r.hgetall(keys.batch_specs(batch_id)).items()}

    def model_spec(self, batch_id: str, model: str) -> dict[str, Any] | None:
        """One model's ModelSpec JSON as submitted (None if not kept)."""
        raw = self.r.hget(keys.batch_specs(batch_id), model)
        return json.loads(raw) if raw else None

    def state(self, writes: Writes, batch_id: str, model: str, **fields: Any) -> None:
        """Queue a change of a model's state; the state as it is then goes to the journal."""
        key = keys.batch_model(batch_id, model)
        writes.pipe.hset(key, mapping=state_mapping(fields))
        writes.pipe.hincrby(key, "rev", 1)
        writes.pipe.hgetall(key)
        writes.record_reply(lambda state: {"kind": "state", "batch_id": batch_id, "model": model,
                                           "state": state})
        if fields.get("status") in TERMINAL:  # whoever waits on the batch looks again now
            writes.notices.append((keys.batch_finished(batch_id), model))

    def set_model_state(self, batch_id: str, model: str, **fields: Any) -> None:
        writes = self.writes()
        self.state(writes, batch_id, model, **fields)
        writes.execute()

    def reset_models(self, batch_id: str, models: Iterable[str]) -> None:
        """Back to the initial state (for `retry`): old errors and stage marks go."""
        now = time.time()
        for name in models:
            key = keys.batch_model(batch_id, name)
            # `rev` keeps counting through the reset, so the journal's newest state stays newest.
            rev = int(self.r.hget(key, "rev") or 0)
            writes = self.writes()
            writes.pipe.delete(key)
            writes.pipe.hset(key, mapping={**initial_state(now), "rev": rev + 1})
            # ... and out of the stalled-chain sweeper's view: the resent chain starts afresh.
            writes.pipe.zrem(keys.RUNNING, keys.model_ref(batch_id, name))
            writes.pipe.zrem(keys.HANDOFFS, keys.model_ref(batch_id, name))
            writes.pipe.hgetall(key)
            writes.record_reply(lambda state, name=name: {  # type: ignore[misc]
                "kind": "state", "batch_id": batch_id, "model": name, "state": state})
            writes.execute()

    def model_states(self, batch_id: str, models: list[str],
                     fields: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
        """Each model's state hash; with `fields`, only those (what a progress poll reads:
        a fifth of the bytes of the whole state, metrics and hand-off included)."""
        pipe = self.r.pipeline(transaction=False)
        for name in models:
            if fields is None:
                pipe.hgetall(keys.batch_model(batch_id, name))
            else:
                pipe.hmget(keys.batch_model(batch_id, name), list(fields))
        replies = pipe.execute()
        if fields is None:
            return {name: dict(raw) for name, raw in zip(models, replies, strict=True)}
        return {name: {f: v for f, v in zip(fields, raw, strict=True) if v is not None}
                for name, raw in zip(models, replies, strict=True)}

    def status_counts(self, models_of: Mapping[str, list[str]]) -> dict[str, dict[str, int]]:
        """Per batch, how many of its models are in each status: one pipeline for all of them."""
        pipe = self.r.pipeline(transaction=False)
        for batch_id, models in models_of.items():
            for name in models:
                pipe.hget(keys.batch_model(batch_id, name), "status")
        statuses = iter(pipe.execute())
        counts = {}
        for batch_id, models in models_of.items():
            counted: dict[str, int] = {}
            for _ in models:
                status = next(statuses) or "unknown"
                counted[status] = counted.get(status, 0) + 1
            counts[batch_id] = counted
        return counts

    # --- runs ----------------------------------------------------------------
    def run(self, writes: Writes, run: dict[str, Any]) -> str:
        """Queue a run record (index and journal); returns its id."""
        run = {"id": uuid.uuid4().hex, **run}
        body = json.dumps(run)
        self._index_runs(writes.pipe, [run], [body])
        writes.record(encoded("run", "run", body))
        return str(run["id"])

    def record_run(self, run: dict[str, Any]) -> str:
        writes = self.writes()
        run_id = self.run(writes, run)
        writes.execute()
        return run_id

    @staticmethod
    def _index_runs(pipe: Any, runs: list[dict[str, Any]], bodies: list[str] | None = None) -> Any:
        for run, body in zip(runs, bodies or [json.dumps(r) for r in runs], strict=True):
            pipe.set(keys.run(run["id"]), body)
            pipe.zadd(keys.RUNS, {run["id"]: run["started"]})
            pipe.zadd(keys.batch_runs(run["batch_id"]), {run["id"]: run["started"]})
            pipe.zadd(keys.model_runs(run["model"]), {run["id"]: run["started"]})
        return pipe

    def record_cost(self, writes: Writes, cost_class: str, stage: str, seconds: float) -> None:
        """Queue a computed stage's time for its model's cost class (packing sizes from these)."""
        writes.count(keys.STAGE_COSTS, f"{cost_class}|{stage}|s", float(seconds))
        writes.count(keys.STAGE_COSTS, f"{cost_class}|{stage}|n", 1)

    def model_costs(self) -> dict[str, float]:
        """Cost class -> mean seconds of a model's computed stages, summed over its stages."""
        raw = self.r.hgetall(keys.STAGE_COSTS)
        costs: dict[str, float] = {}
        for field, total in raw.items():
            if field.endswith("|s") and (runs := int(raw.get(field[:-1] + "n", 0))):
                cost_class = field[:-2].rsplit("|", 1)[0]
                costs[cost_class] = costs.get(cost_class, 0.0) + float(total) / runs
        return costs

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        raw = self.r.get(keys.run(run_id))
        return json.loads(raw) if raw else None

    @staticmethod
    def _runs_index(batch_id: str | None, model: str | None) -> str:
        return keys.batch_runs(batch_id) if batch_id else keys.model_runs(model) if model else keys.RUNS

    def count_runs(self, batch_id: str | None = None, model: str | None = None) -> int:
        """How many runs the batch's, the model's or the whole index holds."""
        return int(self.r.zcard(self._runs_index(batch_id, model)))

    def runs(self, batch_id: str | None = None, model: str | None = None,
             status: str | None = None, limit: int = 10_000,
             tags: dict[str, str] | None = None, skip_newest: int = 0) -> list[dict[str, Any]]:
        """Runs oldest first, filtered; `limit` keeps the newest that many of the index
        after skipping its `skip_newest` newest (a page)."""
        ids = self.r.zrange(self._runs_index(batch_id, model), -(limit + skip_newest), -(skip_newest + 1))
        out: list[dict[str, Any]] = []
        for start in range(0, len(ids), _CHUNK):
            raws = self.r.mget([keys.run(i) for i in ids[start:start + _CHUNK]])
            out += [json.loads(r) for r in raws if r]
        return [r for r in out
                if (model is None or r["model"] == model)
                and (status is None or r["status"] == status)
                and has_tags(r, tags)]

    # --- rebuild from the artifact root -------------------------------------
    def journaled_states(self) -> dict[tuple[str, str], dict[str, str]]:
        """(batch, model) -> the newest state in the journal (highest `rev`)."""
        newest: dict[tuple[str, str], dict[str, str]] = {}
        for rec in self.journal.replay("state"):
            at = (rec["batch_id"], rec["model"])
            if at not in newest or int(rec["state"].get("rev", 0)) >= int(newest[at].get("rev", 0)):
                newest[at] = rec["state"]
        return newest

    def reindex(self) -> dict[str, int]:
        """Rebuild batches, specs, model states and runs from the artifact root."""
        counts = {"batches": 0, "runs": 0}
        journaled = self.journaled_states()
        copies = self.store.records("states")  # one listing, not a lookup per model
        for record in self.store.iter_records("batches"):
            batch_id = record["id"]
            pipe = self.r.pipeline(transaction=False)
            pipe.set(keys.batch(batch_id), json.dumps(record))
            pipe.zadd(keys.BATCHES, {batch_id: record["created"]})
            for name in record["models"]:
                state = journaled.get((batch_id, name)) or copies.get(
                    f"states/{batch_id}/{name}.json") or initial_state(record["created"])
                pipe.delete(keys.batch_model(batch_id, name))
                pipe.hset(keys.batch_model(batch_id, name), mapping=state)
            specs = self.store.read_record(f"specs/{batch_id}.json")
            if specs is not None:
                pipe.hset(keys.batch_specs(batch_id), mapping={
                    n: json.dumps(s, sort_keys=True) for n, s in specs.items()})
            pipe.execute()
            counts["batches"] += 1
        runs = {r["id"]: r for r in self.store.iter_records("runs")}
        runs.update((rec["run"]["id"], rec["run"]) for rec in self.journal.replay("run"))
        rows = list(runs.values())
        for start in range(0, len(rows), _CHUNK):
            self._index_runs(self.r.pipeline(transaction=False), rows[start:start + _CHUNK]).execute()
        counts["runs"] = len(rows)
        return counts
