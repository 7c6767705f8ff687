"""send() publishes a whole batch through one producer in pipelined batches, ids kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from producer.local import RedisServer
from producer.submit import build_canvas, send
from tests.conftest import load
from workers.app import create_app
from workers.settings import Settings

pytestmark = pytest.mark.integration


def test_send_publishes_every_chain_once_with_its_frozen_id(tmp_path: Path) -> None:
    # Its own Redis and no workers, so the messages stay queued where we can read them.
    with RedisServer(tmp_path / "redis") as server:
        settings = Settings(broker_url=server.url, artifact_root=tmp_path / "a")  # type: ignore[arg-type]
        models = [{"name": f"m{i}", "task": "classification",
                   "dataset": {"kind": "synthetic", "n_samples": 40, "seed": i},
                   "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier"}}
                  for i in range(1200)]  # more than one pipeline flush (1,000 commands)
        batch = load(tmp_path, {"name": "batching", "models": models}, settings)
        app = create_app(settings)
        canvas = build_canvas(app, "b1", batch)
        canvas.freeze()
        send(app, canvas)

        queued = [json.loads(m) for m in redis.Redis.from_url(server.url).lrange("preprocess", 0, -1)]
        assert sorted(m["headers"]["id"] for m in queued) == sorted(c.tasks[0].id for c in canvas.tasks)
        assert {m["headers"]["argsrepr"] for m in queued} == {f"b1/m{i}" for i in range(1200)}
        assert not any("producer" in c.tasks[0].options for c in canvas.tasks)
        app.close()
