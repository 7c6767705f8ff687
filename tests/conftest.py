"""Shared fixtures: a real redis-server and real celery workers, started here."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.teardown import close_app
from producer.handle import BatchHandle
from producer.local import LocalWorkers, RedisServer
from producer.spec import Batch, load_batch
from producer.status import BatchStatus
from producer.submit import submit
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import Settings

REPO = Path(__file__).resolve().parents[1]
# Data the tests read lives in the repository (examples/data), so a plain clone passes.
EXAMPLE_DATA = REPO / "examples" / "data"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def settings(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(broker_url=redis_server.url,  # type: ignore[arg-type]
                    artifact_root=tmp_path_factory.mktemp("artifacts"), data_root=EXAMPLE_DATA,
                    lease_ttl=3.0)


@pytest.fixture(scope="session")
def workers(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWorkers]:
    with LocalWorkers(settings, 2, tmp_path_factory.mktemp("worker-logs")) as pool:
        yield pool


@pytest.fixture(scope="session")
def runtime(settings: Settings) -> Runtime:
    return Runtime.from_settings(settings)


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[Any]:
    app = create_app(settings)
    yield app
    close_app(app)


@pytest.fixture
def uniq() -> str:
    """A suffix that keeps model names of different tests apart in the shared registry."""
    return uuid.uuid4().hex[:6]


def write_spec(tmp_path: Path, spec: dict[str, Any], name: str = "batch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_batch(batch: Batch, app: Any, runtime: Runtime, timeout: float = 180,
              **kwargs: Any) -> tuple[BatchHandle, BatchStatus]:
    handle = submit(batch, app, runtime, **kwargs)
    return handle, handle.wait(timeout=timeout)


def load(tmp_path: Path, spec: dict[str, Any], settings: Settings) -> Batch:
    return load_batch(write_spec(tmp_path, spec), settings)
