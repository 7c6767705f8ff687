"""docker-compose.yml's own services, run as local processes: scale the worker to 3 and
submit the producer's batch.

The commands and environments come from the compose file itself (bench/compose_local.py
maps a container to a process), so this test and the file cannot drift. Redis is the
test's own redis-server with the password from the environment (requirepass is exercised),
the named volume a temp dir.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bench.compose_local import (
    ENV_EXAMPLE,
    REDIS_ENTRYPOINT,
    REPO,
    LocalCompose,
    load_compose,
    read_env_file,
    redis_config_value,
    settings_from_env,
    shell_redis_server,
)
from producer.local import RedisServer, find_redis_server, free_port, wait_for
from producer.spec import load_batch
from producer.status import batch_status
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import STAGES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

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
    redis_service = compose.services["redis"]
    _, config = shell_redis_server(redis_service["command"], redis_service["environment"])
    assert redis_config_value(config, "requirepass") == server.password
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
    # The spec the producer named, in the specs directory mounted at /specs.
    spec_path = compose.local_path("producer", compose.services["producer"]["command"][2])
    assert spec_path == compose.cwd / "examples" / "quickstart.yaml"
    expected = {m.name for m in load_batch(spec_path, settings).models}
    assert {r.name for r in status.rows} == expected
    assert status.counts == {"promoted": len(expected)}
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

    # A team's own spec and CSV: the producer's documented override picks a spec of the
    # specs directory (mounted at /specs), whose CSV path is relative to the data
    # directory (mounted at /data, the data root) that the workers read.
    own = LocalCompose(env={**compose.env, "MODELFLEET_SPEC": "stores.yaml"},
                       redis_address=compose.redis_address, volumes=compose.volumes,
                       log_dir=compose.log_dir)
    assert own.environment("worker", "w")["MODELFLEET_DATA_ROOT"] == str(REPO / "examples" / "data")
    done = own.run("producer", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    stores = next(b for b in runtime.tracker.list_batches() if b.startswith("stores-"))
    assert batch_status(runtime, stores).counts == {"promoted": 45}


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


def _k8s_redis() -> tuple[list[str], dict[str, str]]:
    from tests.support.k8s import env_of, of_kind

    (statefulset,) = of_kind("StatefulSet").values()
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return container["command"], env_of(container)


def _compose_redis(env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    service = load_compose(env)["services"]["redis"]
    return service["command"], {k: str(v) for k, v in service["environment"].items()}


@pytest.mark.parametrize("source", ["compose", "k8s"])
def test_redis_command_takes_its_password_from_the_environment_not_the_command_line(
        source: str, tmp_path: Path) -> None:
    """The redis container's own command, run by sh as in the container (the image's
    entrypoint and binary, a free loopback port and a memory cap are local stand-ins): it requires
    the password, which is on no process's command line, and SIGTERM reaches redis-server."""
    password = secrets.token_hex(16)
    if source == "compose":
        command, env = _compose_redis({**read_env_file(ENV_EXAMPLE), "MODELFLEET_REDIS_PASSWORD": password,
                                       "MODELFLEET_REDIS_MAXMEMORY": "64mb"})
    else:
        command, env = _k8s_redis()  # the Secret's values through the container's env
        env = {**env, "REDIS_PASSWORD": password, "REDISCLI_AUTH": password}
    assert password not in " ".join(command)
    port = free_port()
    script = command[2].replace(f"exec {' '.join(REDIS_ENTRYPOINT)} ",
                                f"exec {find_redis_server()} --port {port} --bind 127.0.0.1 ", 1)
    assert script != command[2]
    proc = subprocess.Popen(["sh", "-c", script], env={"PATH": os.environ["PATH"], **env}, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        client: Any = redis.Redis(port=port, password=password, socket_connect_timeout=0.5,
                                  decode_responses=True)

        def answers() -> bool:
            assert proc.poll() is None, f"redis exited with {proc.returncode}"
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_for(answers, 15, "the redis container command")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as anonymous:
            anonymous.sendall(b"PING\r\n")
            assert anonymous.recv(100).startswith(b"-NOAUTH"), "redis answered without the password"
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        # sh exec'd redis-server: the same process, so `docker stop`'s SIGTERM reaches it.
        assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "redis-server"
        for pid in [p.name for p in Path("/proc").iterdir() if p.name.isdigit()]:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            assert password.encode() not in cmdline, f"the password is on the command line of {pid}"
        client.close()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
