"""A real Docker engine and Compose v2 for tests/integration/test_compose_engine.py.

A compose project per test (its own name, so its own containers, network and volumes),
driven with the `docker compose` commands a user types, its environment from
.env.example with fresh passwords and a free Flower port. The platform's state is read
through its own CLI (`modelfleet status/runs/models --json`) in a probe container of
the producer service, and Flower through its published port.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.compose_local import COMPOSE_FILE, ENV_EXAMPLE, REPO, read_env_file
from producer.local import free_port, wait_for

# The tag the tests build and run: not the user's modelfleet:latest. Kept between runs
# (the engine keeps it, and BuildKit its layers), so an unchanged tree builds in seconds.
IMAGE = "modelfleet:compose-test"
STANDINS = REPO / "deploy" / "standins" / "build.sh"
# One build at a time across pytest-xdist's processes: the first builds, the rest reuse.
BUILD_LOCK = Path("/tmp/modelfleet-compose-build.lock")


def engine_problem() -> str | None:
    """Why no Docker engine with Compose v2 can be used from here; None when one can."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, text=True, timeout=60)
    if info.returncode != 0 or not info.stdout.strip():
        return f"no Docker engine answers ({(info.stderr.strip().splitlines() or ['?'])[-1]})"
    if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60).returncode != 0:
        return "no Compose v2 (`docker compose`) plugin"
    return None


