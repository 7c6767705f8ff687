"""How the producer packs models into chains: fixed sizes, and `auto` from recorded stage times."""

from __future__ import annotations

from typing import Any

from producer.packing import CHAINS_PER_SLOT, MAX_PACK, MIN_MESSAGES, TARGET_SECONDS, plan_packs
from producer.submit import plan_chains
from workers.app import FUSED, QUEUES
from workers.contracts import ModelSpec, PackState, parse_message


def _model(name: str, estimator: str = "sklearn.linear_model.Ridge", **params: Any) -> ModelSpec:
    return ModelSpec.model_validate({
        "name": name, "task": "regression",
        "dataset": {"kind": "csv", "path": "sales.csv", "target": "y", "segment_by": "store",
                    "segment": name},
        "estimator": {"class_path": estimator, "params": params}})


def test_fixed_pack_sizes_keep_the_submission_order() -> None:
    models = [_model(f"m{i}") for i in range(7)]
    assert [[m.name for m in p] for p in plan_packs(models, 3, {})] == [
        ["m0", "m1", "m2"], ["m3", "m4", "m5"], ["m6"]]
    assert [len(p) for p in plan_packs(models, 1, {})] == [1] * 7


def test_auto_sizes_packs_from_the_recorded_cost_of_the_models_class() -> None:
    models = [_model(f"m{i}") for i in range(1000)]
    cls = models[0].cost_class
    # 10 ms a model: about TARGET_SECONDS of work per message, the packs evened out
    assert {len(p) for p in plan_packs(models, "auto", {cls: 0.01})} == {29, 30}
    assert len(plan_packs(models, "auto", {cls: 0.01})) == -(-1000 // round(TARGET_SECONDS / 0.01))
    # a model that takes longer than the target rides alone
    assert {len(p) for p in plan_packs(models, "auto", {cls: 2.0})} == {1}
    # a nearly free model: capped, so no message carries an unbounded pack
    capped = plan_packs(models, "auto", {cls: 1e-6})
    assert max(len(p) for p in capped) <= MAX_PACK and len(capped) == -(-1000 // MAX_PACK)


def test_auto_keeps_enough_chains_for_the_workers_and_never_mixes_cost_classes() -> None:
    small = [_model(f"r{i}") for i in range(45)]
    forests = [_model(f"f{i}", "sklearn.ensemble.RandomForestRegressor", n_estimators=10) for i in range(45)]
    packs = plan_packs(small + forests, "auto", {})
    assert len(packs) >= MIN_MESSAGES
    for pack in packs:
        assert len({m.cost_class for m in pack}) == 1
    assert sorted(m.name for p in packs for m in p) == sorted(m.name for m in small + forests)
    # the forest's size parameter is part of its class: another n_estimators is another class
    assert forests[0].cost_class != _model("g", "sklearn.ensemble.RandomForestRegressor",
                                           n_estimators=500).cost_class


def test_a_packed_chain_carries_each_model_and_names_them_all() -> None:
    models = [_model(f"m{i}") for i in range(5)]
    planned = list(plan_chains("b1", models, pack=2))
    assert [p.models for p in planned] == [("m0", "m1"), ("m2", "m3"), ("m4",)]
    assert planned[0].label == "model=m0 model=m1 batch=b1" and planned[2].label == "model=m4 batch=b1"
    pack = PackState.model_validate(planned[0].message)
    assert [s.job.model.name for s in pack.pack] == ["m0", "m1"]
    assert [s.job.model for s in parse_message(planned[1].message)] == models[2:4]
    assert [s.job.model for s in parse_message(planned[2].message)] == [models[4]]  # a plain ChainState


def test_packs_never_mix_models_of_different_queues() -> None:
    models = [ModelSpec.model_validate({**_model(f"m{i}").model_dump(),
                                        "resources": {"queue": "large" if i % 3 == 0 else None}})
              for i in range(60)]
    for pack in ("auto", 4):
        packs = plan_packs(models, pack, {})  # type: ignore[arg-type]
        assert sorted(m.name for p in packs for m in p) == sorted(m.name for m in models)
        assert all(len({m.resources.queue for m in p}) == 1 for p in packs)
    planned = list(plan_chains("b", models, pack=4))
    assert {p.queue for p in planned} == {"large", None}
    assert all(p.queue == ("large" if int(p.models[0][1:]) % 3 == 0 else None) for p in planned)


def test_auto_keeps_chains_for_the_live_slots_of_the_queue_the_packs_run_on() -> None:
    models = [_model(f"m{i}") for i in range(200)]
    cls = models[0].cost_class
    recorded = {cls: 0.001}  # packs of MAX_PACK by cost alone: the slots decide the count

    def count(slots: dict[str, int] | None) -> int:
        packs = plan_packs(models, "auto", recorded, slots)
        assert sorted(m.name for p in packs for m in p) == sorted(m.name for m in models)
        return len(packs)

    # no worker registered: today's minimum
    assert count(None) == count({}) == MIN_MESSAGES
    # small fused packs run on the preprocess queue: its slots count, CHAINS_PER_SLOT each
    assert count({"preprocess": 1}) == CHAINS_PER_SLOT == 4
    assert count({"preprocess": 3}) == 12
    assert count({"preprocess": 10}) == 40  # more slots than MIN_MESSAGES / 4: more chains
    assert count({"preprocess": 100}) == 200  # never more chains than models
    # slots of a queue these packs do not run on leave the fallback
    assert count({"train": 10, "large": 5}) == MIN_MESSAGES
    # slots never make a pack bigger than its cost allows
    assert len(plan_packs(models, "auto", {cls: 0.05}, {"preprocess": 1})) == -(-200 // 6)
    # fixed pack sizes ignore the slots
    assert len(plan_packs(models, 10, recorded, {"preprocess": 1})) == 20


def test_each_queue_is_split_for_its_own_slots() -> None:
    small = [_model(f"s{i}") for i in range(40)]
    own = [ModelSpec.model_validate({**_model(f"g{i}").model_dump(), "resources": {"queue": "large"}})
           for i in range(40)]
    recorded = {small[0].cost_class: 0.001, own[0].cost_class: 0.001}

    def counts(slots: dict[str, int]) -> tuple[int, int]:
        packs = plan_packs(small + own, "auto", recorded, slots)
        on_large = sum(p[0].resources.queue == "large" for p in packs)
        return len(packs) - on_large, on_large

    # small default-queue packs are fused, on the preprocess queue; the others' work runs on
    # their own queue (only their light stages on the stage queues)
    assert counts({"preprocess": 8, "large": 1}) == (20, 4)  # 8 x 4 = 32 chains: packs of 2
    assert counts({"preprocess": 8, "train": 50}) == (20, 14)  # nobody consumes large: 16
    assert counts({"preprocess": 1, "large": 2}) == (4, 8)


def test_auto_packs_a_class_dataset_by_dataset_whatever_the_spec_order() -> None:
    # A matrix lists every store for one alpha, then the next alpha: packed in that order, a
    # pack held one model of each of many stores; now it holds every model of a few stores,
    # whose split and fitted features its worker then computes once.
    models = [_model(f"a{alpha}-s{store}", alpha=alpha).model_copy(
        update={"dataset": _model(f"s{store}").dataset}) for alpha in range(4) for store in range(5)]
    assert len({m.cost_class for m in models}) == 1
    packs = plan_packs(models, "auto", {models[0].cost_class: TARGET_SECONDS / 4}, {QUEUES[FUSED]: 1})
    assert [[m.name for m in p] for p in packs] == [
        [f"a{alpha}-s{store}" for alpha in range(4)] for store in range(5)]
