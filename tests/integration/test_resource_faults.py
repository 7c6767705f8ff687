"""Resources running out mid-batch (issue 19): the artifact root's disk and Redis' memory.

Real redis-server, real workers, a real full file system (a small tmpfs, as root) and a
real `maxmemory` refusal; the tests wait on conditions, never on sleeps.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from producer.local import RedisServer, wait_for
from tests.conftest import REPO, write_spec
from tests.support.cluster import FAULTY, Cluster, classifier, cluster, wait_lines
from tests.support.full import fill, small_tmpfs
from workers import keys
from workers.backpressure import full_is_transient, is_full

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
        # And nothing half written has a name: every object is its digest. (Another model's stage
        # may be mid-write right now, its temp file not yet removed: temp files are counted below.)
        objects = [p for p in (root / "objects").rglob("*") if p.is_file() and not p.name.startswith(".tmp-")]
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
        # And no write the full root refused left its temp file behind
        wait_for(lambda: not list(root.rglob(".tmp-*")), 30, "no temp file left on the artifact root")


def _refused(r: redis.Redis) -> int:
    """How many commands Redis has refused for memory (INFO errorstats)."""
    return int(r.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


def _cli(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "producer", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=180, env={**os.environ, **c.settings.to_env(), "COLUMNS": "200"})


def test_a_full_redis_mid_batch_makes_workers_wait_and_the_batch_finishes_once_memory_is_freed(
        tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    spec = {"name": "full-redis", "models": [
        classifier("held", FAULTY, started=str(started), wait_for=str(release)),
        classifier("broken", FAULTY, fail="value"),
        *(classifier(f"tree-{i}", max_depth=i + 1) for i in range(3))]}
    with cluster(tmp_path) as c:
        r = c.runtime.redis
        # Given Redis full (noeviction, maxmemory below what it uses) while a model is in its fit
        handle = c.submit(spec)
        wait_lines(started, 1)
        before = _refused(r)
        r.config_set("maxmemory", 1)
        release.touch()

        # Then the workers' writes are refused, and they wait instead of dying or dropping work
        wait_for(lambda: _refused(r) > before + 20, 60, "writes refused by the full Redis")
        wait_for(lambda: "Redis is full (used memory above maxmemory)" in c.logs(), 60, "workers waiting")
        assert all(p.poll() is None for p in c.workers.procs), c.logs()[-3000:]
        # And `status` answers, saying why nothing moves
        shown = _cli(c, "status", handle.batch_id, "--json")
        assert shown.returncode == 0, shown.stderr
        assert "Redis is full" in shown.stderr and "refuses writes" in shown.stderr
        # And `submit` refuses with one line, exit 1, and writes nothing
        batches = r.zcard(keys.BATCHES)
        other = write_spec(tmp_path, {"name": "later", "models": [classifier("later-tree")]}, "later.yaml")
        refused = _cli(c, "submit", str(other))
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "Redis is full" in refused.stderr and "nothing was submitted" in refused.stderr
        assert "Traceback" not in refused.stderr and r.zcard(keys.BATCHES) == batches
        assert not r.keys("*later-tree*")

        # When memory is freed, the batch finishes: every model once, nothing lost
        r.config_set("maxmemory", 0)
        status = handle.wait(timeout=150)
        assert status.counts == {"promoted": 4, "failed": 1}, status.rows
        for name in ("held", "tree-0", "tree-1", "tree-2"):
            assert [v["version"] for v in c.runtime.registry.versions(name)] == [1]
        # And `retry` works: the failed model is resent (and fails again, deterministically)
        retried = _cli(c, "retry", handle.batch_id, "--wait", "--timeout", "120")
        assert retried.returncode == 1 and "retrying 1 model(s)" in retried.stdout, retried.stdout
        assert handle.wait(timeout=60).counts == {"promoted": 4, "failed": 1}


def test_a_full_redis_refusing_a_script_is_raised_as_the_transient_out_of_memory_error(
        tmp_path: Path) -> None:
    # The slot script (max_parallel) and the registry's scripts write inside Lua: a full Redis
    # refuses them with a ResponseError, which a stage would take for its model's failure.
    with RedisServer(tmp_path / "redis") as server:
        r = redis.Redis.from_url(server.url)
        writes = r.register_script("return redis.call('SET', KEYS[1], ARGV[1])")
        r.config_set("maxmemory", 1)
        try:
            with pytest.raises(redis.exceptions.ResponseError) as plain:
                writes(keys=["k"], args=["v"])
            with pytest.raises(redis.exceptions.OutOfMemoryError), full_is_transient():
                writes(keys=["k"], args=["v"])
            with pytest.raises(redis.exceptions.ResponseError) as other, full_is_transient():
                r.execute_command("HSET", "no-field")  # any other refusal goes up as it was
        finally:
            r.config_set("maxmemory", 0)
        assert is_full(plain.value) and not isinstance(other.value, redis.exceptions.OutOfMemoryError)
