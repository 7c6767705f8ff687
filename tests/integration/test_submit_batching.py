"""send_chains publishes a batch's chains through one producer, pipelined, with ids known up
front; real workers run exactly those ids to the end."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bench.teardown import close_app
from producer.local import RedisServer
from producer.messages import send_chains
from producer.submit import plan_chains, submit
from tests.conftest import load, run_batch
from workers import keys
from workers.app import PRIORITIES, create_app, queue_lists
from workers.runtime import Runtime
from workers.settings import STAGES, Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _models(n: int) -> list[dict[str, Any]]:
    return [{"name": f"m{i}", "task": "classification",
             "dataset": {"kind": "synthetic", "n_samples": 40, "seed": i},
             "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier"}} for i in range(n)]


@pytest.fixture
def idle_db(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[Settings, redis.Redis]]:
    """The shared server but database 7, where no worker consumes: the messages stay queued."""
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    try:
        yield Settings(broker_url=url, artifact_root=tmp_path / "a"), client  # type: ignore[arg-type]
    finally:
        client.flushdb()
        client.close()


def _queued(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """Every message waiting in `queue`, whatever its priority (one Redis list per step)."""
    return [json.loads(m) for name in queue_lists(queue) for m in client.lrange(name, 0, -1)]


def _chain_ids(message: dict[str, Any]) -> list[str]:
    """The task ids of a queued chain, in stage order, read from its first message."""
    _, _, embed = json.loads(base64.b64decode(message["body"]))
    return [message["headers"]["id"], *(s["options"]["task_id"] for s in embed["chain"][::-1])]


def test_send_chains_publishes_every_chain_once_with_its_ids_and_sent_event(
        tmp_path: Path, idle_db: tuple[Settings, redis.Redis]) -> None:
    settings, client = idle_db
    batch = load(tmp_path, {"name": "batching", "models": _models(1200)}, settings)
    app = create_app(settings)
    events = client.pubsub()
    events.psubscribe("/7.celeryev/*")  # kombu's fanout channels for the event exchange, db 7
    try:
        planned = list(plan_chains("b1", batch.models))
        # More chains than one pipeline holds (1,000 commands): several flushes.
        ids = send_chains(app, [(p.label, p.message) for p in planned])

        queued = _queued(client, "preprocess")
        # Every chain exactly once, under the ids send_chains returned, with its label.
        assert sorted(m["headers"]["id"] for m in queued) == sorted(i[0] for i in ids)
        by_id = {m["headers"]["id"]: m for m in queued}
        for plan, chain_ids in zip(planned, ids, strict=True):
            message = by_id[chain_ids[0]]
            assert plan.label == f"model={plan.models[0]} batch=b1"
            assert message["headers"]["argsrepr"] == f"preprocess {plan.label}"
            assert _chain_ids(message) == chain_ids
        assert all(client.llen(q) == 0 for stage in STAGES[1:] for q in queue_lists(stage))

        # Flower's task-sent event for each of them, batched as workers batch theirs.
        sent: Counter[str] = Counter()
        deadline = time.monotonic() + 30
        while sum(sent.values()) < len(ids) and time.monotonic() < deadline:
            message = events.get_message(timeout=1)
            if message and message["type"] == "pmessage":
                envelope = json.loads(message["data"])
                sent.update(e["uuid"] for e in json.loads(base64.b64decode(envelope["body"]))
                            if e["type"] == "task-sent")
        assert sent == Counter(i[0] for i in ids)
    finally:
        events.close()
        close_app(app)


def test_submit_records_each_models_ids_before_it_sends_them(
        tmp_path: Path, idle_db: tuple[Settings, redis.Redis]) -> None:
    settings, client = idle_db
    # pack: 1, so 2,500 chains: two send chunks
    batch = load(tmp_path, {"name": "batching", "pack": 1, "models": _models(2500)}, settings)
    app = create_app(settings)
    try:
        handle = submit(batch, app, Runtime.from_settings(settings), batch_id="b2")
        recorded = {n: json.loads(v) for n, v in client.hgetall(keys.batch_tasks(handle.batch_id)).items()}
        messages = _queued(client, "preprocess")
        queued = {m["headers"]["argsrepr"]: _chain_ids(m) for m in messages}
        # A spec without a priority is "normal": in that step's list, below "high"'s.
        assert {m["properties"]["priority"] for m in messages} == {PRIORITIES["normal"]}
        assert client.llen(queue_lists("preprocess")[1]) == 2500
        assert len(queued) == 2500
        assert queued == {f"preprocess model={n} batch=b2": ids for n, ids in recorded.items()}
        assert handle.status().counts == {"queued": 2500}
        specs = Runtime.from_settings(settings).tracker.model_specs("b2")
        assert {n: s["dataset"]["seed"] for n, s in specs.items()} == {f"m{i}": i for i in range(2500)}
    finally:
        close_app(app)


@pytest.mark.parametrize("pack", [1, 4])
def test_sent_chains_run_end_to_end_under_their_recorded_ids(tmp_path: Path, settings: Settings,
                                                             workers: Any, app: Any, runtime: Runtime,
                                                             uniq: str, pack: int) -> None:
    models = [{**m, "name": f"{m['name']}-{uniq}"} for m in _models(8)]
    batch = load(tmp_path, {"name": f"sent-{uniq}", "pack": pack, "models": models}, settings)
    handle, status = run_batch(batch, app, runtime)

    assert status.counts == {"promoted": 8}
    record = runtime.tracker.get_batch(handle.batch_id)
    assert record is not None and record["pack"] == pack
    recorded = {n: json.loads(v)
                for n, v in runtime.redis.hgetall(keys.batch_tasks(handle.batch_id)).items()}
    assert sorted(recorded) == sorted(m["name"] for m in models)
    runs = runtime.tracker.runs(batch_id=handle.batch_id)
    executed: dict[str, dict[str, str]] = {}
    for run in runs:
        assert run["status"] == "succeeded"
        executed.setdefault(run["model"], {})[run["stage"]] = run["task_id"]
    # The ids fixed and recorded at submit are the ids the workers ran, stage by stage ...
    assert {n: [executed[n][s] for s in STAGES] for n in executed} == recorded
    # ... and Celery's result backend has each of them succeeded.
    for task_id in (t for ids in recorded.values() for t in ids):
        assert app.backend.get_task_meta(task_id)["status"] == "SUCCESS"
    # pack 4: the models of one pack ran in the same four tasks.
    assert len({tuple(ids) for ids in recorded.values()}) == 8 // pack
