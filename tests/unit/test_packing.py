"""How the producer packs models into chains: fixed sizes, and `auto` from recorded stage times."""

from __future__ import annotations

from typing import Any

from producer.packing import MAX_PACK, MIN_MESSAGES, TARGET_SECONDS, plan_packs
from producer.submit import plan_chains
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
