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


def test_send_publishes_every_chain_once_with_its_frozen_id(tmp_path: Path,
                                                            redis_server: RedisServer) -> None:
    # The shared server but database 7, where no worker consumes: the messages stay queued.
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        settings = Settings(broker_url=url, artifact_root=tmp_path / "a")  # type: ignore[arg-type]
        models = [{"name": f"m{i}", "task": "classification",
                   "dataset": {"kind": "synthetic", "n_samples": 40, "seed": i},
                   "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier"}}
                  for i in range(1200)]  # more than one pipeline flush (1,000 commands)
        batch = load(tmp_path, {"name": "batching", "pack": 1, "models": models}, settings)
        app = create_app(settings)
        # No result backend: the result objects freeze() makes would otherwise talk to
        # this Redis when garbage-collected, possibly after the server is gone.
        app.conf.result_backend = "disabled"
        canvas, _ = build_canvas(app, "b1", batch)
        canvas.freeze()
        send(app, canvas)

        queued = [json.loads(m) for m in client.lrange("preprocess", 0, -1)]
        assert sorted(m["headers"]["id"] for m in queued) == sorted(c.tasks[0].id for c in canvas.tasks)
        assert {m["headers"]["argsrepr"] for m in queued} == {f"b1/m{i}" for i in range(1200)}
        assert not any("producer" in c.tasks[0].options for c in canvas.tasks)
        app.close()
    finally:
        client.flushdb()
        client.close()
