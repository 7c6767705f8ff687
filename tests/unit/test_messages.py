"""send_chains writes the message Celery's chain.apply_async writes; plan_chains' messages are ChainStates.

On kombu's in-memory transport (no services): the messages and events are read back
from its queues and compared with those Celery's own canvas publishes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, chain

from producer.messages import new_task_ids, send_chains
from producer.spec import load_batch
from producer.submit import plan_chains
from tests.conftest import EXAMPLE_DATA, REPO, load
from tests.support.memory_broker import drain, events, memory_app
from workers.app import PRIORITIES, TASK_NAMES
from workers.contracts import (
    ChainState,
    FeaturesSpec,
    GateSpec,
    ModelJob,
    ModelSpec,
    SplitSpec,
    parse_message,
    to_message,
)
from workers.settings import STAGES, Settings


@pytest.fixture
def app() -> Iterator[Celery]:
    with memory_app() as app:
        yield app


def _canvas_message(app: Celery, label: str, first: dict[str, Any], ids: list[str]) -> None:
    """What the canvas path did: a chain of signatures, each on its stage's queue, at the
    normal priority (what submit always passes: Celery's own default depends on whether the
    task classes are imported in this process)."""
    sigs = [app.signature(TASK_NAMES[stage], args=(first,) if i == 0 else (), queue=stage,
                          argsrepr=f"{stage} {label}", task_id=ids[i], priority=PRIORITIES["normal"])
            for i, stage in enumerate(STAGES)]
    chain(*sigs).apply_async()


def same_headers(ours: dict[str, Any], celerys: dict[str, Any]) -> bool:
    """Equal, except that Celery writes ignore_result False once the worker's task classes are
    imported in this process (by another test) and None before: both mean "keep the result"."""
    assert not ours["ignore_result"] and not celerys["ignore_result"]
    return {**ours, "ignore_result": None} == {**celerys, "ignore_result": None}


def test_send_chains_writes_the_message_celery_chain_writes(app: Celery) -> None:
    first = {"job": {"batch_id": "b1", "model": {"name": "m"}}, "prepared": None}
    ids = [str(uuid.uuid4()) for _ in STAGES]
    label = "model=m batch=b1"
    assert send_chains(app, [(label, first)], task_ids=[ids], priority=PRIORITIES["normal"]) == [ids]
    [ours] = drain(app, STAGES[0])
    [our_event] = events(app)
    _canvas_message(app, label, first, ids)
    [celerys] = drain(app, STAGES[0])
    [celery_event] = events(app)

    assert same_headers(ours.headers, celerys.headers)
    assert ours.headers["id"] == ours.headers["root_id"] == ids[0]
    # Each stage's argsrepr (what Flower shows and searches) is its stage and the chain's label.
    assert ours.headers["argsrepr"] == "preprocess model=m batch=b1"
    assert ours.headers["task"] == "modelfleet.preprocess"
    assert ours.decode() == celerys.decode()
    args, kwargs, embed = ours.decode()
    assert args == [first] and kwargs == {}
    # The rest of the chain, reversed: the worker pops the next stage from the end.
    assert [(s["task"], s["options"]["queue"], s["options"]["task_id"], s["options"]["argsrepr"])
            for s in embed["chain"]] == [(TASK_NAMES[st], st, tid, f"{st} {label}")
                                         for st, tid in zip(STAGES[:0:-1], ids[:0:-1], strict=True)]
    assert [s["options"]["argsrepr"] for s in embed["chain"]][::-1] == [
        "train model=m batch=b1", "evaluate model=m batch=b1", "deploy model=m batch=b1"]
    # Celery also copies argsrepr into the message properties, which nothing reads.
    skip = {"delivery_tag", "argsrepr"}
    assert ({k: v for k, v in ours.properties.items() if k not in skip}
            == {k: v for k, v in celerys.properties.items() if k not in skip})
    assert ours.delivery_info["routing_key"] == STAGES[0]

    # The task-sent event is the one Celery sends, but inside a list (as workers send theirs).
    assert our_event["type"] == celery_event["type"] == "task-sent"
    skip = {"clock", "timestamp"}
    assert ({k: v for k, v in our_event.items() if k not in skip}
            == {k: v for k, v in celery_event.items() if k not in skip})
    assert our_event["uuid"] == ids[0] and our_event["queue"] == STAGES[0]
    assert our_event["args"] == "preprocess model=m batch=b1"


def test_send_chains_publishes_each_chain_once_with_new_ids_in_stage_order(app: Celery) -> None:
    chains = [(f"b/m{i}", {"n": i}) for i in range(250)]
    ids = send_chains(app, iter(chains))  # a generator works: messages built as they are sent
    assert len(ids) == 250 and all(len(chain_ids) == 4 for chain_ids in ids)
    flat = [tid for chain_ids in ids for tid in chain_ids]
    assert len(set(flat)) == len(flat) and all(uuid.UUID(t).version == 4 for t in flat)
    queued = {m.headers["id"]: m for m in drain(app, STAGES[0])}
    assert set(queued) == {chain_ids[0] for chain_ids in ids}
    for (label, first), chain_ids in zip(chains, ids, strict=True):
        message = queued[chain_ids[0]]
        args, _, embed = message.decode()
        assert message.headers["argsrepr"] == f"preprocess {label}" and args == [first]
        assert [s["options"]["task_id"] for s in embed["chain"]][::-1] == chain_ids[1:]
    assert all(not drain(app, stage) for stage in STAGES[1:])  # later stages: sent by the workers
    assert sorted(e["uuid"] for e in events(app)) == sorted(queued)


def test_send_chains_without_sent_events(app: Celery) -> None:
    app.conf.task_send_sent_event = False
    send_chains(app, [("b/m", {})])
    assert len(drain(app, STAGES[0])) == 1 and not events(app)


def test_send_chains_refuses_task_ids_that_do_not_fit(app: Celery) -> None:
    with pytest.raises(ValueError, match="2 task id lists for 1 chains"):
        send_chains(app, [("b/m", {})], task_ids=new_task_ids(2))
    with pytest.raises(ValueError, match="3 task ids for 4 stages"):
        send_chains(app, [("b/m", {})], task_ids=[["a", "b", "c"]])
    assert not drain(app, STAGES[0])


def test_plan_chains_is_one_chain_state_per_model(tmp_path: Path) -> None:
    settings = Settings(data_root=EXAMPLE_DATA)
    walmart = {"name": "walmart", "models": [{
        "name": "store", "task": "regression", "evaluation": {"metrics": ["r2"]},
        "dataset": {"kind": "csv", "path": "walmart_weekly_sales.csv", "target": "Weekly_Sales",
                    "segment_by": "Store"},
        "estimator": {"class_path": "sklearn.linear_model.Ridge"}}]}
    for batch in (load_batch(REPO / "examples" / "quickstart.yaml", settings),
                  load_batch(REPO / "examples" / "fleet.yaml", settings),
                  load(tmp_path, walmart, settings)):
        for no_cache in (False, True):
            planned = list(plan_chains("b1", batch.models, no_cache))
            assert len(planned) == len(batch.models)
            for plan, model in zip(planned, batch.models, strict=True):
                assert plan.label == f"model={model.name} batch=b1" and plan.models == (model.name,)
                expected = ChainState(job=ModelJob(batch_id="b1", model=model, no_cache=no_cache))
                assert plan.message == expected.model_dump(mode="json")
                assert ChainState.model_validate(plan.message) == expected


def test_send_chains_with_a_priority_and_a_queue_writes_what_celery_writes(app: Celery) -> None:
    """The priority in the message's properties and every later stage's options, the heavy
    stages on the model's own queue: what the canvas writes for the same signatures."""
    first = {"job": {"batch_id": "b1", "model": {"name": "m"}}, "prepared": None}
    ids = [str(uuid.uuid4()) for _ in STAGES]
    routes = {"train": "large", "evaluate": "large"}
    send_chains(app, [("b1/m", first)], task_ids=[ids], priority=9, queues=routes)
    [ours] = drain(app, STAGES[0])
    sigs = [app.signature(TASK_NAMES[stage], args=(first,) if i == 0 else (), queue=routes.get(stage, stage),
                          argsrepr=f"{stage} b1/m", task_id=ids[i], priority=9)
            for i, stage in enumerate(STAGES)]
    chain(*sigs).apply_async()
    [celerys] = drain(app, STAGES[0])
    assert ours.properties["priority"] == celerys.properties["priority"] == 9
    assert same_headers(ours.headers, celerys.headers)
    assert ours.decode() == celerys.decode()
    embed = ours.decode()[2]
    assert [(s["options"]["queue"], s["options"]["priority"]) for s in embed["chain"]] == [
        ("deploy", 9), ("large", 9), ("large", 9)]