def require_engine() -> None:
    """Skip where no engine can be started; fail where .ci/run said it started one."""
    if os.environ.get("MODELFLEET_ENGINE_TESTS") == "later":
        pytest.skip(".ci/run runs the engine tests in a step of their own, after the suite")
    problem = engine_problem()
    if problem is None:
        return
    message = (f"{problem}: this test needs a running dockerd; a machine where dockerd runs must "
               "run it (.ci/run installs docker.io, starts dockerd and adds the Compose plugin)")
    if os.environ.get("MODELFLEET_DOCKER_ENGINE") == "1":
        pytest.fail(message)
    pytest.skip(message)


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def image_id(tag: str) -> str | None:
    done = docker("image", "inspect", "-f", "{{.Id}}", tag, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def dangling_images() -> set[str]:
    return set(docker("images", "-q", "--no-trunc", "-f", "dangling=true").stdout.split())


@dataclass
class Project:
    """One compose project: `docker compose -p NAME --env-file ENV -f FILE... ARGS`."""

    env_file: Path
    files: tuple[Path, ...] = (COMPOSE_FILE,)
    name: str = field(default_factory=lambda: f"mftest{uuid.uuid4().hex[:8]}")
    # Variables set in the shell that runs compose (they win over the env file, as for a user).
    shell: dict[str, str] = field(default_factory=dict)
    profiles: tuple[str, ...] = ()
    probe: str | None = None

    @classmethod
    def create(cls, directory: Path, files: tuple[Path, ...] = (COMPOSE_FILE,)) -> Project:
        """.env.example's values with real random passwords, a free Flower port, the test image."""
        env = {**read_env_file(ENV_EXAMPLE), "MODELFLEET_REDIS_PASSWORD": secrets.token_hex(16),
               "MODELFLEET_FLOWER_PASSWORD": secrets.token_hex(8),
               "MODELFLEET_S3_SECRET_ACCESS_KEY": secrets.token_hex(12),
               "MODELFLEET_FLOWER_PORT": str(free_port()), "MODELFLEET_IMAGE": IMAGE}
        directory.mkdir(parents=True, exist_ok=True)
        env_file = directory / ".env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        return cls(env_file=env_file, files=files)

    @property
    def env(self) -> dict[str, str]:
        return {**read_env_file(self.env_file), **self.shell}

    def compose(self, *args: str, timeout: float = 300,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        # The test runner's own MODELFLEET_* settings must not leak into the stack.
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MODELFLEET_", "COMPOSE_"))}
        files = [a for f in self.files for a in ("-f", str(f))]
        profiles = [a for p in self.profiles for a in ("--profile", p)]
        done = subprocess.run(
            ["docker", "compose", "-p", self.name, "--project-directory", str(REPO),
             "--env-file", str(self.env_file), *files, *profiles, *args],
            capture_output=True, text=True, timeout=timeout, env={**base, **self.shell}, cwd=REPO)
        if check and done.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
        return done

    def ids(self, service: str, all_states: bool = False) -> list[str]:
        """Full ids of the service's containers (running ones unless all_states)."""
        flags = ["-a"] if all_states else []
        return self.compose("ps", *flags, "-q", "--no-trunc", service).stdout.split()

    def nodes(self, service: str = "worker") -> dict[str, str]:
        """Celery node name -> container id: a container's hostname is its id's first 12 characters."""
        return {f"celery@{cid[:12]}": cid for cid in self.ids(service)}

    def start_probe(self) -> None:
        """A long-lived container of the producer service (its environment and mounts), to
        run `modelfleet` commands in without starting a container each time."""
        name = f"{self.name}-probe"
        self.compose("--profile", "producer", "run", "-d", "--no-deps", "--name", name,
                     "--entrypoint", "sleep", "producer", "infinity")
        self.probe = name

    def cli(self, *args: str, timeout: float = 120) -> Any:
        """`modelfleet ARGS --json` in the probe container, parsed."""
        assert self.probe is not None, "start_probe() first"
        return json.loads(docker("exec", self.probe, "modelfleet", *args, "--json", timeout=timeout).stdout)

    def submit(self, spec: str) -> str:
        """`modelfleet submit SPEC` (no --wait) in the probe; the batch id."""
        assert self.probe is not None, "start_probe() first"
        out = docker("exec", self.probe, "modelfleet", "submit", spec, timeout=120).stdout
        return batch_id_in(out)

    def status(self, batch_id: str) -> dict[str, Any]:
        return dict(self.cli("status", batch_id))

    def runs(self, batch_id: str) -> list[dict[str, Any]]:
        return list(self.cli("runs", "--batch", batch_id, "--limit", "10000"))

    def flower(self, path: str, auth: bool = True) -> tuple[int, Any]:
        """GET Flower's API on its published port, with or without the basic-auth credentials."""
        env = self.env
        request = urllib.request.Request(f"http://127.0.0.1:{env['MODELFLEET_FLOWER_PORT']}{path}")
        if auth:
            token = f"{env['MODELFLEET_FLOWER_USER']}:{env['MODELFLEET_FLOWER_PASSWORD']}"
            request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=20) as reply:
                return reply.status, json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def leftovers(self) -> dict[str, list[str]]:
        """The project's containers, volumes and networks still in the engine."""
        label = f"label=com.docker.compose.project={self.name}"
        return {"containers": docker("ps", "-a", "-q", "--filter", label).stdout.split(),
                "volumes": docker("volume", "ls", "-q", "--filter", label).stdout.split(),
                "networks": docker("network", "ls", "-q", "--filter", label).stdout.split()}

    def teardown(self) -> None:
        """Whatever a failed test left: the probe, every container, volume and network."""
        if self.probe:
            docker("rm", "-f", self.probe, check=False)
        self.compose("--profile", "*", "down", "-v", "--remove-orphans", "-t", "10", check=False, timeout=300)


def batch_id_in(output: str) -> str:
    """The id in `submitted batch ID (N models)`."""
    words = output.split()
    return words[words.index("batch") + 1]


def build_image(project: Project, s3: bool = False) -> dict[str, Any]:
    """The stand-in base images where the real ones cannot be pulled, then `docker compose
    build` (the default builder, as users run it): once per test run, whichever test comes
    first (even from cache a build gives a new image id, and would leave the image that
    another test's containers run untagged). A previous image of the test tag that the
    build replaced is removed (it would be left untagged)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
    built = BUILD_LOCK.with_name(f"modelfleet-compose-build-{run}.json")
    with BUILD_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if s3 or not built.exists():
            standins(s3)
        if built.exists():
            return {**json.loads(built.read_text()), "new_dangling": set()}
        before, dangling = image_id(IMAGE), dangling_images()
        started = time.monotonic()
        project.compose("build", timeout=1800)
        seconds = time.monotonic() - started
        after = image_id(IMAGE)
        if before not in (None, after) and before in dangling_images():
            docker("rmi", before, check=False)
        built.write_text(json.dumps({"seconds": seconds, "image": after}))
        return {"seconds": seconds, "image": after, "new_dangling": dangling_images() - dangling}


def standins(s3: bool) -> None:
    """deploy/standins/build.sh: it keeps images already in the engine and tries a pull first."""
    done = subprocess.run(["bash", str(STANDINS), *(["s3"] if s3 else [])],
                          timeout=1800, capture_output=True, text=True)
    assert done.returncode == 0, f"{STANDINS} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


@contextmanager
def project_on_engine(directory: Path, files: tuple[Path, ...] = (COMPOSE_FILE,),
                      profiles: tuple[str, ...] = ()) -> Iterator[Project]:
    project = Project.create(directory, files)
    project.profiles = profiles
    try:
        yield project
    finally:
        project.teardown()


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 1.0) -> float:
    """wait_for that returns the seconds it waited."""
    started = time.monotonic()
    wait_for(check, timeout, what, interval=interval)
    return time.monotonic() - started


def deploys_per_model(runs: list[dict[str, Any]]) -> dict[str, int]:
    """How many deploy stages promoted each model (exactly once is the guarantee)."""
    counts: dict[str, int] = {}
    for run in runs:
        promoted = (run.get("result") or {}).get("promoted")
        if run["stage"] == "deploy" and run["status"] == "succeeded" and promoted:
            counts[run["model"]] = counts.get(run["model"], 0) + 1
    return counts


def record_timings(name: str, figures: dict[str, float]) -> None:
    """Print the measured figures; with MODELFLEET_COMPOSE_TIMINGS set, append them there
    as one JSON line (bench figures, never asserted on)."""
    line = json.dumps({"test": name, **{k: round(v, 1) for k, v in figures.items()}})
    print(line)
    target = os.environ.get("MODELFLEET_COMPOSE_TIMINGS")
    if target:
        with open(target, "a") as out:
            out.write(line + "\n")
