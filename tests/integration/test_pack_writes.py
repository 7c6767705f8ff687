"""A pack's records go to Redis in one trip per stage: merged writes keep their replies and
scripts in order, and two members of one pack that share a cached step do not wait on each other."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import leaderboard
from producer.handle import BatchHandle, _Finished
from tests.conftest import load, run_batch
from workers.runtime import Runtime
from workers.settings import STAGES, Settings
from workers.writes import Writes

pytestmark = pytest.mark.integration


def test_writes_taken_into_one_trip_keep_each_reply_and_redo_each_forgotten_script(
        runtime: Runtime, uniq: str) -> None:
    echo = runtime.redis.register_script("return ARGV[1]")
    kind = f"pack-writes-{uniq}"
    together = runtime.tracker.writes()
    for member in ("a", "b"):
        writes = Writes(runtime.redis, runtime.tracker.journal, earlier=together)
        key = f"test:{uniq}:{member}"
        writes.pipe.hset(key, "member", member)
        writes.pipe.hgetall(key)
        writes.record_reply(lambda reply, key=key: {"kind": kind, "key": key, "reply": reply})
        writes.script(echo, [key], [f"echo-{member}"])
        writes.record({"kind": kind, "key": key, "queued": True})
        together.take(writes)
    runtime.redis.script_flush()  # as after a Redis restart: both scripts must be redone

    replies = together.execute()

    assert replies[1] == {"member": "a"} and replies[2] == "echo-a"
    assert replies[4] == {"member": "b"} and replies[5] == "echo-b"
    journaled = [r for r in runtime.tracker.journal.replay(kind)]
    assert [(r["key"].rsplit(":", 1)[1], r.get("reply")) for r in journaled] == [
        ("a", None), ("b", None), ("a", {"member": "a"}), ("b", {"member": "b"})]
    assert len(together) == 0 and together.execute() == []  # sent once, then empty


def test_counters_of_a_packs_members_are_summed_into_one_command_each_after_their_replies(
        runtime: Runtime, uniq: str) -> None:
    costs, stats = f"test:{uniq}:costs", f"test:{uniq}:stats"
    together = runtime.tracker.writes()
    for member, seconds in (("a", 0.25), ("b", 0.5), ("failed", 4.0)):
        writes = Writes(runtime.redis, runtime.tracker.journal, earlier=together)
        writes.pipe.hset(f"test:{uniq}:{member}", "member", member)
        writes.count(costs, "small|train|s", seconds)
        writes.count(costs, "small|train|n", 1)
        writes.count(stats, "misses", 1)
        if member != "failed":  # a failed member's writes are dropped, its counts with them
            together.take(writes)

    replies = together.execute()

    assert replies[:2] == [1, 1]  # the members' own commands keep their places
    assert len(replies) == 2 + 3  # then one command per counter, not one per member
    assert runtime.redis.hgetall(costs) == {"small|train|s": "0.75", "small|train|n": "2"}
    assert runtime.redis.hgetall(stats) == {"misses": "2"}
    assert len(together) == 0 and together.execute() == []


def test_a_fused_packs_members_with_one_preprocess_step_compute_it_once_without_waiting_on_themselves(
        tmp_path: Path, settings: Settings, workers: Any, app: Any, runtime: Runtime, uniq: str) -> None:
    # 32 small trees on the same rows with the same split: one preprocess cache key (a seed of
    # this test's own: no other test's batch cached it). Under `pack: auto` they ride fused packs
    # of 4 (4 chains for each of the 2 live slots), whose records are sent together: the first
    # member's lease is released by records not sent yet when the second one asks for it.
    models = [{"name": f"tree{d}-{uniq}", "task": "classification",
               "dataset": {"kind": "sklearn", "name": "iris"},
               "preprocess": {"seed": int(uniq, 16)},
               "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier",
                             "params": {"max_depth": 3, "random_state": d}}} for d in range(32)]
    batch = load(tmp_path, {"name": f"shared-{uniq}", "pack": "auto", "models": models}, settings)

    handle, status = run_batch(batch, app, runtime, timeout=120)

    assert status.counts == {"promoted": 32}
    runs = [r for r in runtime.tracker.runs(batch_id=handle.batch_id) if r["status"] == "succeeded"]
    preprocess = [r for r in runs if r["stage"] == "preprocess"]
    assert sorted(r["cache_hit"] for r in preprocess) == [False] + [True] * 31
    # ... in fused packs: each task ran all four stages of its models, several models a task
    tasks = {r["task_id"] for r in runs}
    assert len(tasks) < 32
    assert all({r["stage"] for r in runs if r["task_id"] == t} == set(STAGES) for t in tasks)
    # Each model's state holds its stages' times: the leaderboard's compute, read without the runs.
    _, board = leaderboard.entries(runtime, handle.batch_id)
    assert len(board) == 32
    for entry in board:
        mine = [r["duration"] for r in runs if r["model"] == entry.name]
        assert len(mine) == 4 and entry.compute_seconds == pytest.approx(sum(mine), abs=1e-5)


def test_a_model_reaching_a_final_state_wakes_a_waiting_handle_at_once(runtime: Runtime, uniq: str) -> None:
    batch_id = f"finished-{uniq}"
    with _Finished(runtime.redis, batch_id) as finished:
        runtime.tracker.set_model_state(batch_id, "m-running", status="running")  # not final: no notice
        runtime.tracker.set_model_state(batch_id, "m-done", status="failed", error="boom")
        started = time.monotonic()
        finished.pause(poll=60)  # returns on the notice, not after the poll
        assert time.monotonic() - started < 30
        assert finished.pubsub is not None  # still subscribed: the next pause listens too
    assert finished.pubsub is None


def test_the_last_waiting_models_notice_ends_the_gap_between_polls(runtime: Runtime, uniq: str) -> None:
    batch_id = f"gap-{uniq}"
    with _Finished(runtime.redis, batch_id) as finished:
        runtime.tracker.set_model_state(batch_id, "m-a", status="promoted")
        started = time.monotonic()
        finished.pause(poll=60, gap=1.0, waiting={"m-a", "m-b"})  # m-b goes on: the gap is kept
        assert time.monotonic() - started >= 1.0
        for model in ("m-a", "m-b"):
            runtime.tracker.set_model_state(batch_id, model, status="promoted")
        started = time.monotonic()
        finished.pause(poll=60, gap=60, waiting={"m-a", "m-b"})  # both finished: poll now
        assert time.monotonic() - started < 30


def test_a_wait_reads_settled_models_once_and_notices_one_reset_before_calling_the_batch_done(
        runtime: Runtime, uniq: str) -> None:
    batch_id = f"settled-{uniq}"
    runtime.tracker.create_batch({"id": batch_id, "name": "settled", "models": ["a", "b"],
                                  "created": time.time()}, ["a", "b"])
    handle = BatchHandle(batch_id, runtime)
    runtime.tracker.set_model_state(batch_id, "a", status="promoted", done_deploy=time.time())
    runtime.tracker.set_model_state(batch_id, "b", status="running", stage="train")
    settled: dict[str, dict[str, str]] = {}
    first = handle.progress(settled)
    assert set(settled) == {"a"} and first.counts == {"promoted": 1, "running": 1}
    assert first.stages_done["deploy"] == 1 and not first.done

    # `retry` resets the settled model while the other one finishes: the poll does not read
    # "a" again, but the wait checks the whole status before it calls the batch done.
    runtime.tracker.reset_models(batch_id, ["a"])
    runtime.tracker.set_model_state(batch_id, "b", status="registered")
    assert handle.progress(settled).done
    with pytest.raises(TimeoutError, match="queued"):
        handle.wait(timeout=0.5, poll=0.05)

    runtime.tracker.set_model_state(batch_id, "a", status="promoted")
    final = handle.wait(timeout=30, poll=0.05)
    assert final.done and final.counts == {"promoted": 1, "registered": 1}


def test_a_notice_redis_refuses_costs_no_retry_of_records_already_stored(runtime: Runtime, uniq: str) -> None:
    user, password = f"nopublish-{uniq}", f"pw-{uniq}"
    # A real refusal: a Redis user that may do anything but publish.
    runtime.redis.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
                              commands=["+@all", "-publish"])
    try:
        where = runtime.redis.connection_pool.connection_kwargs
        client = redis.Redis(host=where["host"], port=where["port"], username=user, password=password,
                             decode_responses=True)
        writes = Writes(client, runtime.tracker.journal)
        key = f"test:{uniq}:notice"
        writes.pipe.hset(key, "status", "promoted")
        writes.notices.append((f"test:{uniq}:finished", "m"))

        writes.execute()  # does not raise: the records went, only the notice did not

        assert runtime.redis.hgetall(key) == {"status": "promoted"}
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.publish(f"test:{uniq}:finished", "m")  # the refusal the test relies on
        client.close()
    finally:
        runtime.redis.acl_deluser(user)
