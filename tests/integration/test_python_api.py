"""The public face from a script: `import modelfleet`, load a batch, submit, wait, predict,
against a real redis-server and real celery workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sklearn.datasets import load_iris

import modelfleet
from tests.conftest import REPO, write_spec
from workers.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _tree(name: str) -> dict[str, Any]:
    return {"name": name, "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
            "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 3}}}


def test_producer_script_submits_waits_and_the_model_predicts(tmp_path: Path, settings: Settings,
                                                              workers: Any, uniq: str) -> None:
    names = [f"api-a-{uniq}", f"api-b-{uniq}"]
    path = write_spec(tmp_path, {"name": f"api-{uniq}", "models": [_tree(n) for n in names]})

    result = subprocess.run([sys.executable, str(REPO / "examples" / "producer_script.py"), str(path)],
                            env={**os.environ, **settings.to_env()}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=180)

    assert result.returncode == 0, result.stderr
    assert f"submitted api-{uniq}-" in result.stdout
    for name in names:
        assert any(line.split()[:2] == [name, "promoted"]
                   for line in result.stdout.splitlines()), result.stdout

    rows = load_iris().data[:5]
    predicted = modelfleet.predict(f"{names[0]}@production", rows, settings)
    assert list(predicted) == list(modelfleet.load_model(f"{names[0]}/1", settings).predict(rows))
    assert set(predicted) <= {0, 1, 2} and len(predicted) == 5


def test_submit_without_a_broker_says_how_to_get_one(tmp_path: Path) -> None:
    batch = modelfleet.load_batch(write_spec(tmp_path, {"name": "nobroker", "models": [_tree("m")]}),
                                  Settings(data_root=tmp_path))
    from producer.submit import BrokerUnavailable

    with pytest.raises(BrokerUnavailable, match="MODELFLEET_BROKER_URL or start `modelfleet up`"):
        modelfleet.submit(batch, Settings(broker_url=None, local_redis_dir=tmp_path / "no-redis-here"))
