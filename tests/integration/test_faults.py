"""Faults that must lose nothing: killed workers and pool children, poison tasks,
transient versus deterministic errors. Each test owns its Redis and workers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from producer.local import RedisServer, wait_for
from producer.status import BatchStatus
from tests.support.cluster import FAULTY, Cluster, classifier, cluster, lines, wait_lines
from tests.support.index import index_snapshot
from workers.reindex import reindex
from workers.runtime import Runtime
from workers.settings import STAGES

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _kill_the_fitting_worker(c: Cluster, started: Path, release: Path) -> tuple[Any, float]:
    """SIGKILL the whole process tree of the worker whose fit wrote the first line to
    `started` (and blocks on `release`), then let later fits through; (its process, when)."""
    _, ppid, _ = wait_lines(started, 1)[0]
    victim = next(p for p in c.workers.procs if p.pid == int(ppid))
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.time()
    victim.wait(10)
    release.touch()
    return victim, killed_at


# pack 1: one chain per model; pack 4: the four models ride one chain (a pack).
@pytest.mark.parametrize("pack", [1, 4])
def test_sigkilled_worker_loses_no_model_and_deploys_each_once(tmp_path: Path, pack: int) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    gate = classifier("gate", FAULTY, started=str(started), wait_for=str(release))
    spec = {"name": "killed", "pack": pack,
            "models": [gate, *(classifier(f"m{i}", max_depth=i + 1) for i in range(3))]}
    with cluster(tmp_path) as c:
        handle = c.submit(spec)
        # Given the gate model is training on one worker, when that worker's whole process
        # tree is SIGKILLed
        victim, killed_at = _kill_the_fitting_worker(c, started, release)
        status = handle.wait(timeout=120)
        # Then the other worker picks the task up after the visibility timeout
        second = wait_lines(started, 2)[1]
        recovered_after = float(second[2]) - killed_at
        print(f"\nrecovered a SIGKILLed worker's task after {recovered_after:.1f}s "
              f"(visibility_timeout={c.settings.visibility_timeout}, "
              f"restore_interval={c.settings.restore_interval})")

        assert status.counts == {"promoted": 4}
        assert int(second[1]) != victim.pid
        for model in ("gate", "m0", "m1", "m2"):
            assert [v["version"] for v in c.runtime.registry.versions(model)] == [1]
        runs = c.runtime.tracker.runs(batch_id=handle.batch_id)
        for model in ("gate", "m0", "m1", "m2"):
            trains = [r for r in runs if r["model"] == model and r["stage"] == "train"]
            assert [(r["status"], r["cache_hit"]) for r in trains] == [("succeeded", False)]
        assert len({r["task_id"] for r in runs if r["stage"] == "train"}) == 4 // pack


def test_sigkilled_worker_mid_fused_pack_loses_no_model_and_fits_each_once(tmp_path: Path) -> None:
    # pack: auto with 32 small models of one cost class: 8 fused packs of 4 (CHAINS_PER_SLOT
    # chains for each of the 2 live slots), each one task for all four stages; the gate's
    # neighbours are m0, m1, m2.
    started, release = tmp_path / "started", tmp_path / "release"
    gate = classifier("gate", FAULTY, started=str(started), wait_for=str(release))
    names = ["gate", *(f"m{i}" for i in range(31))]
    # (Distinct params, so each has a train of its own: identical models share one in the cache.)
    spec = {"name": "fused", "models": [gate, *(classifier(n, FAULTY, message=n) for n in names[1:])]}
    with cluster(tmp_path) as c:
        handle = c.submit(spec)
        # Given the gate model is training inside its fused pack on one worker, when that
        # worker's whole process tree is SIGKILLed
        victim, _ = _kill_the_fitting_worker(c, started, release)
        status = handle.wait(timeout=120)

        # Then the pack is redelivered and every model ends promoted, registered once
        assert status.counts == {"promoted": 32}
        assert int(wait_lines(started, 2)[1][1]) != victim.pid
        runs = c.runtime.tracker.runs(batch_id=handle.batch_id)
        for name in names:
            assert [v["version"] for v in c.runtime.registry.versions(name)] == [1]
            mine = [r for r in runs if r["model"] == name and r["status"] == "succeeded"]
            # ... each fitted once (a redelivered pack finds its done work in the cache)
            assert [r["cache_hit"] for r in mine if r["stage"] == "train"].count(False) == 1
            # ... and its four stages ran in one task: the pack was fused, no hand-offs
            assert {r["stage"] for r in mine} == set(STAGES)
            assert len({r["task_id"] for r in mine}) == 1
        # ... 8 tasks in all: the killed pack came back as the same message
        assert len({r["task_id"] for r in runs}) == 8


def test_sigkilled_worker_mid_search_deploys_each_meta_estimator_once(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    # A grid search (2 candidates x 2 folds + the refit = 5 fits) whose first fit blocks.
    searched = classifier("search-gate", FAULTY, started=str(started), wait_for=str(release))
    searched["search"] = {"kind": "grid", "space": {"fail_times": [0, 1]}, "cv": 2}
    tree = {"class_path": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 2}}
    gscv = classifier("gscv", "sklearn.model_selection.GridSearchCV", estimator=tree,
                      param_grid={"max_depth": [1, 2]}, cv=2)
    pipe = classifier("pipe", "sklearn.pipeline.Pipeline", steps=[
        ["scale", {"class_path": "sklearn.preprocessing.StandardScaler"}], ["model", tree]])
    with cluster(tmp_path) as c:
        handle = c.submit({"name": "killed-search", "pack": 1, "models": [searched, gscv, pipe]})
        # Given the search is in its first fit on one worker, when that worker's whole
        # process tree is SIGKILLed
        victim, _ = _kill_the_fitting_worker(c, started, release)
        status = handle.wait(timeout=120)

        # Then the other worker ran the whole search once, and every model deployed once.
        assert status.counts == {"promoted": 3}
        fits = lines(started)
        assert len(fits) == 1 + 5 and all(int(f[1]) != victim.pid for f in fits[1:])
        for name in ("search-gate", "gscv", "pipe"):
            assert [v["version"] for v in c.runtime.registry.versions(name)] == [1]
        runs = c.runtime.tracker.runs(batch_id=handle.batch_id)
        trains = [r for r in runs if r["model"] == "search-gate" and r["stage"] == "train"]
        assert [(r["status"], r["cache_hit"]) for r in trains] == [("succeeded", False)]
        assert trains[0]["result"]["search"]["n_trials"] == 2


def test_after_a_crash_reindex_rebuilds_the_whole_index_from_the_artifact_root(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    gate = classifier("crash-gate", FAULTY, started=str(started), wait_for=str(release))
    spec = {"name": "crash", "pack": 3, "models": [
        gate, *(classifier(f"crash-{i}", max_depth=i + 1) for i in range(5))]}
    with cluster(tmp_path) as c:
        handle = c.submit(spec)
        # A worker SIGKILLed mid-pack: its pack is redelivered and finished by the other.
        _, ppid, _ = wait_lines(started, 1)[0]
        os.killpg(int(ppid), signal.SIGKILL)
        release.touch()
        assert handle.wait(timeout=120).counts == {"promoted": 6}
        c.runtime.registry.promote("crash-1", 1, "staging")
        # Then the crash: every worker dies at once, nothing is shut down cleanly.
        for proc in c.workers.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        original = index_snapshot(c.runtime)
        assert len(original["runs"]) >= 24 and original["registry"]["crash-1"]["aliases"]

        # Redis is lost too: a fresh one on the same artifact root knows nothing until reindex.
        with RedisServer(tmp_path / "fresh-redis") as fresh:
            rebuilt = Runtime.from_settings(c.settings.with_broker(fresh.url))
            assert rebuilt.tracker.list_batches() == []
            counts = reindex(rebuilt)
            assert counts["batches"] == 1 and counts["runs"] == len(original["runs"])
            assert index_snapshot(rebuilt) == original
            rebuilt.redis.close()


# "auto": three small models, each its own fused chain (one task runs all four stages).
@pytest.mark.parametrize("pack", [1, 3, "auto"])
def test_killed_pool_child_is_retried_and_poison_task_fails_bounded(tmp_path: Path, pack: int | str) -> None:
    once_started, always_started = tmp_path / "once", tmp_path / "always"
    spec = {"name": "oom", "pack": pack, "models": [
        classifier("dies-once", FAULTY, started=str(once_started), die="once",
                   die_flag=str(tmp_path / "died")),
        classifier("dies-always", FAULTY, started=str(always_started), die="always"),
        classifier("healthy", max_depth=2)]}
    # A dead pool child is requeued at once; a long visibility timeout keeps the Redis
    # restore sweep from adding a second copy while a loaded worker notices the death.
    with cluster(tmp_path, max_deliveries=3, visibility_timeout=30) as c:
        handle = c.submit(spec)
        status = handle.wait(timeout=150)
        rows = {r.name: r for r in status.rows}

        # A pool child killed once (as the OOM killer does): the task is redelivered and succeeds.
        assert rows["dies-once"].status == "promoted" and len(lines(once_started)) == 2
        first, second = lines(once_started)
        print(f"\na killed pool child's task restarted after {float(second[2]) - float(first[2]):.1f}s")
        # One that kills its pool child every time fails after max_deliveries tries, not forever.
        assert rows["dies-always"].status == "failed" and rows["dies-always"].stage == "train"
        assert "TooManyDeliveries" in rows["dies-always"].error
        if pack != 3:
            assert len(lines(always_started)) == c.settings.max_deliveries
        else:
            # The pack kept dying, so it was split and its models went on one by one: the
            # killer alone used up its own deliveries, its neighbours finished.
            assert c.settings.max_deliveries < len(lines(always_started)) <= 2 * c.settings.max_deliveries
            assert "resent its models one by one" in c.logs()
            # ... each under its own label (what Flower shows and searches).
            assert f"train model=healthy batch={handle.batch_id}: 1 model(s)" in c.logs()
            # `cancel` would revoke the healthy model's own new chain: its ids are the ones that ran.
            deploy = next(r for r in c.runtime.tracker.runs(batch_id=handle.batch_id)
                          if r["model"] == "healthy" and r["stage"] == "deploy")
            assert c.runtime.tracker.task_ids(handle.batch_id)["healthy"][-1] == deploy["task_id"]
        assert rows["healthy"].status == "promoted"
        for name in ("dies-once", "healthy"):
            assert [v["version"] for v in c.runtime.registry.versions(name)] == [1]
        # The workers themselves survived: both still answer.
        assert all(p.poll() is None for p in c.workers.procs)


@pytest.mark.parametrize("pack", [1, 2, "auto"])
def test_transient_errors_retry_and_deterministic_errors_fail_at_once(tmp_path: Path,
                                                                     pack: int | str) -> None:
    counter = tmp_path / "calls"
    # broken first: in a pack it fails before its neighbour's transient error retries the
    # message, and that retry must not run it again.
    spec = {"name": "errors", "pack": pack, "models": [
        classifier("broken", FAULTY, fail="value"),
        classifier("flaky", FAULTY, fail="connection", fail_times=2, counter=str(counter))]}
    with cluster(tmp_path) as c:
        handle = c.submit(spec)
        status = handle.wait(timeout=120)
        rows = {r.name: r for r in status.rows}
        runs = c.runtime.tracker.runs(batch_id=handle.batch_id)

        def trains(model: str) -> list[dict[str, object]]:
            return sorted((r for r in runs if r["model"] == model and r["stage"] == "train"),
                          key=lambda r: float(r["started"]))  # type: ignore[arg-type]

        # Transient: two ConnectionErrors, retried with backoff, then deployed.
        assert rows["flaky"].status == "promoted"
        flaky = trains("flaky")
        assert [r["status"] for r in flaky] == ["failed", "failed", "succeeded"]
        assert all("ConnectionError" in str(r["error"]) for r in flaky[:2])
        # Deterministic: one try, failed, the error in the model's status.
        assert rows["broken"].status == "failed" and rows["broken"].stage == "train"
        assert "ValueError" in rows["broken"].error and "bad data" in rows["broken"].error
        assert [r["status"] for r in trains("broken")] == ["failed"]


# How a retried train's copy dies: (FaultyClassifier's die mode, transient failures before it).
# - mid-fit: a transient error sends train's retry (the task's result reads RETRY); the
#   retry's pool child is killed during its fit.
# - before-send: train fails twice; the second try marks the model retrying and is killed
#   as it sends its retry, so no retry exists and the result still reads the first try's RETRY.
DEATHS = {"mid-fit": ("once_on_retry", 1), "before-send": ("before_retry_send", 2)}


@pytest.mark.parametrize("pack", [1, "auto"])
@pytest.mark.parametrize("death", sorted(DEATHS))
def test_a_retried_stage_whose_copy_died_is_run_again_at_once(tmp_path: Path, pack: int | str,
                                                               death: str) -> None:
    # The dead copy's message is requeued at once, while its alive key still stands. The next
    # copy waits for that key to lapse and runs the stage: an earlier try's RETRY is not the
    # dead copy's outcome, and a retry counts as sent only once its try noted it. (Taken for
    # it, the message was dropped and the model waited for the sweeper's stall_timeout, here
    # far off.)
    die, failures = DEATHS[death]
    started, counter, died = tmp_path / "started", tmp_path / "calls", tmp_path / "died"
    spec = {"name": f"retry-{death}", "pack": pack, "models": [
        classifier("flaky-dies", FAULTY, started=str(started), fail="connection", fail_times=failures,
                   counter=str(counter), die=die, die_flag=str(died))]}
    with cluster(tmp_path, visibility_timeout=30, lease_ttl=10.0, stall_timeout=600) as c:
        handle = c.submit(spec)
        status = handle.wait(timeout=90)
        assert died.exists(), "the copy was never killed"
        assert status.rows[0].status == "promoted", status.rows[0].error
        # Every try that failed or died, then the one that finished: three fits.
        assert len(lines(started)) == 3
        assert [v["version"] for v in c.runtime.registry.versions("flaky-dies")] == [1]


def _restart_batch(c: Cluster, tmp: Path, tag: str, restart: bool) -> tuple[float, BatchStatus]:
    """A gate model, a model that hits a connection error while Redis is down, and four
    small ones; Redis restarts while the first two are in their fits, if asked."""
    started, release = tmp / f"started-{tag}", tmp / f"release-{tag}"
    down, calls = tmp / f"down-{tag}", tmp / f"calls-{tag}"
    if not restart:
        release.touch()
        down.touch()
    spec = {"name": f"restart-{tag}", "models": [
        classifier(f"gate-{tag}", FAULTY, started=str(started), wait_for=str(release)),
        classifier(f"retry-{tag}", FAULTY, started=str(started), wait_for=str(down),
                   fail="connection", fail_times=int(restart), counter=str(calls)),
        *(classifier(f"{tag}-{i}", max_depth=i + 1, random_state=len(tag)) for i in range(4))]}
    t0 = time.monotonic()
    handle = c.submit(spec)
    if restart:
        wait_lines(started, 2)  # both workers are inside a fit
        c.redis.stop()  # SIGTERM: Redis flushes its append-only file and exits
        down.touch()  # the second fit now raises a ConnectionError and cannot send its retry
        wait_for(lambda: "reject requeue=" in c.logs(), 60, "the retry that cannot be sent")
        c.redis.start()  # same port, same directory: the AOF is replayed
        release.touch()
        wait_for(lambda: _pings(c), 30, "the producer's Redis client reconnecting")
    status = handle.wait(timeout=150)
    return time.monotonic() - t0, status


def _pings(c: Cluster) -> bool:
    try:
        return bool(c.runtime.redis.ping())
    except redis.exceptions.ConnectionError:
        return False


def test_redis_restart_mid_batch_with_aof(tmp_path: Path) -> None:
    # A gate held across the restart must not outlive the visibility timeout by much. A short
    # failover_wait: the retry's send gives up (and hands the message back) while Redis is
    # still down, which is the path under test (the default keeps trying for 60 s).
    with cluster(tmp_path, visibility_timeout=10, failover_wait=3) as c:
        base_time, base = _restart_batch(c, tmp_path, "base", restart=False)
        restart_time, status = _restart_batch(c, tmp_path, "rst", restart=True)
        print(f"\nbatch of 6 models: {base_time:.1f}s without a Redis restart, "
              f"{restart_time:.1f}s with one")

        # The stage whose retry could not be sent was handed back, not dropped.
        assert len(lines(tmp_path / "calls-rst")) == 2
        assert base.counts == {"promoted": 6}
        assert status.counts == {"promoted": 6}
        for row in status.rows:
            assert [v["version"] for v in c.runtime.registry.versions(row.name)] == [1]
        assert all(p.poll() is None for p in c.workers.procs), "workers must reconnect, not die"


def test_sigterm_mid_stage_finishes_the_task_then_exits(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    spec = {"name": "term", "models": [classifier("gate", FAULTY, started=str(started),
                                                  wait_for=str(release))]}
    with cluster(tmp_path, visibility_timeout=60) as c:
        handle = c.submit(spec)
        _, ppid, _ = wait_lines(started, 1)[0]
        index, victim = next((i, p) for i, p in enumerate(c.workers.procs) if p.pid == int(ppid))
        # When the worker running the stage gets SIGTERM (as `docker stop` / Kubernetes send)
        os.kill(victim.pid, signal.SIGTERM)
        wait_for(lambda: "Warm shutdown" in c.log(index), 30, "the warm shutdown message")
        assert victim.poll() is None, "a warm shutdown waits for the running stage"
        release.touch()
        # Then it finishes the stage within the grace period and exits cleanly
        assert victim.wait(60) == 0
        status = handle.wait(timeout=120)

        assert status.counts == {"promoted": 1}
        trains = [r for r in c.runtime.tracker.runs(batch_id=handle.batch_id) if r["stage"] == "train"]
        assert [(r["status"], r["worker"]) for r in trains] == [("succeeded", c.workers.names[index])]
        assert len(lines(started)) == 1, "the stage ran once, not again elsewhere"


def test_unreachable_broker_at_submit_fails_fast_and_clearly(tmp_path: Path) -> None:
    from producer.local import free_port
    from tests.conftest import write_spec

    port = free_port()  # nothing listens here
    spec = write_spec(tmp_path, {"name": "nobroker", "models": [classifier("m")]})
    env = {**os.environ, "MODELFLEET_BROKER_URL": f"redis://:s3cret-pw@127.0.0.1:{port}/0",
           "MODELFLEET_ARTIFACT_ROOT": str(tmp_path / "artifacts")}
    t0 = time.monotonic()
    # The subprocess timeout is the "does not hang" bound: exceeding it fails the test.
    result = subprocess.run([sys.executable, "-m", "producer", "submit", str(spec)], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    print(f"\nsubmit to a closed port gave up after {time.monotonic() - t0:.1f}s")

    assert result.returncode == 2
    assert "cannot reach the broker" in result.stderr and f"127.0.0.1:{port}" in result.stderr
    assert "nothing was submitted" in result.stderr and "Traceback" not in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout


def test_lease_outlives_a_redis_outage_longer_than_its_ttl_so_the_model_trains_once(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    spec = {"name": "blip", "models": [classifier("blip", FAULTY, started=str(started),
                                                  wait_for=str(release))]}
    # lease_ttl 2 s < the outage (3 s) < visibility timeout (8 s): the redelivered copy arrives
    # while the first is still fitting, after the lease would have expired during the outage.
    with cluster(tmp_path, visibility_timeout=8, lease_ttl=2.0, max_deliveries=10) as c:
        handle = c.submit(spec)
        wait_lines(started, 1)
        c.redis.stop()
        time.sleep(3)  # the outage itself (the fault under test), not a wait for a condition
        c.redis.start()  # same port and directory: the AOF is replayed, the lease has expired
        task_id = None

        def redelivered() -> bool:
            nonlocal task_id
            with contextlib.suppress(redis.exceptions.ConnectionError):
                keys_ = c.runtime.redis.keys("mf:deliveries:*")
                counts = {k: int(c.runtime.redis.get(k) or 0) for k in keys_}
                task_id = next((k for k, n in counts.items() if n >= 2), None)
            return task_id is not None

        wait_for(redelivered, 60, "the train message delivered a second time")
        release.touch()
        status = handle.wait(timeout=120)

        assert status.counts == {"promoted": 1}
        assert len(lines(started)) == 1, "the model was fitted twice"
        trains = [r for r in c.runtime.tracker.runs(batch_id=handle.batch_id) if r["stage"] == "train"]
        assert [r["cache_hit"] for r in trains if r["status"] == "succeeded"].count(False) == 1
        assert [v["version"] for v in c.runtime.registry.versions("blip")] == [1]


def test_a_long_healthy_stage_on_a_multi_slot_worker_is_not_failed_as_poison(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    spec = {"name": "long", "models": [classifier("long", FAULTY, started=str(started),
                                                  wait_for=str(release))]}
    # One worker with 4 slots, a stage far longer than max_deliveries x the visibility timeout:
    # Redis hands the still-running message out again and again, to free slots of the same worker.
    with cluster(tmp_path, workers=1, concurrency=4, visibility_timeout=2, max_deliveries=2) as c:
        handle = c.submit(spec)
        wait_lines(started, 1)
        counts: list[int] = []

        def delivered_beyond_the_limit() -> bool:
            counts[:] = [int(c.runtime.redis.get(k) or 0) for k in c.runtime.redis.keys("mf:deliveries:*")]
            return max(counts, default=0) > c.settings.max_deliveries

        wait_for(delivered_beyond_the_limit, 60, "a delivery past max_deliveries")
        release.touch()
        status = handle.wait(timeout=120)

        row = status.rows[0]
        assert status.counts == {"promoted": 1}, row.error
        assert "TooManyDeliveries" not in c.logs() and not row.error
        assert len(lines(started)) == 1, "the stage ran again instead of waiting for its running copy"
        assert [v["version"] for v in c.runtime.registry.versions("long")] == [1]
