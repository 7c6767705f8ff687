"""docker-compose.yml read as the one source of truth, and its services run as local processes.

No Docker engine is needed: a service's own `command` and `environment` (after
compose's `${VAR}` interpolation) become a local process, with the few things a
container provides mapped to local stand-ins:

- the image's `ENV` (deploy/Dockerfile's final stage) under the service environment;
- a named volume's mount point -> a directory the caller gives;
- a service's DNS name (`redis:6379`) -> the address of the caller's redis-server;
- a published container port -> a free loopback port;
- the image's executables -> this virtualenv's (`modelfleet`, `celery`);
- a replica's own hostname (each container has one) -> its own UTS namespace
  (`unshare --uts`, root only), else an explicit Celery node name `-n celery@HOST`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from dockerfile_parse import DockerfileParser

from producer.local import stop_process
from workers.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "deploy" / "Dockerfile"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR and $$ (a literal $).
_VAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])"
                  r"(?P<arg>[^}]*))?\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")


class MissingVariable(ValueError):
    """A `${VAR:?message}` whose variable is unset or empty, as compose reports it."""


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose .env file (comments and blank lines skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation of one string."""

    def replace(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["named"]
        value, op, arg = env.get(name), m["op"] or "", m["arg"] or ""
        unset = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return arg if unset else str(value)
        if op.endswith("?") and unset:
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        return "" if value is None else value

    return _VAR.sub(replace, text)


def variables_used(text: str) -> set[str]:
    return {m["braced"] or m["named"] for m in _VAR.finditer(text) if not m["escaped"]}


# The redis image's entrypoint (chowns /data, drops root for the redis user) and server.
REDIS_ENTRYPOINT = ("docker-entrypoint.sh", "redis-server")


def shell_redis_server(command: list[str], env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The redis-server argv and stdin config lines of a container command
    `sh -c 'exec docker-entrypoint.sh redis-server ARGS - <<EOF ... EOF'`, with the config's
    `$VARS` expanded from the container's environment as sh does (compose and the
    Kubernetes manifest start Redis this way so that its password is on no command line)."""
    assert command[:2] == ["sh", "-c"], command
    first, *rest = command[2].strip().splitlines()
    line, _, marker = first.partition("<<")
    argv = shlex.split(line)
    assert argv[:3] == ["exec", *REDIS_ENTRYPOINT] and argv[-1] == "-", argv
    body = rest[:rest.index(marker.strip())]
    return argv[2:], [re.sub(r"\$(\w+)", lambda m: env[m[1]], ln) for ln in body]


def redis_config_value(config: list[str], name: str) -> str:
    """The value of one directive in redis.conf lines (quotes removed)."""
    return next(" ".join(words[1:]) for ln in config if (words := shlex.split(ln)) and words[0] == name)


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(v, env) for v in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    return node


def load_compose(env: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file with anchors merged and every `${VAR}` interpolated from `env`."""
    return dict(_interpolate_tree(yaml.safe_load(path.read_text()), env))


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The Settings a process with exactly this environment builds."""
    only = {k: str(v) for k, v in env.items() if k.startswith("MODELFLEET_")}
    # Settings reads os.environ (the one place that does); swap it in for the call only.
    with mock.patch.dict(os.environ, only, clear=True):
        return Settings()


def image_env(dockerfile: Path = DOCKERFILE) -> dict[str, str]:
    """The ENV of the image's final stage, without PATH (the local venv provides it)."""
    envs = dict(DockerfileParser(str(dockerfile)).envs)
    envs.pop("PATH", None)
    return envs


def local_argv(argv: list[str]) -> list[str]:
    """A container command with the image's executables replaced by this venv's."""
    head, rest = argv[0], argv[1:]
    if head == "modelfleet":
        script = Path(sys.executable).parent / "modelfleet"
        return [str(script), *rest] if script.exists() else [sys.executable, "-m", "producer", *rest]
    if head == "celery":
        return [sys.executable, "-m", "celery", *rest]
    if head in ("python", "python3"):
        return [sys.executable, *rest]
    raise ValueError(f"no local stand-in for the image's executable {head!r}")


def can_unshare_uts() -> bool:
    """True when this process may give children their own hostname (root, unshare present)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--uts", "--", "hostname", "compose-probe"],
                           capture_output=True, timeout=10)
    return probe.returncode == 0


@dataclass
class LocalCompose:
    """The services of docker-compose.yml as local processes.

    `redis_address` stands in for the `redis` service (host:port of a local
    redis-server), `volumes` maps named volumes to local directories.
    """

    env: Mapping[str, str]
    redis_address: str
    volumes: Mapping[str, Path]
    log_dir: Path
    cwd: Path = REPO
    ports: dict[int, int] = field(default_factory=dict)  # container port -> local port
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.compose = load_compose(self.env)
        self.services: dict[str, Any] = self.compose["services"]
        self.own_hostnames = can_unshare_uts()

    # --- mapping a container to a process ---------------------------------------------
    def _mounts(self, name: str) -> dict[str, Path]:
        """Container path -> local directory, for the service's named-volume and bind mounts
        (a bind mount's host path, relative to the project directory, is used as it is)."""
        mounts = {}
        for spec in self.services[name].get("volumes", []):
            source, target = spec.split(":")[:2]
            if source in self.volumes:
                mounts[target] = self.volumes[source]
            elif source.startswith((".", "/")):
                mounts[target] = (self.cwd / source).resolve()
        return mounts

    def _map(self, value: str, name: str) -> str:
        for target, local in self._mounts(name).items():
            if value == target or value.startswith(target + "/"):
                value = str(local) + value[len(target):]
        return value.replace("@redis:6379", f"@{self.redis_address}")

    def local_path(self, name: str, path: str) -> Path:
        """Where a path inside service `name`'s container is here (its mounts mapped)."""
        return self.cwd / self._map(path, name)

    def environment(self, name: str, hostname: str) -> dict[str, str]:
        """Image ENV, then the service's environment, mapped to local stand-ins."""
        service_env = {k: "" if v is None else str(v)
                       for k, v in (self.services[name].get("environment") or {}).items()}
        env = {**image_env(), **service_env}
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.log_dir),
                "LANG": "C.UTF-8", "HOSTNAME": hostname}
        return {**base, **{k: self._map(v, name) for k, v in env.items()}}

    def command(self, name: str, hostname: str, override: list[str] | None = None) -> list[str]:
        argv = [self._map(self._map_arg(a), name) for a in (override or self.services[name]["command"])]
        argv = local_argv(argv)
        if self.own_hostnames:
            # What a container has: its own hostname, so Celery's default node name differs.
            return ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"',
                    hostname, *argv]
        if "worker" in argv:
            argv += ["-n", f"celery@{hostname}"]
        return argv

    def _map_arg(self, arg: str) -> str:
        # Published ports and the all-interfaces bind become free loopback ports.
        for container_port, local_port in self.ports.items():
            arg = arg.replace(f"--port={container_port}", f"--port={local_port}")
        return arg.replace("--address=0.0.0.0", "--address=127.0.0.1")

    def node_name(self, hostname: str) -> str:
        """The Celery node name a worker replica with this hostname gets."""
        return f"celery@{hostname}"

    # --- running -----------------------------------------------------------------------
    def start(self, name: str, replica: int = 1, override: list[str] | None = None,
              ) -> tuple[subprocess.Popen[bytes], str]:
        """Start one replica of a long-running service; returns it and its hostname."""
        hostname = f"{name}-{replica}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{hostname}.log").open("ab")
        proc = subprocess.Popen(self.command(name, hostname, override), cwd=self.cwd,
                                env=self.environment(name, hostname), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc, hostname

    def run(self, name: str, timeout: float, override: list[str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """Run a one-shot service (like `docker compose run --rm NAME`) to completion."""
        hostname = f"{name}-run"
        return subprocess.run(self.command(name, hostname, override), cwd=self.cwd,
                              env=self.environment(name, hostname), capture_output=True,
                              text=True, timeout=timeout)

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc, grace=20.0)
        self.procs = []

    def __enter__(self) -> LocalCompose:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
