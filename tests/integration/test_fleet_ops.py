"""Priorities, per-batch caps and per-model queues, with real Redis and real workers.

Every figure is read from the run records the workers wrote (their start and end
times and worker names), not from the producer's view.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from producer.local import LocalWorkers, wait_for
from producer.status import batch_status
from tests.conftest import write_spec
from tests.support.cluster import FAULTY, classifier, cluster, wait_lines
from tests.support.processes import run_cli
from workers import keys
from workers.app import queue_lists
from workers.contracts import HEAVY_STAGES
from workers.runtime import Runtime
from workers.settings import STAGES, Settings
from workers.task import _TAKE_SLOT


def _forest(name: str, seed: int, **extra: Any) -> dict[str, Any]:
    """A model whose fit takes a few tenths of a second (distinct seeds: no cache hits)."""
    return {**classifier(name, "sklearn.ensemble.RandomForestClassifier", "digits",
                         n_estimators=15, random_state=seed), **extra}


def max_overlap(runs: list[dict[str, Any]]) -> int:
    """The most runs in progress at one instant (an end at t comes before a start at t)."""
    edges = sorted([(r["started"], 1) for r in runs] + [(r["finished"], -1) for r in runs])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


@pytest.mark.slow
def test_an_urgent_batch_overtakes_a_queued_low_priority_one(tmp_path: Path) -> None:
    """200 low-priority models queued (800 stage messages), then 3 high-priority ones."""
    with cluster(tmp_path, workers=2) as c:
        bulk = c.submit({"name": "bulk", "priority": "low", "pack": 1,
                         "models": [classifier(f"bulk-{i}", random_state=i) for i in range(200)]})
        wait_for(lambda: c.runtime.tracker.runs(bulk.batch_id), 60, "the bulk batch's first stage")
        queued = sum(c.runtime.redis.llen(q) for q in queue_lists("preprocess"))
        submitted = time.time()
        urgent = c.submit({"name": "urgent", "priority": "high",
                           "models": [classifier(f"urgent-{i}", random_state=i) for i in range(3)]})
        assert urgent.wait(timeout=60).counts == {"promoted": 3}
        bulk_left = sum(1 for row in bulk.status().rows if row.status != "promoted")
        first = min(r["started"] for r in c.runtime.tracker.runs(urgent.batch_id))
        print(f"\nurgent batch: first stage {first - submitted:.2f} s after submit, behind {queued} "
              f"queued bulk chains; {bulk_left} bulk models not yet deployed when it finished")
        assert queued > 100  # it really was behind a long queue
        assert first - submitted < 5.0
        assert bulk_left > 100  # it overtook the queue instead of waiting for it
        assert bulk.wait(timeout=180).counts == {"promoted": 200}


@pytest.mark.slow
def test_a_capped_batch_never_runs_more_stages_at_once_than_its_cap(tmp_path: Path) -> None:
    with cluster(tmp_path, workers=3, cap_retry_delay=0.2) as c:
        capped = c.submit({"name": "capped", "max_parallel": 2, "pack": 1,
                           "models": [_forest(f"capped-{i}", i) for i in range(6)]})
        assert capped.wait(timeout=180).counts == {"promoted": 6}
        runs = c.runtime.tracker.runs(capped.batch_id)
        assert len(runs) == 6 * len(STAGES)
        workers = {r["worker"] for r in runs}
        print(f"\ncapped at 2 on 3 workers: max overlap {max_overlap(runs)} of {len(runs)} runs "
              f"on {len(workers)} workers")
        assert max_overlap(runs) == 2  # never 3, and the cap was used
        # every slot released (the last task gives its slot back just after the final state that
        # woke the handle)
        wait_for(lambda: c.runtime.redis.zcard(keys.batch_slots(capped.batch_id)) == 0, 10,
                 "every slot released")


@pytest.mark.slow
def test_a_stage_killed_by_its_time_limit_gives_its_batch_slot_back(tmp_path: Path) -> None:
    """max_parallel 1: the gate model's fit never ends and holds the only slot until Celery's
    hard time limit ends it (a failure: its message is not redelivered). The other models
    must all deploy, within seconds."""
    started = tmp_path / "started"
    gate = classifier("gate", FAULTY, started=str(started), wait_for=str(tmp_path / "never"))
    others = [classifier(f"other-{i}", max_depth=i + 1) for i in range(4)]
    # Neither a redelivery nor a lapsed heartbeat is under test: on a loaded machine (CI: 4
    # suites on 2 cores) a fresh worker's first stage can outlast FAST's 4 s visibility
    # timeout (a second copy of the same task, which may run beside the first) or starve its
    # heartbeat past its 2 s lease (its slot lapses by design). Once: max_overlap 2 in CI.
    with cluster(tmp_path, stage_time_limit=3, cap_retry_delay=0.2, visibility_timeout=30,
                 lease_ttl=5.0) as c:
        handle = c.submit({"name": "limited", "pack": 1, "max_parallel": 1, "models": [gate, *others]})
        fit_started = float(wait_lines(started, 1)[0][2])
        status = handle.wait(timeout=30)  # a leaked slot: the others would never run
        runs = c.runtime.tracker.runs(handle.batch_id)
        others_done = max(r["finished"] for r in runs if r["model"] != "gate")
        print(f"\nthe other models finished {others_done - fit_started:.1f} s after the slot holder's "
              f"fit began (time limit 3 s, lease_ttl {c.settings.lease_ttl} s)")
        assert status.counts == {"promoted": 4, "failed": 1}
        (failed,) = [r for r in handle.status().rows if r.status == "failed"]
        assert failed.name == "gate" and "TimeLimitExceeded" in failed.error
        succeeded = sorted((r for r in runs if r["status"] == "succeeded"), key=lambda r: r["started"])
        assert max_overlap(succeeded) == 1, [(r["model"], r["stage"], r["task_id"], r["worker"], r["started"],
                                              r["finished"]) for r in succeeded]
        wait_for(lambda: c.runtime.redis.zcard(keys.batch_slots(handle.batch_id)) == 0, 10,
                 "the slot released")


@pytest.mark.slow
def test_a_sigkilled_workers_slot_lapses_long_before_its_message_returns(tmp_path: Path) -> None:
    """max_parallel 1: the gate model's train holds the only slot on a worker of its own
    queue (so that worker holds no other message of the batch) when the worker's whole
    process tree is SIGKILLed. Its message comes back only after the visibility timeout;
    the other models must finish well before: the slot lapsed with the stage's heartbeat.

    Until the kill only preprocess has a worker besides the gate's: with a full worker from
    the start, a fast host finished all eight before the gate's train took the slot (seen
    once, 2026-12-07). Now the others wait for train whatever the host's speed."""
    started = tmp_path / "started"
    gate = {**classifier("gate", FAULTY, started=str(started), wait_for=str(tmp_path / "never")),
            "resources": {"queue": "gate-q"}}
    others = [classifier(f"other-{i}", max_depth=i % 4 + 1, random_state=i) for i in range(8)]
    with cluster(tmp_path, workers=0, visibility_timeout=30, cap_retry_delay=0.05) as c, \
            LocalWorkers(c.settings, 1, tmp_path / "pre-logs", queues=["preprocess"], name_prefix="pre"), \
            LocalWorkers(c.settings, 1, tmp_path / "gate-logs", queues=["gate-q"], name_prefix="gatew") as gw:
        handle = c.submit({"name": "killcap", "pack": 1, "max_parallel": 1, "models": [gate, *others]})
        wait_lines(started, 1)
        os.killpg(gw.procs[0].pid, signal.SIGKILL)
        killed_at = time.time()
        gw.procs[0].wait(10)

        def others_deployed() -> int:
            return sum(1 for r in handle.status().rows if r.name != "gate" and r.status == "promoted")

        assert others_deployed() == 0  # no worker trains them yet: all still need the slot
        with LocalWorkers(c.settings, 1, tmp_path / "logs"):
            wait_for(lambda: others_deployed() == len(others), 20, "the other models")
        freed_after = time.time() - killed_at
        print(f"\nthe other models finished {freed_after:.1f} s after the slot holder was killed "
              f"(lease_ttl {c.settings.lease_ttl} s, visibility timeout {c.settings.visibility_timeout} s)")
        assert freed_after < c.settings.visibility_timeout - 5


