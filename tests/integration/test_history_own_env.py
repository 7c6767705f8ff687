"""History tests that need their own Redis, workers, artifact root or data root:
retry after a data fix, the index rebuilt from the artifact root, a redelivered
long stage, and thousands of concurrent tracking writes."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from sklearn.datasets import load_wine

from producer.local import LocalWorkers, RedisServer, wait_for
from producer.serving import load_model
from producer.submit import submit
from tests.conftest import load, run_batch
from tests.support.cluster import FAULTY
from tests.support.index import index_snapshot
from tests.support.processes import run_cli
from workers import keys
from workers.app import create_app, queue_lists
from workers.cache import StepCache, cache_key
from workers.runtime import Runtime
from workers.settings import STAGES, Settings
from workers.store import ArtifactStore
from workers.tracking import Tracker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOGREG = "sklearn.linear_model.LogisticRegression"
TREE = "sklearn.tree.DecisionTreeClassifier"


@dataclass
class Env:
    settings: Settings
    runtime: Runtime
    app: Any
    data_root: Path


@pytest.fixture(scope="module")
def own_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A Redis, an artifact root, a data root and two workers of our own."""
    base = tmp_path_factory.mktemp("own-env")
    data_root = base / "data"
    data_root.mkdir()
    with RedisServer(base / "redis") as server:
        settings = Settings(broker_url=server.url, artifact_root=base / "artifacts",  # type: ignore[arg-type]
                            data_root=data_root, lease_ttl=3.0)
        with LocalWorkers(settings, 2, base / "logs"):
            app = create_app(settings)
            try:
                yield Env(settings, Runtime.from_settings(settings), app, data_root)
            finally:
                app.close()


def classifier(name: str, dataset: dict[str, Any], estimator: str, **params: Any) -> dict[str, Any]:
    return {"name": name, "task": "classification", "dataset": dataset,
            "estimator": {"class_path": estimator, "params": params},
            "evaluation": {"metrics": ["accuracy"]}}


GOOD_CSV = "x1,x2,label\n" + "".join(f"{i % 7},{(i * 3) % 11},{'a' if i % 7 < 3 else 'b'}\n"
                                      for i in range(120))


def test_retry_reruns_only_the_failed_models(tmp_path: Path, own_env: Env) -> None:
    rt = own_env.runtime
    csv = own_env.data_root / "sales.csv"
    csv.write_text(GOOD_CSV)
    spec = {"name": "retry", "models": [
        classifier("iris-lr", {"kind": "sklearn", "name": "iris"}, LOGREG, max_iter=500),
        classifier("wine-tree", {"kind": "sklearn", "name": "wine"}, TREE, max_depth=3),
        classifier("sales", {"kind": "csv", "path": "sales.csv", "target": "label"}, LOGREG)]}
    batch = load(tmp_path, spec, own_env.settings)  # validated against the good file
    # Given the file goes bad on the shared volume after the spec was checked
    csv.write_text("garbage\n")
    handle, status = run_batch(batch, own_env.app, rt)
    assert status.counts == {"promoted": 2, "failed": 1}
    before = {m: len(rt.tracker.runs(batch_id=handle.batch_id, model=m)) for m in
              ("iris-lr", "wine-tree", "sales")}
    assert before["sales"] == 1  # its preprocess failed and the chain stopped

    # When the file is repaired and the batch retried (spec unchanged)
    csv.write_text(GOOD_CSV)
    result = run_cli(["retry", handle.batch_id, "--timeout", "120"], own_env.settings, tmp_path)

    # Then only the failed model ran again, under the same batch id, and everything deployed
    assert result.returncode == 0, result.stderr
    assert "retrying 1 model(s)" in result.stdout
    assert handle.status().counts == {"promoted": 3}
    after = {m: rt.tracker.runs(batch_id=handle.batch_id, model=m) for m in before}
    assert len(after["iris-lr"]) == before["iris-lr"] and len(after["wine-tree"]) == before["wine-tree"]
    sales = after["sales"]
    assert [r["stage"] for r in sales if r["status"] == "succeeded"] == list(STAGES)
    assert [r["status"] for r in sales if r["stage"] == "preprocess"] == ["failed", "succeeded"]
    record = rt.tracker.get_batch(handle.batch_id)
    assert record is not None and [r["models"] for r in record["retries"]] == [["sales"]]
    # Nothing left to retry: a user error, nothing sent.
    again = run_cli(["retry", handle.batch_id], own_env.settings, tmp_path)
    assert again.returncode == 2 and "no failed or cancelled model" in again.stderr


