"""The stalled-chain sweeper (workers/recovery.py) at production-like settings: the
visibility timeout an hour, as compose deploys it, so only the sweeper can bring a model
back within the test's time; short lease and sweep settings (configurable) keep it fast."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from producer.local import LocalWorkers, RedisServer, wait_for
from tests.support.cli_answers import invoke
from tests.support.cluster import FAULTY, Cluster, classifier, cluster, lines, wait_lines
from workers import keys
from workers.app import create_app, queue_lists
from workers.recovery import Sweeper
from workers.runtime import Runtime
from workers.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# As deployed: Redis would hand a dead worker's message back after an hour.
PRODUCTION = {"visibility_timeout": 3600, "restore_interval": 10, "lease_ttl": 2.0,
              "sweep_interval": 0.5, "stall_timeout": 4.0}
# Well under the visibility timeout: about 2 x lease_ttl + 2 sweeps, plus a loaded machine.
BOUND = 30.0


def _versions(c: Cluster, name: str) -> list[int]:
    return [v["version"] for v in c.runtime.registry.versions(name)]


def _unacked_ids(c: Cluster) -> set[str]:
    return {json.loads(raw)[0]["headers"]["id"] for raw in c.runtime.redis.hvals("unacked")}


@pytest.mark.parametrize("pack", [1, 4])
def test_sigkilled_busy_worker_is_recovered_long_before_the_visibility_timeout(
        tmp_path: Path, pack: int) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    gate = classifier("gate", FAULTY, started=str(started), wait_for=str(release))
    spec = {"name": "dead", "pack": pack,
            "models": [gate, *(classifier(f"m{i}", max_depth=i + 1) for i in range(3))]}
    with cluster(tmp_path, **PRODUCTION) as c:
        handle = c.submit(spec)
        # Given the gate model is training on one worker, its message unacked in Redis
        _, ppid, _ = wait_lines(started, 1)[0]
        victim = next(p for p in c.workers.procs if p.pid == int(ppid))
        # When that worker's whole process group is SIGKILLed mid-stage
        os.killpg(victim.pid, signal.SIGKILL)
        killed_at = time.time()
        victim.wait(10)
        release.touch()  # the gate's next fit goes through
        status = handle.wait(timeout=BOUND + 30)
        done_at = max(float(c.runtime.tracker.model_states(handle.batch_id, ["gate"])["gate"]["done_deploy"]),
                      killed_at)

        # Then the sweeper handed its message back (not Redis, an hour later) and the batch finished
        handed_back = float(lines(started)[1][2]) - killed_at
        print(f"\npack {pack}: SIGKILL -> stage restarted {handed_back:.1f}s -> gate promoted "
              f"{done_at - killed_at:.1f}s (lease_ttl {c.settings.lease_ttl}, sweep_interval "
              f"{c.settings.sweep_interval}, visibility_timeout {c.settings.visibility_timeout}); "
              f"load {os.getloadavg()[0]:.1f}")
        assert status.counts == {"promoted": 4}
        assert done_at - killed_at < BOUND
        gate_state = c.runtime.tracker.model_states(handle.batch_id, ["gate"])["gate"]
        assert "stopped renewing its lease in train" in gate_state["recovered"]
        assert "handed back" in gate_state["recovered"]
        # ... each model promoted exactly once, fitted once, by the live worker
        assert int(lines(started)[1][1]) != victim.pid
        for model in ("gate", "m0", "m1", "m2"):
            assert _versions(c, model) == [1]
        runs = c.runtime.tracker.runs(batch_id=handle.batch_id)
        for model in ("gate", "m0", "m1", "m2"):
            assert [(r["status"], r["cache_hit"]) for r in runs
                    if r["model"] == model and r["stage"] == "train"] == [("succeeded", False)]
            assert [r["status"] for r in runs
                    if r["model"] == model and r["stage"] == "deploy"] == ["succeeded"]
        # ... the same message went back (a pack stays one), and no copy is left to come back
        # after the visibility timeout: Redis holds no unacked message (the last task is acked
        # just after its final state, which is what woke the handle).
        assert len({r["task_id"] for r in runs if r["stage"] == "train"}) == 4 // pack
        wait_for(lambda: _unacked_ids(c) == set(), 10, "no unacked message left")
        assert c.runtime.redis.zcard(keys.RUNNING) == 0


def _wait_preprocessed(c: Cluster, batch_id: str, models: list[str]) -> dict[str, dict[str, str]]:
    states: dict[str, dict[str, str]] = {}

    def all_done() -> bool:
        states.update(c.runtime.tracker.model_states(batch_id, models))
        return all(st.get("done_preprocess") and st.get("pending") for st in states.values())

    wait_for(all_done, 60, "every model preprocessed")
    return states


def _take_message(c: Cluster, queue: str, task_id: str) -> str:
    """Remove the message of `task_id` from its queue, as a failover that loses it would."""
    r = c.runtime.redis  # the broker's Redis too
    for lst in queue_lists(queue):
        for message in r.lrange(lst, 0, -1):
            if json.loads(message)["headers"]["id"] == task_id:
                assert r.lrem(lst, 1, message) == 1
                return str(message)
    raise AssertionError(f"no message of {task_id} in {queue}")


def _messages(c: Cluster, queue: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Task id -> (the list it waits in, the job its first argument carries) of a queue."""
    out = {}
    for lst in queue_lists(queue):
        for raw in c.runtime.redis.lrange(lst, 0, -1):
            message = json.loads(raw)
            args = json.loads(base64.b64decode(message["body"]))[0]
            out[message["headers"]["id"]] = (lst, (args[0].get("pack") or [args[0]])[0]["job"])
    return out


