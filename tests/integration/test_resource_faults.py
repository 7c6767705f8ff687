"""Resources running out mid-batch (issue 19): the artifact root's disk and Redis' memory.

Real redis-server, real workers, a real full file system (a small tmpfs, as root) and a
real `maxmemory` refusal; the tests wait on conditions, never on sleeps.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from producer.local import wait_for
from tests.support.cluster import FAULTY, classifier, cluster, wait_lines
from tests.support.full import fill, small_tmpfs

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_full_artifact_root_retries_the_stage_and_the_batch_finishes_once_there_is_space(
        tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    spec = {"name": "full-disk", "models": [
        classifier("held", FAULTY, started=str(started), wait_for=str(release)),
        *(classifier(f"tree-{i}", max_depth=i + 1) for i in range(3))]}
    with small_tmpfs(tmp_path / "artifacts", "16m") as root, cluster(tmp_path, artifact_root=root) as c:
        # Given a model in its fit when the artifact root fills up
        handle = c.submit(spec)
        wait_lines(started, 1)
        filler = fill(root)
        release.touch()

        # Then its train stage fails transiently (retried, not failed), saying why
        def held() -> dict[str, str]:
            return c.runtime.tracker.model_states(handle.batch_id, ["held"])["held"]

        wait_for(lambda: held().get("status") == "retrying", 60, "the stage's retry")
        assert "RootFull" in held()["error"] and "no space left on the artifact root" in held()["error"]
        assert held()["status"] != "failed"
        # And nothing half written has a name: no temp file left, every object its digest
        assert not [p for p in root.rglob(".tmp-*")]
        objects = [p for p in (root / "objects").rglob("*") if p.is_file()]
        assert objects and all(hashlib.sha256(p.read_bytes()).hexdigest() == p.parent.name + p.name
                               for p in objects)

        # When there is space again, the batch finishes: every model once
        filler.unlink()
        status = handle.wait(timeout=150)
        assert status.counts == {"promoted": 4}, status.rows
        for name in ("held", "tree-0", "tree-1", "tree-2"):
            assert [v["version"] for v in c.runtime.registry.versions(name)] == [1]
        trains = [r for r in c.runtime.tracker.runs(batch_id=handle.batch_id) if r["stage"] == "train"
                  and r["model"] == "held"]
        assert [r["status"] for r in trains].count("succeeded") == 1
        assert any("RootFull" in str(r["error"]) for r in trains if r["status"] == "failed")
