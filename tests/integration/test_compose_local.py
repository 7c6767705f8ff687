"""docker-compose.yml's own services, run as local processes: scale the worker to 3 and
submit the producer's batch.

The commands and environments come from the compose file itself (tests/compose_local.py
maps a container to a process), so this test and the file cannot drift. Redis is the
test's own redis-server with the password from the environment (requirepass is exercised),
the named volume a temp dir.
"""

from __future__ import annotations

import base64
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.local import RedisServer, free_port, wait_for
from producer.spec import load_batch
from producer.status import batch_status
from tests.compose_local import ENV_EXAMPLE, LocalCompose, read_env_file, settings_from_env
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import STAGES

pytestmark = pytest.mark.integration

SCALE = 3


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[LocalCompose, RedisServer]]:
    # .env.example's values, with real random passwords as an operator's .env would have.
    env = {**read_env_file(ENV_EXAMPLE), "MODELFLEET_REDIS_PASSWORD": secrets.token_hex(16),
           "MODELFLEET_FLOWER_PASSWORD": secrets.token_hex(8)}
    with RedisServer(tmp_path / "redis", password=env["MODELFLEET_REDIS_PASSWORD"]) as server:
        compose = LocalCompose(env=env, redis_address=f"{server.host}:{server.port}",
                               volumes={"artifacts": tmp_path / "artifacts"},
                               log_dir=tmp_path / "logs", ports={5555: free_port()})
        try:
            yield compose, server
        finally:
            compose.stop()


def test_compose_services_complete_a_batch_across_three_workers(
        stack: tuple[LocalCompose, RedisServer]) -> None:
    compose, server = stack
    # The redis service's password is the one our stand-in requires; the image's ENV applies.
    redis_argv = compose.services["redis"]["command"]
    assert redis_argv[redis_argv.index("--requirepass") + 1] == server.password
    assert compose.environment("worker", "w")["OMP_NUM_THREADS"] == "1"
    # Given: `docker compose up --scale worker=3` and flower, as local processes.
    hostnames = [compose.start("worker", replica=i)[1] for i in range(1, SCALE + 1)]
    nodes = {compose.node_name(h) for h in hostnames}
    compose.start("flower")
    settings = settings_from_env(compose.environment("producer", "probe"))
    assert settings.broker().endswith(f"@{server.host}:{server.port}/0")
    app = create_app(settings)
    answered: set[str] = set()

    def all_workers_answer() -> bool:
        for proc in compose.procs:
            assert proc.poll() is None, f"a service exited with {proc.returncode}; see {compose.log_dir}"
        for reply in app.control.ping(timeout=0.5) or []:
            answered.update(reply)
        return nodes <= answered

    try:
        wait_for(all_workers_answer, 120, f"{SCALE} compose workers", interval=0.5)
        assert answered == nodes, "each replica should be its own Celery node"

        # When: `docker compose --profile producer run --rm producer`.
        done = compose.run("producer", timeout=600)
    finally:
        app.close()

    # Then: the producer exits 0 and every model of its spec is deployed ...
    assert done.returncode == 0, done.stdout + done.stderr
    runtime = Runtime.from_settings(settings)
    batches = runtime.tracker.list_batches()
    assert len(batches) == 1 and batches[0] in done.stdout
    status = batch_status(runtime, batches[0])
    spec_path = compose.services["producer"]["command"][2]
    expected = {m.name for m in load_batch(compose.cwd / spec_path, settings).models}
    assert {r.name for r in status.rows} == expected
    assert status.counts == {"deployed": len(expected)}
    assert all(runtime.registry.resolve(f"{name}@production") for name in expected)
    # ... with work done by all three workers, every stage tracked, artifacts on the volume.
    runs = runtime.tracker.runs(batch_id=batches[0])
    assert len(runs) == len(expected) * len(STAGES)
    assert {r["worker"] for r in runs} == nodes, "all 3 replicas should have run stages"
    assert any((compose.volumes["artifacts"]).rglob("*.json"))

    # Flower, from its own compose command: basic auth from the environment, sees the 3 workers.
    url = f"http://127.0.0.1:{compose.ports[5555]}/api/workers?refresh=1"
    user, password = compose.env["MODELFLEET_FLOWER_USER"], compose.env["MODELFLEET_FLOWER_PASSWORD"]

    def flower_lists_workers() -> bool:
        try:
            code, body = get(url, (user, password))
        except OSError:  # not listening yet
            return False
        return code == 200 and nodes <= set(json.loads(body))

    wait_for(flower_lists_workers, 90, "flower listing the 3 workers", interval=0.5)
    assert get(url, None)[0] == 401
    assert get(url, (user, "wrong"))[0] == 401


def get(url: str, auth: tuple[str, str] | None) -> tuple[int, bytes]:
    """GET with optional basic auth; (status, body), also for error statuses."""
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