def test_a_message_leaves_default_sections_out_and_parsing_shares_the_frozen_defaults(tmp_path: Path) -> None:
    # The sections a spec rarely sets travel as absent; parsing gives every model the one
    # frozen default, as a spec's other sections get theirs (pydantic deep-copied a
    # FeaturesSpec, which holds lists, for every model of every parse: half of the parse).
    batch = load(tmp_path, {"name": "defaults", "models": [
        {"name": f"m{i}", "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
         "estimator": {"class_path": "sklearn.linear_model.LogisticRegression"}} for i in range(2)]},
        Settings(artifact_root=tmp_path / "artifacts"))  # type: ignore[call-arg]
    message = to_message([ChainState(job=ModelJob(batch_id="b", model=m)) for m in batch.models], True)
    assert {"features", "split"}.isdisjoint(message["pack"][0]["job"]["model"])
    first, second = (state.job.model for state in parse_message(message))
    assert first.features == FeaturesSpec() and first.split == SplitSpec() and first.deploy.gate == GateSpec()
    assert first.features is second.features and first.split is second.split
    # A section a spec sets is its own, and travels
    custom = ModelSpec.model_validate({**first.model_dump(), "features": {"drop": ["petal width (cm)"]}})
    assert custom.features.drop == ["petal width (cm)"] and first.features.drop == []
    sent = to_message([ChainState(job=ModelJob(batch_id="b", model=custom))], False)
    assert sent["job"]["model"]["features"]["drop"] == ["petal width (cm)"]
