"""`modelfleet cancel BATCH` against real workers: what has not started never runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from producer.local import LocalWorkers
from tests.support.cluster import FAULTY, classifier, cluster, wait_lines

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_cancel_revokes_queued_models_and_leaves_other_batches_alone(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    doomed = {"name": "doomed", "models": [
        classifier("gate", FAULTY, started=str(started), wait_for=str(release)),
        *(classifier(f"d{i}", max_depth=i + 1) for i in range(6))]}
    other = {"name": "other", "models": [classifier(f"o{i}", max_depth=i + 1, random_state=7)
                                         for i in range(2)]}
    # One worker, one slot: while the gate trains, everything else waits in the queues.
    with cluster(tmp_path, workers=1, visibility_timeout=60) as c:
        handle = c.submit(doomed)
        wait_lines(started, 1)
        other_handle = c.submit(other)

        env = {**os.environ, **c.settings.to_env()}
        result = subprocess.run([sys.executable, "-m", "producer", "cancel", handle.batch_id, "--json"],
                                env=env, capture_output=True, text=True, timeout=120)
        cancelled_at = time.time()
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        # A worker started after the cancel never heard the revoke (workers start without
        # mingle, which would have asked their neighbours): it takes the queued messages
        # while the first worker is busy, the doomed ones first (they were queued first).
        with LocalWorkers(c.settings, 1, tmp_path / "late-logs", name_prefix="late") as late:
            other_status = other_handle.wait(timeout=120)
            release.touch()
            status = handle.wait(timeout=120)
        late_log = "".join(p.read_text(errors="replace") for p in late.log_dir.glob("*.log"))

        # The report accounts for every model; the gate was running, the rest had not started.
        names = [m["name"] for m in doomed["models"]]  # type: ignore[index]
        assert sorted(report["revoked"] + report["stopping"] + list(report["finished"])) == sorted(names)
        assert report["stopping"] == ["gate"] and report["revoked"]
        # The batch ends, with cancelled models; finished ones (if any) stay deployed.
        assert status.done and set(status.counts) <= {"cancelled", "promoted"}
        rows = {r.name: r for r in status.rows}
        assert rows["gate"].status == "cancelled"
        assert all(rows[n].status == "cancelled" for n in report["revoked"])
        for name, state in report["finished"].items():
            assert state == "promoted" == rows[name].status
            assert len(c.runtime.registry.versions(name)) == 1
        # Nothing of the cancelled batch started after the cancel; the gate's stage finished.
        runs = c.runtime.tracker.runs(batch_id=handle.batch_id)
        assert all(r["started"] < cancelled_at for r in runs)
        gate_runs = [(r["stage"], r["status"]) for r in runs if r["model"] == "gate"]
        assert ("train", "succeeded") in gate_runs and not any(s == "evaluate" for s, _ in gate_runs)
        assert not any(r["model"] in report["revoked"] for r in runs)
        # The late worker opened the revoked tasks (it knew no revoked ids) and the batch's
        # cancelled flag stopped each model before any work: no run above, no "Discarding".
        for name in report["revoked"]:
            assert f"skipped {name}, its batch was cancelled" in late_log, late_log[-3000:]
        assert "Discarding revoked task" not in late_log and "mingle" not in late_log
        # The rest of the platform is unaffected.
        assert other_status.counts == {"promoted": 2}
