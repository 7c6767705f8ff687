"""Canvas structure, cache keys, promotion rules and the artifact store."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import group
from celery.canvas import _chain

from producer.spec import load_batch
from producer.submit import build_canvas
from tests.conftest import REPO
from workers.app import create_app
from workers.cache import cache_key
from workers.contracts import ChainState, GateSpec
from workers.registry import decide
from workers.settings import Settings
from workers.store import ArtifactStore, IntegrityError


def test_canvas_is_a_group_of_four_stage_chains_on_their_queues() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:1/0")  # type: ignore[arg-type]
    app = create_app(settings)
    batch = load_batch(REPO / "examples" / "quickstart.yaml", settings)
    canvas, plans = build_canvas(app, "b1", batch)
    assert isinstance(canvas, group) and len(canvas.tasks) == 12
    assert [p.models for p in plans] == [[m.name] for m in batch.models]
    for sig, model in zip(canvas.tasks, batch.models, strict=True):
        assert isinstance(sig, _chain)
        assert [t.task for t in sig.tasks] == ["modelfleet.preprocess", "modelfleet.train",
                                               "modelfleet.evaluate", "modelfleet.deploy"]
        assert [t.options["queue"] for t in sig.tasks] == ["preprocess", "train", "evaluate", "deploy"]
        state = ChainState.model_validate(sig.tasks[0].args[0])
        assert state.job.batch_id == "b1" and state.job.model == model
        assert all(not t.args for t in sig.tasks[1:])  # later stages get the previous output


def test_app_settings_for_ml_jobs() -> None:
    app = create_app(Settings(broker_url="redis://127.0.0.1:1/0", visibility_timeout=42))  # type: ignore[arg-type]
    conf = app.conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_send_task_events and conf.task_send_sent_event
    assert conf.broker_transport_options["visibility_timeout"] == 42


def test_cache_key_changes_with_each_input() -> None:
    base = cache_key("train", {"a": 1}, ["d1"])
    assert base == cache_key("train", {"a": 1}, ["d1"])
    assert len({base, cache_key("train", {"a": 2}, ["d1"]), cache_key("train", {"a": 1}, ["d2"]),
                cache_key("evaluate", {"a": 1}, ["d1"])}) == 4


@pytest.mark.parametrize("gate,metrics,incumbent,promote", [
    (GateSpec(metric="accuracy", threshold=0.9), {"accuracy": 0.95}, None, True),
    (GateSpec(metric="accuracy", threshold=0.9), {"accuracy": 0.85}, None, False),
    (GateSpec(metric="mae", threshold=10), {"mae": 5}, None, True),
    (GateSpec(metric="mae", threshold=10), {"mae": 12}, None, False),
    (GateSpec(metric="accuracy", min_improvement=0.01), {"accuracy": 0.905}, {"accuracy": 0.9}, False),
    (GateSpec(metric="accuracy", min_improvement=0.01), {"accuracy": 0.92}, {"accuracy": 0.9}, True),
    (GateSpec(metric="rmse", min_improvement=1), {"rmse": 8}, {"rmse": 10}, True),
    (GateSpec(metric="rmse", min_improvement=1), {"rmse": 9.5}, {"rmse": 10}, False),
])
def test_promotion_rules(gate: GateSpec, metrics: dict[str, float],
                         incumbent: dict[str, float] | None, promote: bool) -> None:
    assert decide(gate, next(iter(metrics)), metrics, incumbent).promote is promote


def test_store_is_content_addressed_and_verifies_reads(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    digest = store.put(b"model bytes")
    assert store.put(b"model bytes") == digest and store.get(digest) == b"model bytes"
    store.path(digest).write_bytes(b"tampered")
    with pytest.raises(IntegrityError):
        store.get(digest)
