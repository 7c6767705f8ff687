"""Faults that must lose nothing: killed workers and pool children, poison tasks,
transient versus deterministic errors. Each test owns its Redis and workers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.cluster import FAULTY, classifier, cluster, lines, wait_lines

pytestmark = pytest.mark.integration


def test_sigkilled_worker_loses_no_model_and_deploys_each_once(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    gate = classifier("gate", FAULTY, started=str(started), wait_for=str(release))
    spec = {"name": "killed", "models": [gate, *(classifier(f"m{i}", max_depth=i + 1)
                                                 for i in range(3))]}
    with cluster(tmp_path) as c:
        handle = c.submit(spec)
        # Given the gate model is training on one worker
        pid, ppid, _ = wait_lines(started, 1)[0]
        victim = next(p for p in c.workers.procs if p.pid == int(ppid))
        # When that worker's whole process tree is SIGKILLed
        os.killpg(victim.pid, signal.SIGKILL)
        killed_at = time.time()
        victim.wait(10)
        release.touch()
        status = handle.wait(timeout=120)
        # Then the other worker picks the task up after the visibility timeout
        second = wait_lines(started, 2)[1]
        recovered_after = float(second[2]) - killed_at
        print(f"\nrecovered a SIGKILLed worker's task after {recovered_after:.1f}s "
              f"(visibility_timeout={c.settings.visibility_timeout}, "
              f"restore_interval={c.settings.restore_interval})")

        assert status.counts == {"deployed": 4}
        assert int(second[1]) != victim.pid
        for model in ("gate", "m0", "m1", "m2"):
            assert [v["version"] for v in c.runtime.registry.versions(model)] == [1]
        trains = c.runtime.tracker.runs(batch_id=handle.batch_id, model="gate")
        assert [r["status"] for r in trains if r["stage"] == "train"] == ["succeeded"]


def test_killed_pool_child_is_retried_and_poison_task_fails_bounded(tmp_path: Path) -> None:
    once_started, always_started = tmp_path / "once", tmp_path / "always"
    spec = {"name": "oom", "models": [
        classifier("dies-once", FAULTY, started=str(once_started), die="once",
                   die_flag=str(tmp_path / "died")),
        classifier("dies-always", FAULTY, started=str(always_started), die="always"),
        classifier("healthy", max_depth=2)]}
    with cluster(tmp_path, max_deliveries=3) as c:
        handle = c.submit(spec)
        status = handle.wait(timeout=150)
        rows = {r.name: r for r in status.rows}

        # A pool child killed once (as the OOM killer does): the task is redelivered and succeeds.
        assert rows["dies-once"].status == "deployed" and len(lines(once_started)) == 2
        # One that kills its pool child every time fails after max_deliveries tries, not forever.
        assert rows["dies-always"].status == "failed" and rows["dies-always"].stage == "train"
        assert "TooManyDeliveries" in rows["dies-always"].error
        assert len(lines(always_started)) == c.settings.max_deliveries
        assert rows["healthy"].status == "deployed"
        # The workers themselves survived: both still answer.
        assert all(p.poll() is None for p in c.workers.procs)


def test_transient_errors_retry_and_deterministic_errors_fail_at_once(tmp_path: Path) -> None:
    counter = tmp_path / "calls"
    spec = {"name": "errors", "models": [
        classifier("flaky", FAULTY, fail="connection", fail_times=2, counter=str(counter)),
        classifier("broken", FAULTY, fail="value")]}
    with cluster(tmp_path) as c:
        handle = c.submit(spec)
        status = handle.wait(timeout=120)
        rows = {r.name: r for r in status.rows}
        runs = c.runtime.tracker.runs(batch_id=handle.batch_id)

        def trains(model: str) -> list[dict[str, object]]:
            return sorted((r for r in runs if r["model"] == model and r["stage"] == "train"),
                          key=lambda r: float(r["started"]))  # type: ignore[arg-type]

        # Transient: two ConnectionErrors, retried with backoff, then deployed.
        assert rows["flaky"].status == "deployed"
        flaky = trains("flaky")
        assert [r["status"] for r in flaky] == ["failed", "failed", "succeeded"]
        assert all("ConnectionError" in str(r["error"]) for r in flaky[:2])
        # Deterministic: one try, failed, the error in the model's status.
        assert rows["broken"].status == "failed" and rows["broken"].stage == "train"
        assert "ValueError" in rows["broken"].error and "bad data" in rows["broken"].error
        assert [r["status"] for r in trains("broken")] == ["failed"]
