"""After a Redis reconnect, a busy worker reserves no message beyond its slots.

Celery's prefetch window lives on the broker channel; the channel after a reconnect
does not count the message still running from before it, so a busy 1-slot worker
took one more ("Skipping prefetch count reduction" in its log), and that model
waited behind the running fit while another worker idled.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError

from bench.teardown import close_app
from producer.local import wait_for
from producer.submit import submit
from tests.support.cluster import FAULTY, Cluster, classifier, cluster, wait_lines
from workers.app import create_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _pings(c: Cluster) -> bool:
    try:
        return bool(c.runtime.redis.ping())
    except redis.exceptions.ConnectionError:
        return False


def _answer(app: Any, names: list[str]) -> bool:
    try:
        replies = app.control.ping(destination=names, timeout=0.5) or []
    except (redis.exceptions.ConnectionError, OperationalError, OSError):
        return False  # Redis is still coming back
    return {node for reply in replies for node in reply} >= set(names)


def test_after_a_redis_restart_a_busy_one_slot_worker_reserves_no_second_message(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    gate = {"name": "busy", "models": [classifier("gate", FAULTY, started=str(started),
                                                  wait_for=str(release))]}
    after = {"name": "after", "models": [classifier(f"m{i}", max_depth=i + 1) for i in range(3)]}
    # Long visibility timeout: nothing is redelivered during the test; the gate is held on purpose.
    with cluster(tmp_path, workers=2, visibility_timeout=120) as c:
        try:
            _check(c, tmp_path, gate, after)
        finally:
            release.touch()  # never leave the gate's fit holding a worker's warm shutdown


def _check(c: Cluster, tmp_path: Path, gate: dict[str, Any], after: dict[str, Any]) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    gate_handle = c.submit(gate)
    _, ppid, _ = wait_lines(started, 1)[0]
    busy = next(i for i, p in enumerate(c.workers.procs) if p.pid == int(ppid))
    busy_name, idle_name = c.workers.names[busy], c.workers.names[1 - busy]

    c.redis.stop()  # both workers lose the connection; the gate's fit runs on
    c.redis.start()  # same port and AOF
    wait_for(lambda: _pings(c), 30, "Redis answering again")
    app = create_app(c.settings)  # a fresh producer connection after the restart
    try:
        # Both workers consume again: they answer a ping (Tasks starts before the ping handler).
        wait_for(lambda: _answer(app, c.workers.names), 60, "both workers reconnected", interval=0.2)
        t0 = time.monotonic()
        handle = submit(c.load(after), app, c.runtime)
        try:
            status = handle.wait(timeout=45)
        except TimeoutError:
            reserved = app.control.inspect(destination=[busy_name], timeout=2).reserved() or {}
            held = {node: [t["name"] for t in tasks] for node, tasks in reserved.items()}
            tails = {name: c.log(i)[-3000:] for i, name in enumerate(c.workers.names)}
            pytest.fail(f"the batch waited behind the busy worker, which holds {held}; logs: {tails}")
        took = time.monotonic() - t0
    finally:
        close_app(app)
    print(f"\n3 models after a Redis restart, one worker busy: {took:.1f}s")

    assert status.counts == {"promoted": 3}
    assert not gate_handle.status().done, "the gate's fit was still running all along"
    runs = c.runtime.tracker.runs(batch_id=handle.batch_id)
    assert runs and {r["worker"] for r in runs} == {idle_name}, "the busy worker took a stage"
    release.touch()
    assert gate_handle.wait(timeout=60).counts == {"promoted": 1}
    trains = [r for r in c.runtime.tracker.runs(batch_id=gate_handle.batch_id) if r["stage"] == "train"]
    assert [r["worker"] for r in trains] == [busy_name]
