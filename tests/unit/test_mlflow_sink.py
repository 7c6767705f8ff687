"""The MLflow sink's contract with a stage: `offer` never blocks; what it writes comes from the state."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from workers import mlflow_sink
from workers.contracts import (
    ChainState,
    DeployedInfo,
    EvaluatedInfo,
    ModelJob,
    ModelSpec,
    PreparedInfo,
    TrainedInfo,
)
from workers.mlflow_sink import MlflowSink, params, sink_for, tags
from workers.settings import Settings
from workers.store import ArtifactStore


def _deployed(name: str = "iris-tree") -> ChainState:
    model = ModelSpec.model_validate({
        "name": name, "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
        "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 3}},
        "evaluation": {"metrics": ["accuracy"]}, "tags": {"team": "a", "odd:key": "b"}})
    return ChainState(
        job=ModelJob(batch_id="b1", model=model),
        prepared=PreparedInfo(dataset_digest="d", data_digest="dd", n_train=112, n_test=38, n_features=4,
                              run_id="r1"),
        trained=TrainedInfo(model_digest="m", run_id="r2"),
        evaluated=EvaluatedInfo(report_digest="e", metrics={"accuracy": 0.97}, run_id="r3"),
        deployed=DeployedInfo(version=2, promoted=True, alias="production", reason="ok", run_id="r4"))


def test_params_and_tags_flatten_the_spec_and_name_the_batch_and_version() -> None:
    state = _deployed()
    assert params(state) == {
        "task": "classification", "estimator": "sklearn.tree.DecisionTreeClassifier",
        "estimator.max_depth": "3", "dataset.kind": "sklearn", "dataset.name": "iris",
        "preprocess.test_size": "0.25", "preprocess.impute": "mean", "preprocess.scale": "standard",
        "preprocess.seed": "0", "n_train": "112", "n_test": "38", "n_features": "4"}
    found = tags(state)
    assert found["team"] == "a" and found["odd_key"] == "b"  # a key MLflow refuses is made safe
    assert found["modelfleet.batch_id"] == "b1" and found["modelfleet.version"] == "2"
    assert found["modelfleet.promoted"] == "True" and found["modelfleet.model_digest"] == "m"


def test_offer_never_blocks_on_a_hung_server_and_drops_what_does_not_fit(tmp_path: Path) -> None:
    pytest.importorskip("mlflow", reason="the `mlflow` extra is not installed (pip install -e '.[mlflow]')")
    with socket.socket() as hung:  # accepts connections, never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        settings = Settings(mlflow_tracking_uri=f"http://127.0.0.1:{hung.getsockname()[1]}")
        sink = MlflowSink(settings, ArtifactStore(tmp_path), capacity=2)
        message = _deployed().model_dump(mode="json")
        started = time.perf_counter()
        for _ in range(10):
            sink.offer(message)
        assert time.perf_counter() - started < 0.5
        # The thread holds one (waiting on the server) or none yet; the queue holds 2; the rest are dropped.
        assert 7 <= sink.dropped <= 8
        started = time.perf_counter()
        sink.close(timeout=0.2)  # at shutdown: bounded, even with the server hung
        assert time.perf_counter() - started < 1.0


def test_without_mlflow_installed_the_sink_is_off_and_says_so_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    monkeypatch.setattr(mlflow_sink, "_sink_pid", 0)
    settings = Settings(mlflow_tracking_uri="http://127.0.0.1:1")
    assert sink_for(Settings(), ArtifactStore(tmp_path)) is None  # not configured: not even tried
    assert [sink_for(settings, ArtifactStore(tmp_path)) for _ in range(3)] == [None, None, None]
    assert [r.message for r in caplog.records].count(
        "MODELFLEET_MLFLOW_TRACKING_URI is set but mlflow is not installed "
        "(pip install 'modelfleet[mlflow]'): models are not copied to MLflow") == 1