def test_index_rebuilt_from_the_artifact_root_equals_the_original(tmp_path: Path, own_env: Env) -> None:
    rt, settings = own_env.runtime, own_env.settings
    iris = {"kind": "sklearn", "name": "iris"}
    for depth in (1, 2, 4):
        spec = {"name": f"reidx{depth}", "models": [
            {**classifier("reidx-tree", iris, TREE, max_depth=depth, random_state=0),
             "tags": {"family": "tree"}, "deploy": {"gate": {"min_improvement": 0.0}}},
            classifier("reidx-lr", iris, LOGREG, max_iter=500),
            classifier("reidx-bad", iris, "sklearn.neighbors.KNeighborsClassifier", n_neighbors=1000)]}
        _, status = run_batch(load(tmp_path, spec, settings), own_env.app, rt)
        assert status.counts == {"promoted": 2, "failed": 1}
    rt.registry.promote("reidx-tree", 1, "production")
    rt.registry.rollback("reidx-tree", "production")
    rt.registry.promote("reidx-lr", 1, "staging")
    original = index_snapshot(rt)
    assert len(original["registry"]["reidx-tree"]["versions"]) == 3
    assert original["registry"]["reidx-tree"]["history"]["production"]
    assert original["cache_stats"]["hits"] > 0 and len(original["runs"]) >= 30

    # A brand-new Redis that knows nothing, on the same artifact root
    with RedisServer(tmp_path / "fresh-redis") as fresh:
        fresh_settings = settings.with_broker(fresh.url)
        result = run_cli(["reindex"], fresh_settings, tmp_path)
        assert result.returncode == 0, result.stderr
        rebuilt = index_snapshot(Runtime.from_settings(fresh_settings))

    assert rebuilt == original


def test_cache_prune_frees_old_entries_but_keeps_registered_models(tmp_path: Path,
                                                                 own_env: Env) -> None:
    # Runs after the tests above in this module: it empties this environment's cache.
    rt, settings = own_env.runtime, own_env.settings
    spec = {"name": "prune", "models": [
        classifier("prune-tree", {"kind": "sklearn", "name": "wine"}, TREE, max_depth=3, random_state=0)]}
    handle, status = run_batch(load(tmp_path, spec, settings), own_env.app, rt)
    assert status.counts == {"promoted": 1}
    entries = rt.cache.summary()["entries"]
    assert entries >= 3

    kept = run_cli(["cache", "prune", "--older-than", "30d"], settings, tmp_path)
    assert kept.returncode == 0 and rt.cache.summary()["entries"] == entries

    pruned = run_cli(["cache", "prune", "--older-than", "0s"], settings, tmp_path)
    assert pruned.returncode == 0, pruned.stderr
    assert f"removed {entries} cache entries" in pruned.stdout
    assert rt.cache.summary()["entries"] == 0
    lineage = rt.registry.resolve("prune-tree@production")["lineage"]
    assert not rt.store.exists(lineage["prepared"]["data_digest"])  # nothing references it now
    # The deployed model (estimator + fitted preprocessing) still loads and predicts.
    X, y = load_wine(return_X_y=True)
    assert (load_model("prune-tree@production", runtime=rt).predict(X) == y).mean() > 0.8
    bad = run_cli(["cache", "prune", "--older-than", "soon"], settings, tmp_path)
    assert bad.returncode == 2 and "--older-than" in bad.stderr


def test_redelivered_long_stage_is_computed_once(tmp_path: Path) -> None:
    # A visibility timeout far shorter than train: Redis hands the running train
    # message to the second worker, which must wait for the running copy, not train again.
    # The fit is held open until the redelivery happened (no race with a real fit's length);
    # max_deliveries is raised so the poison-message guard stays out of the way.
    started, release = tmp_path / "started", tmp_path / "release"
    with RedisServer(tmp_path / "redis") as server:
        settings = Settings(broker_url=server.url, artifact_root=tmp_path / "artifacts",  # type: ignore[arg-type]
                            data_root=tmp_path, visibility_timeout=2, restore_interval=1,
                            restore_throttle=1, lease_ttl=3.0, max_deliveries=50,
                            allowed_estimator_prefixes=["sklearn.", "tests.support."])
        rt = Runtime.from_settings(settings)
        spec = {"name": "slow", "models": [classifier("slow-forest", {"kind": "sklearn", "name": "iris"},
                                                      FAULTY, started=str(started), wait_for=str(release))]}
        batch = load(tmp_path, spec, settings)
        with LocalWorkers(settings, 2, tmp_path / "logs"):
            app = create_app(settings)
            try:
                handle = submit(batch, app, rt)

                def redelivered() -> bool:
                    return any(int(rt.redis.get(k) or 0) >= 2 for k in rt.redis.keys("mf:deliveries:*"))

                wait_for(redelivered, 60, "the running train message delivered again")
                release.touch()
                handle.wait(timeout=120)

                def drained() -> bool:  # every redelivered copy consumed and acked
                    return (all(rt.redis.llen(q) == 0 for s in STAGES for q in queue_lists(s))
                            and rt.redis.hlen("unacked") == 0 and handle.status().done)

                wait_for(drained, 120, "queues drained")
            finally:
                app.close()

        assert handle.status().counts == {"promoted": 1}
        assert len(started.read_text().splitlines()) == 1, "the model was fitted twice"
        train = [r for r in rt.tracker.runs(batch_id=handle.batch_id) if r["stage"] == "train"]
        deliveries = int(rt.redis.get(f"{keys.deliveries(train[0]['task_id'])}:0") or 0)
        assert deliveries >= 2, "the train message should have been delivered again while running"
        # The copy took the running one's outcome: no second run of the stage, not even a cache hit.
        assert [(r["status"], r["cache_hit"]) for r in train] == [("succeeded", False)]
        assert [v["version"] for v in rt.registry.versions("slow-forest")] == [1]


