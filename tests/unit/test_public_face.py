"""`import modelfleet`: the names a script needs, and nothing heavy until one is used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import modelfleet
from producer.submit import BrokerUnavailable


def test_the_public_names() -> None:
    assert {"Settings", "load_batch", "submit", "load_model", "predict", "predict_frame"} <= \
        set(modelfleet.__all__)
    assert all(callable(getattr(modelfleet, name)) for name in modelfleet.__all__)


def test_import_loads_neither_scikit_learn_nor_celery() -> None:
    code = ("import sys, modelfleet; heavy = [m for m in ('sklearn', 'celery', 'numpy') if m in sys.modules];"
            " print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""


def test_reading_a_model_with_no_broker_and_no_local_registry_says_so(tmp_path: Path) -> None:
    nothing = modelfleet.Settings(broker_url=None, local_redis_dir=tmp_path / "redis")
    with pytest.raises(BrokerUnavailable, match="no registry to read: no broker configured"):
        modelfleet.load_model("iris-forest@production", nothing)
    assert not (tmp_path / "redis").exists()  # nothing started, nothing created
