"""Chain structure, cache keys, promotion rules and the artifact store."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.messages import send_chains
from producer.spec import load_batch
from producer.submit import plan_chains
from tests.conftest import REPO
from tests.support.memory_broker import drain, memory_app
from workers.app import create_app
from workers.cache import cache_key
from workers.contracts import ChainState, GateSpec
from workers.registry import decide
from workers.settings import Settings
from workers.store import ArtifactStore, IntegrityError


def test_each_model_is_one_four_stage_chain_on_their_queues() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:1/0")  # type: ignore[arg-type]
    batch = load_batch(REPO / "examples" / "quickstart.yaml", settings)
    planned = list(plan_chains("b1", batch.models))
    with memory_app() as app:
        ids = send_chains(app, [(p.label, p.message) for p in planned])
        queued = {m.headers["id"]: m for m in drain(app, "preprocess")}
    assert len(planned) == len(ids) == len(queued) == 12
    for plan, model, chain_ids in zip(planned, batch.models, ids, strict=True):
        assert plan.models == (model.name,)
        message = queued[chain_ids[0]]
        (first,), _, embed = message.decode()
        rest = embed["chain"][::-1]  # stored reversed: the worker pops the next stage
        assert [message.headers["task"], *(s["task"] for s in rest)] == [
            "modelfleet.preprocess", "modelfleet.train", "modelfleet.evaluate", "modelfleet.deploy"]
        assert [message.delivery_info["routing_key"], *(s["options"]["queue"] for s in rest)] == [
            "preprocess", "train", "evaluate", "deploy"]
        assert [message.headers["id"], *(s["options"]["task_id"] for s in rest)] == chain_ids
        state = ChainState.model_validate(first)
        assert state.job.batch_id == "b1" and state.job.model == model
        assert all(not s["args"] for s in rest)  # later stages get the previous output


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
    (tmp_path / store.key(digest)).write_bytes(b"tampered")
    with pytest.raises(IntegrityError):
        store.get(digest)