def _hold_lease_forever(url: str, root: str, key: str) -> None:
    """In a separate process: take the lease on `key` and never finish (until killed)."""
    cache = StepCache(redis.Redis.from_url(url, decode_responses=True), ArtifactStore(Path(root)),
                      lease_ttl=1.5, wait_timeout=60)

    def forever() -> tuple[dict[str, Any], list[str]]:
        threading.Event().wait()
        raise AssertionError("unreachable")

    cache.compute_once(key, "train", forever)


def test_a_dead_lease_holder_is_taken_over_once_its_lease_runs_out(tmp_path: Path) -> None:
    key = cache_key("train", {"case": uuid.uuid4().hex}, [])
    with RedisServer(tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        cache = StepCache(client, ArtifactStore(tmp_path / "root"), lease_ttl=1.5, wait_timeout=60)
        holder = multiprocessing.get_context("spawn").Process(
            target=_hold_lease_forever, args=(server.url, str(tmp_path / "root"), key))
        holder.start()
        try:
            wait_for(lambda: client.exists(keys.lease(key)), 60, "the holder's lease")
            # The heartbeat keeps a live holder's lease well past its ttl.
            assert not _acquired_within(client, key, 3.0)
            holder.kill()
            holder.join(10)
            killed = time.monotonic()
            value, hit = cache.compute_once(key, "train", lambda: ({"model_digest": "x"}, []))
            # Generous bound (shared machine): far below the 60 s wait timeout, so the
            # lease expired by itself (ttl 1.5 s) rather than the waiter giving up.
            assert time.monotonic() - killed < 20
        finally:
            holder.kill()
            holder.join(10)
    assert value == {"model_digest": "x"} and hit is False


def _acquired_within(client: redis.Redis, key: str, seconds: float) -> bool:
    lock = client.lock(keys.lease(key), timeout=5, blocking_timeout=seconds, thread_local=False)
    if lock.acquire():
        lock.release()
        return True
    return False


def _write_runs(url: str, root: str, batch_id: str, worker: int, threads: int, per_thread: int) -> int:
    """In a separate process: `threads` threads each recording `per_thread` runs."""
    tracker = Tracker(redis.Redis.from_url(url, decode_responses=True), ArtifactStore(Path(root)))

    def work(t: int) -> None:
        for i in range(per_thread):
            tracker.record_run({"batch_id": batch_id, "model": f"m{(worker * threads + t) % 7}",
                                "stage": "train", "status": "succeeded", "started": float(i),
                                "cache_hit": False, "tags": {}, "metrics": {}, "error": None,
                                "worker": f"p{worker}t{t}", "duration": 0.0})
            tracker.set_model_state(batch_id, "shared", last=f"{worker}-{t}-{i}")

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return threads * per_thread


def test_thousands_of_concurrent_tracking_writes(tmp_path: Path) -> None:
    batch_id = f"burst-{uuid.uuid4().hex[:6]}"
    procs, threads, per_thread = 4, 5, 100
    with RedisServer(tmp_path / "redis") as server:
        with ProcessPoolExecutor(procs) as pool:
            done = sum(pool.map(_write_runs, [server.url] * procs, [str(tmp_path / "root")] * procs,
                                [batch_id] * procs, range(procs), [threads] * procs,
                                [per_thread] * procs))
        store = ArtifactStore(tmp_path / "root")
        tracker = Tracker(redis.Redis.from_url(server.url, decode_responses=True), store)
        runs = tracker.runs(batch_id=batch_id)
        state = tracker.model_states(batch_id, ["shared"])["shared"]

    assert done == 2000 and len(runs) == 2000 and len({r["id"] for r in runs}) == 2000
    assert {r["worker"] for r in runs} == {f"p{p}t{t}" for p in range(procs) for t in range(threads)}
    # The journal (what reindex rebuilds from) holds every run once and, despite 2000 racing
    # writers, the newest state it keeps is exactly what Redis holds.
    journaled = [r["run"]["id"] for r in tracker.journal.replay("run") if r["run"]["batch_id"] == batch_id]
    assert sorted(journaled) == sorted(r["id"] for r in runs)
    assert tracker.journaled_states()[(batch_id, "shared")] == state
    assert state["last"].endswith(f"-{per_thread - 1}") and state["rev"] == "2000"
