"""A real Flower watching real workers: its API sees every task, worker and queue."""

from __future__ import annotations

import base64
import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from producer.local import LocalFlower, LocalWorkers, RedisServer, wait_for
from tests.conftest import EXAMPLE_DATA, load, run_batch
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import STAGES, Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Platform:
    redis: RedisServer
    settings: Settings
    workers: LocalWorkers
    flower: LocalFlower
    app: Any
    runtime: Runtime

    def raw(self, path: str, auth: tuple[str, str] | None = None) -> str:
        """GET a Flower page; with Flower's own credentials unless others are given."""
        user, password = auth or (self.flower.user, self.flower.password)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(f"{self.flower.url}{path}",
                                         headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            return str(resp.read().decode())

    def api(self, path: str) -> Any:
        return json.loads(self.raw(path))


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """Password-protected Redis, K=2 workers and Flower (basic auth), all stopped after."""
    root = tmp_path_factory.mktemp("flower")
    with RedisServer(root / "redis", password=secrets.token_hex(16)) as redis:
        settings = Settings(broker_url=redis.url,  # type: ignore[arg-type]
                            artifact_root=root / "artifacts", data_root=EXAMPLE_DATA, lease_ttl=3.0)
        with LocalFlower(settings, root / "logs") as flower, \
                LocalWorkers(settings, 2, root / "logs", name_prefix="fl") as workers:
            app = create_app(settings)
            try:
                yield Platform(redis, settings, workers, flower, app, Runtime.from_settings(settings))
            finally:
                app.close()


def _events_seen_workers(platform: Platform) -> bool:
    """Flower's event state has both workers alive: its event consumer is attached."""
    alive = platform.api("/api/workers?status=1")
    return all(alive.get(name) is True for name in platform.workers.names)


def test_flower_api_sees_the_batch_its_workers_and_queues(tmp_path: Path, platform: Platform,
                                                          uniq: str) -> None:
    # Given Flower consuming events (else it would miss the first tasks) ...
    wait_for(lambda: _events_seen_workers(platform), 90, "Flower to see the workers' heartbeats",
             interval=0.5)
    # ... when a batch of 3 models runs on K=2 workers,
    models = [{"name": f"fl-{d}-{uniq}", "task": "classification",
               "dataset": {"kind": "sklearn", "name": d},
               "estimator": {"class_path": "sklearn.linear_model.LogisticRegression",
                             "params": {"max_iter": 1000}}} for d in ("iris", "wine", "breast_cancer")]
    batch = load(tmp_path, {"name": f"flower-{uniq}", "models": models}, platform.settings)
    handle, status = run_batch(batch, platform.app, platform.runtime)
    assert status.counts == {"promoted": 3}
    every_run = platform.runtime.tracker.runs(batch_id=handle.batch_id)
    assert len(every_run) == 4 * 3
    # Small models: each chain is one fused task that ran the model's four stages.
    runs = {r["task_id"]: r for r in every_run}
    stages = {tid: {r["stage"] for r in every_run if r["task_id"] == tid} for tid in runs}
    assert len(runs) == 3 and all(s == set(STAGES) for s in stages.values())

    # then Flower lists every task of the batch, succeeded, with the worker that ran it.
    def batch_tasks() -> dict[str, Any]:
        tasks = platform.api("/api/tasks?limit=10000")
        return {tid: t for tid, t in tasks.items() if handle.batch_id in (t.get("args") or "")}

    def all_succeeded() -> bool:
        tasks = batch_tasks()
        return set(runs) <= set(tasks) and all(tasks[t]["state"] == "SUCCESS" for t in runs)

    wait_for(all_succeeded, 60, "Flower to see every task of the batch succeed", interval=0.5)
    tasks = batch_tasks()
    assert len(tasks) == 3
    for task_id, run in runs.items():
        assert tasks[task_id]["worker"] == run["worker"]
        assert tasks[task_id]["name"] == "modelfleet.fused"
        assert tasks[task_id]["args"].startswith("fused model=")
        # Every task was seen sent: the first stage by the producer's task-sent events.
        assert tasks[task_id]["sent"], (run["stage"], tasks[task_id])
    assert {t["worker"] for t in tasks.values()} <= set(platform.workers.names)

    # The Redis password must not leak into what Flower shows.
    assert platform.redis.password and platform.redis.password not in platform.raw("/api/tasks")

    # It lists the K workers (asked live: a refresh whose broadcast timed out on a loaded
    # machine answered {} once, 2026-12-07, so it is asked again) ...
    wait_for(lambda: set(platform.workers.names) <= set(platform.api("/api/workers?refresh=1")), 30,
             "Flower to list the workers", interval=0.5)
    # ... and the length of the four stage queues (drained after the batch).
    queues = {q["name"]: q["messages"] for q in platform.api("/api/queues/length")["active_queues"]}
    assert queues == {stage: 0 for stage in STAGES}


def test_flower_search_finds_a_batch_and_each_models_four_stages(tmp_path: Path, platform: Platform,
                                                                 uniq: str) -> None:
    # Given Flower consuming events and a batch whose model names prefix each other
    # (store-1, store-10), two of them sharing a chain (pack: 2) ...
    wait_for(lambda: _events_seen_workers(platform), 90, "Flower to see the workers' heartbeats",
             interval=0.5)
    names = [f"s{uniq}-store-{n}" for n in (1, 10, 2)]
    models = [{"name": name, "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
               "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier",
                             "params": {"max_depth": i + 1}}} for i, name in enumerate(names)]
    batch = load(tmp_path, {"name": f"search-{uniq}", "pack": 2, "models": models}, platform.settings)
    handle, status = run_batch(batch, platform.app, platform.runtime)
    assert status.counts == {"promoted": 3}
    chain_ids = platform.runtime.tracker.task_ids(handle.batch_id)  # model -> its chain's 4 task ids
    assert len({tuple(ids) for ids in chain_ids.values()}) == 2  # one pack of two, one single

    def search(query: str) -> dict[str, Any]:
        found = platform.api(f"/api/tasks?limit=10000&search={urllib.parse.quote(query)}")
        return {tid: task for tid, task in found.items() if task["state"] == "SUCCESS"}

    # ... then searching the batch id lists its chains' tasks, every stage succeeded ...
    every_task = {tid for ids in chain_ids.values() for tid in ids}
    wait_for(lambda: set(search(handle.batch_id)) == every_task, 60,
             "Flower's search to find every task of the batch succeeded", interval=0.5)
    for task in search(handle.batch_id).values():
        stage = task["name"].removeprefix("modelfleet.")
        assert task["args"].startswith(f"{stage} model=s{uniq}-store-"), task["args"]
        assert task["args"].endswith(f" batch={handle.batch_id}")
    # ... a model's quoted label term lists exactly its four stages (not store-10's for store-1),
    for name in names:
        found = search(f'"model={name} "')
        assert set(found) == set(chain_ids[name]), name
        assert sorted(t["name"] for t in found.values()) == sorted(f"modelfleet.{s}" for s in STAGES)
        # and with the task name, one stage of it
        assert set(search(f'"model={name} " name:deploy')) == {chain_ids[name][-1]}
    # ... and a plain model name finds its stages too (a substring: store-1 also finds store-10).
    assert set(search(names[1])) == set(chain_ids[names[1]])
    assert set(search(names[0])) == set(chain_ids[names[0]]) | set(chain_ids[names[1]])
    # The tasks page shows that label: its args column is on (Flower leaves it out by default).
    assert 'data-column="args"' in platform.raw("/tasks")


def test_flower_api_refuses_requests_without_credentials(platform: Platform) -> None:
    for path in ("/api/tasks", "/api/workers", "/api/queues/length", "/"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{platform.flower.url}{path}", timeout=30)
        assert refused.value.code == 401, path
        with pytest.raises(urllib.error.HTTPError) as refused:
            platform.raw(path, auth=(platform.flower.user, "not-" + platform.flower.password))
        assert refused.value.code == 401, path
    # Flower never protects /metrics (Prometheus): it is served without credentials.
    with urllib.request.urlopen(f"{platform.flower.url}/metrics", timeout=30) as resp:
        assert resp.status == 200 and b"flower_" in resp.read()