def _put_back(c: Cluster, queue: str, message: str) -> None:
    """The lost message turns up again, in the list of its priority step (as kombu files it)."""
    priority = json.loads(message)["properties"].get("priority") or 0
    steps = dict(zip((0, 3, 6, 9), queue_lists(queue), strict=True))
    c.runtime.redis.lpush(steps[max(s for s in steps if s <= priority)], message)


@pytest.mark.parametrize("pack", [1, 2])
def test_lost_hand_off_is_resent_once_and_a_late_copy_is_a_no_op(tmp_path: Path, pack: int) -> None:
    models = [f"h{i}" for i in range(4)]
    spec: dict[str, Any] = {"name": "lost", "pack": pack, "priority": "low", "max_parallel": 2,
                            "models": [classifier(m, max_depth=i + 1) for i, m in enumerate(models)]}
    # Given a worker that runs only preprocess: every model waits for its train message
    with (cluster(tmp_path, workers=0, **PRODUCTION) as c,
          LocalWorkers(c.settings, 1, tmp_path / "logs", queues=["preprocess"], name_prefix="pre")):
        handle = c.submit(spec)
        states = _wait_preprocessed(c, handle.batch_id, models)
        # When the message carrying h0 (and its pack) to train is lost
        lost_at = time.time()
        lost = _take_message(c, "train", states["h0"]["pending"])
        lost_models = [m for m in models if states[m]["pending"] == states["h0"]["pending"]]
        assert len(lost_models) == pack
        # Then the sweeper resends each lost model on its own, from train, once
        resent: dict[str, dict[str, str]] = {}

        def all_resent() -> bool:
            resent.update(c.runtime.tracker.model_states(handle.batch_id, lost_models))
            return all("resent" in st.get("recovered", "") for st in resent.values())

        wait_for(all_resent, 30, "the lost models resent")
        resent_after = time.time() - lost_at
        # (the sweeper marks a model resent, then sends its message)
        wait_for(lambda: {m["pending"] for m in resent.values()} <= set(_messages(c, "train")), 10,
                 "the resent messages queued")
        messages = _messages(c, "train")
        assert sorted(m["pending"] for m in resent.values()) == sorted(
            i for i in messages if i not in {states[m]["pending"] for m in models})
        # ... in the batch's priority (low: kombu's step 9 list) and under its max_parallel
        for task_id, (lst, job) in messages.items():
            assert lst == queue_lists("train")[-1] and job["max_parallel"] == 2, task_id
        # ... and with a worker that trains, every model is promoted once
        with LocalWorkers(c.settings, 1, tmp_path / "logs", name_prefix="all"):
            status = handle.wait(timeout=60)
            after = c.runtime.tracker.model_states(handle.batch_id, models)
            promoted_at = max(float(after[m]["done_deploy"]) for m in lost_models)
            print(f"\npack {pack}: hand-off lost -> resent {resent_after:.1f}s (seen by a 0.5 s poll) "
                  f"-> promoted {promoted_at - lost_at:.1f}s (a worker started meanwhile) "
                  f"(stall_timeout {c.settings.stall_timeout}, sweep_interval "
                  f"{c.settings.sweep_interval}); load {os.getloadavg()[0]:.1f}")
            assert status.counts == {"promoted": 4}
            runs = c.runtime.tracker.runs(batch_id=handle.batch_id)
            for m in models:
                assert _versions(c, m) == [1]
                assert ("resent" in after[m].get("recovered", "")) == (m in lost_models)
                # Sent on from its last completed stage: preprocess ran once, train once
                assert [[r["status"] for r in runs if r["model"] == m and r["stage"] == stage]
                        for stage in ("preprocess", "train", "deploy")] == [["succeeded"]] * 3

            # And when the lost message turns up after all (late), it is a stale no-op
            _put_back(c, "train", lost)
            wait_for(lambda: all(c.runtime.redis.llen(q) == 0 for q in queue_lists("train"))
                     and not _unacked_ids(c), 30, "the late copy consumed")
            wait_for(lambda: "resent in a newer chain" in c.logs(), 30, "the late copy skipped")
            assert c.runtime.tracker.runs(batch_id=handle.batch_id) == runs
            for m in models:
                assert _versions(c, m) == [1]
            assert c.runtime.tracker.model_states(handle.batch_id, models) == after