def test_a_dead_workers_slot_lapses_with_its_heartbeat(redis_server: Any) -> None:
    """The slot script on a real Redis: a holder whose alive key is gone frees its slot
    once lease_ttl has passed since it took it; a live one keeps it."""
    import redis

    r = redis.Redis.from_url(redis_server.url)
    take = r.register_script(_TAKE_SLOT)
    slots, ttl_ms = keys.batch_slots(f"slots-{time.time_ns()}"), 300

    def ask(task: str) -> int:
        return int(take(keys=[slots], args=[1, task, ttl_ms, keys.alive("")]))

    assert ask("a") == 1
    assert ask("b") == 0  # a holds the only slot
    assert ask("a") == 1  # a redelivered copy of a keeps it
    r.set(keys.alive("a"), "a", px=2000)  # a's stage is running: its heartbeat keeps this key
    time.sleep(ttl_ms / 1000 + 0.1)  # the lease time itself is what is tested here
    assert ask("b") == 0
    r.delete(keys.alive("a"))  # a's worker was killed: its heartbeat stopped
    assert ask("b") == 1
    assert r.zrange(slots, 0, -1) == [b"b"]


@pytest.mark.slow
def test_a_model_naming_a_queue_trains_on_the_workers_of_that_queue(tmp_path: Path) -> None:
    with cluster(tmp_path, workers=1) as c, \
            LocalWorkers(c.settings, 1, tmp_path / "large-logs", queues=["train-large"],
                         name_prefix="large"):
        big = {**_forest("big", 0), "resources": {"queue": "train-large"}}
        handle = c.submit({"name": "routed", "pack": "auto",
                           "models": [big, classifier("small-a"), classifier("small-b", max_depth=2)]})
        assert handle.wait(timeout=120).counts == {"promoted": 3}
        where = {(r["model"], r["stage"]): r["worker"].split("@")[0]
                 for r in c.runtime.tracker.runs(handle.batch_id)}
        for stage in STAGES:
            assert where[("big", stage)] == ("large0" if stage in HEAVY_STAGES else "w0"), stage
            assert where[("small-a", stage)] == where[("small-b", stage)] == "w0"


def test_submit_priority_option_overrides_the_specs_and_is_kept_for_retry(
        tmp_path: Path, settings: Settings, runtime: Runtime, workers: Any, uniq: str) -> None:
    """`modelfleet submit --priority high` on a `priority: low` spec: the batch record (what
    `retry` resends with) says high, and the batch runs."""
    path = write_spec(tmp_path, {"name": f"prio-{uniq}", "priority": "low", "max_parallel": 2,
                                 "models": [classifier(f"prio-{uniq}")]})
    done = run_cli(["submit", str(path), "--priority", "high"], settings, tmp_path)
    assert done.returncode == 0, done.stderr
    (batch_id,) = [b for b in runtime.tracker.list_batches(limit=10_000) if b.startswith(f"prio-{uniq}")]
    record = runtime.tracker.get_batch(batch_id)
    assert record is not None and (record["priority"], record["max_parallel"]) == ("high", 2)
    wait_for(lambda: batch_status(runtime, batch_id).done, 60, "the batch")
    assert batch_status(runtime, batch_id).counts == {"promoted": 1}
    bad = run_cli(["submit", str(path), "--priority", "urgent"], settings, tmp_path)
    assert bad.returncode == 2 and "--priority" in bad.stderr
