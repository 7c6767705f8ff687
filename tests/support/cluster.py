"""A private Redis + workers for one fault test, with short reliability timeouts.

Fault tests kill and restart things, so they never share the session's Redis or
workers. Everything started here is stopped on exit, also when the test fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producer.handle import BatchHandle
from producer.local import LocalWorkers, RedisServer, wait_for
from producer.spec import Batch, load_batch
from producer.submit import submit
from tests.conftest import EXAMPLE_DATA, close_app, write_spec
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import Settings

# Short enough to test recovery in seconds; real deployments keep the defaults.
FAST = {"visibility_timeout": 4, "restore_interval": 1, "restore_throttle": 1, "lease_ttl": 2.0,
        "sweep_interval": 0.5, "stall_timeout": 5.0,
        "allowed_estimator_prefixes": ["sklearn.", "tests.support."]}
FAULTY = "tests.support.estimators.FaultyClassifier"


@dataclass
class Cluster:
    redis: RedisServer
    settings: Settings
    workers: LocalWorkers
    app: Any
    runtime: Runtime
    tmp: Path

    def load(self, spec: dict[str, Any]) -> Batch:
        return load_batch(write_spec(self.tmp, spec, f"{spec['name']}.yaml"), self.settings)

    def submit(self, spec: dict[str, Any]) -> BatchHandle:
        return submit(self.load(spec), self.app, self.runtime)

    def log(self, worker: int = 0) -> str:
        return (self.workers.log_dir / f"w{worker}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.workers.log_dir.glob("*.log")))


@contextlib.contextmanager
def cluster(tmp: Path, workers: int = 2, password: str | None = None, concurrency: int = 1,
            **overrides: Any) -> Iterator[Cluster]:
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisServer(tmp / "redis", password=password))
        settings = Settings(**{"broker_url": server.url, "artifact_root": tmp / "artifacts",
                               "data_root": EXAMPLE_DATA, **FAST, **overrides})
        pool = stack.enter_context(LocalWorkers(settings, workers, tmp / "logs", concurrency=concurrency))
        app = create_app(settings)
        stack.callback(close_app, app)
        yield Cluster(server, settings, pool, app, Runtime.from_settings(settings), tmp)


def classifier(name: str, class_path: str = "sklearn.tree.DecisionTreeClassifier",
               dataset: str = "iris", **params: Any) -> dict[str, Any]:
    return {"name": name, "task": "classification", "dataset": {"kind": "sklearn", "name": dataset},
            "estimator": {"class_path": class_path, "params": params}}


def lines(path: Path) -> list[list[str]]:
    return [ln.split() for ln in path.read_text().splitlines()] if path.exists() else []


def wait_lines(path: Path, n: int, timeout: float = 120) -> list[list[str]]:
    wait_for(lambda: len(lines(path)) >= n, timeout, f"{n} line(s) in {path.name}")
    return lines(path)