def test_dead_worker_whose_message_is_lost_too_is_resent_from_its_last_completed_stage(
        tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    spec = {"name": "gone", "pack": 1, "models": [
        classifier("gone", FAULTY, started=str(started), wait_for=str(release)), classifier("kept")]}
    with cluster(tmp_path, **PRODUCTION) as c:
        handle = c.submit(spec)
        # Given a worker SIGKILLed in the gone model's train stage
        _, ppid, _ = wait_lines(started, 1)[0]
        victim = next(p for p in c.workers.procs if p.pid == int(ppid))
        os.killpg(victim.pid, signal.SIGKILL)
        killed_at = time.time()
        victim.wait(10)
        # ... and its unacked message lost too (a failover that lost the delivery)
        r = c.runtime.redis
        tag = next(t for t, raw in r.hgetall("unacked").items()
                   if json.loads(raw)[0]["headers"]["argsrepr"].startswith("train model=gone "))
        r.hdel("unacked", tag)
        r.zrem("unacked_index", tag)
        release.touch()
        # Then, no message for it anywhere, the sweeper resends it from preprocess's output
        status = handle.wait(timeout=BOUND + 30)
        state = c.runtime.tracker.model_states(handle.batch_id, ["gone"])["gone"]
        print(f"\nSIGKILL + lost message -> promoted {float(state['done_deploy']) - killed_at:.1f}s "
              f"(2 x lease_ttl {c.settings.lease_ttl} + stall_timeout {c.settings.stall_timeout}); "
              f"load {os.getloadavg()[0]:.1f}")
        assert status.counts == {"promoted": 2}
        assert "resent" in state["recovered"] and "no message for train" in state["recovered"]
        # ... and `status` says so, for that model only
        shown = invoke(["status", handle.batch_id], c.settings.to_env())
        assert shown.exit_code == 0, shown.output
        assert f"recovered gone: {state['recovered']}" in shown.stdout
        assert "recovered kept" not in shown.stdout
        as_json = invoke(["status", handle.batch_id, "--json"], c.settings.to_env())
        assert {r["name"]: r["recovered"] for r in json.loads(as_json.stdout)["rows"]} == {
            "gone": state["recovered"], "kept": ""}
        assert _versions(c, "gone") == [1]
        runs = c.runtime.tracker.runs(batch_id=handle.batch_id, model="gone")
        # One run a stage: preprocess was not run again (its output was the resent message);
        # its fit was computed once (the killed fit recorded nothing).
        assert [(r["stage"], r["status"]) for r in runs] == [
            (stage, "succeeded") for stage in ("preprocess", "train", "evaluate", "deploy")]
        assert not runs[1]["cache_hit"]


def test_a_stage_copy_that_begins_after_its_model_deployed_leaves_it_deployed(tmp_path: Path) -> None:
    # Celery sends a chain's next task before it stores the task's own result: a redelivered
    # copy of a stage may begin after the chain deployed the model yet find no result of its
    # task. Seen in CI as a model left 'running' (a fused pack's copy, visibility timeout 2 s).
    spec = {"name": "late", "pack": 1, "models": [classifier("late-tree")]}
    with cluster(tmp_path, workers=1, **PRODUCTION) as c:
        handle = c.submit(spec)
        assert handle.wait(timeout=60).counts == {"promoted": 1}
        r = c.runtime.redis
        before = c.runtime.tracker.model_states(handle.batch_id, ["late-tree"])
        runs = c.runtime.tracker.runs(batch_id=handle.batch_id)
        _, train, evaluate, _ = json.loads(r.hget(keys.batch_tasks(handle.batch_id), "late-tree"))
        message = c.app.backend.get_task_meta(train)["result"]
        # Given evaluate's result not stored yet (as in that window), when a copy of it arrives
        c.app.backend.forget(evaluate)
        c.app.send_task("modelfleet.evaluate", args=(message,), task_id=evaluate)
        # Then the copy skips the model: its state, runs and versions stay as they were
        wait_for(lambda: "skipped late-tree, already deployed" in c.logs(), 30, "the late copy skipped")
        assert c.runtime.tracker.model_states(handle.batch_id, ["late-tree"]) == before
        assert c.runtime.tracker.runs(batch_id=handle.batch_id) == runs
        assert _versions(c, "late-tree") == [1]
        assert handle.status().counts == {"promoted": 1}


@pytest.mark.parametrize("delivered_after_begin", [False, True])
def test_the_sweeper_hands_back_only_a_message_its_dead_holder_still_holds(
        tmp_path: Path, delivered_after_begin: bool) -> None:
    # A pool child killed mid-stage: Celery puts its message back itself, and a busy worker may
    # take it and not begin for seconds (its fresh pool child starting). Restoring it then, from
    # the dead holder's lapsed lease, made a second copy: both counted as deliveries, so a
    # model that kills its worker failed after two real tries of three. No workers here: the
    # sweeper alone, on a Redis holding that state.
    with RedisServer(tmp_path / "redis") as server:
        settings = Settings(artifact_root=tmp_path / "artifacts", lease_ttl=2.0).with_broker(server.url)
        runtime, app = Runtime.from_settings(settings), create_app(settings)
        r = runtime.redis
        task, began = "task-1", time.time() - 10
        ref = keys.model_ref("b1", "m1")
        r.hset(keys.batch_model("b1", "m1"), mapping={
            "status": "running", "stage": "train", "task": task, "updated": began, "rev": 1})
        r.zadd(keys.RUNNING, {ref: began})
        r.hset(keys.SUSPECTS, task, began)  # seen dead once already: this sweep confirms it
        body = {"headers": {"id": task}, "properties": {"delivery_tag": "tag-1", "delivery_info": {
            "exchange": "", "routing_key": "train"}}, "body": ""}
        r.hset("unacked", "tag-1", json.dumps([body, "", "train"]))
        r.zadd("unacked_index", {"tag-1": began + (5 if delivered_after_begin else -1)})
        try:
            Sweeper(app, runtime).sweep()
            queued = sum(r.llen(name) for name in queue_lists("train"))
            if delivered_after_begin:  # its new holder's: left alone, no second copy
                assert r.hexists("unacked", "tag-1") and queued == 0
                assert r.hget(keys.batch_model("b1", "m1"), "status") == "running"
            else:  # still the dead holder's: back in its queue, the model queued
                assert not r.hexists("unacked", "tag-1") and queued == 1
                assert r.hget(keys.batch_model("b1", "m1"), "status") == "queued"
        finally:
            app.close()
            r.close()
