"""Tracking, step cache and registry through real workers on the session's Redis.

Every test uses model names and synthetic datasets made unique by `uniq`, so
the shared cache and registry of the session cannot make a result pass.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris

from producer.serving import load_deployed, load_model
from producer.submit import submit
from tests.conftest import load, run_batch
from tests.support.processes import run_cli
from workers import keys
from workers.runtime import Runtime
from workers.settings import Settings

pytestmark = pytest.mark.integration

LOGREG = "sklearn.linear_model.LogisticRegression"
TREE = "sklearn.tree.DecisionTreeClassifier"


def seed_of(uniq: str) -> int:
    return int(uniq, 16) % 1_000_000


def model(name: str, estimator: str, params: dict[str, Any], dataset: dict[str, Any],
          **extra: Any) -> dict[str, Any]:
    return {"name": name, "task": "classification", "dataset": dataset,
            "estimator": {"class_path": estimator, "params": params},
            "evaluation": {"metrics": ["accuracy"]}, **extra}


def synthetic(uniq: str, n: int = 300) -> dict[str, Any]:
    return {"kind": "synthetic", "n_samples": n, "n_features": 8, "n_informative": 5,
            "seed": seed_of(uniq)}


def runs_by(runtime: Runtime, batch_id: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runtime.tracker.runs(batch_id=batch_id):
        out.setdefault((r["model"], r["stage"]), []).append(r)
    return out


def test_identical_batch_resubmitted_is_all_cache_hits_and_keeps_versions(
        tmp_path: Path, settings: Settings, workers: Any, app: Any, runtime: Runtime,
        uniq: str) -> None:
    spec = {"name": f"again-{uniq}", "models": [
        model(f"lr-{uniq}", LOGREG, {"max_iter": 500}, synthetic(uniq), tags={"family": "linear"}),
        model(f"tree-{uniq}", TREE, {"max_depth": 4}, synthetic(uniq), tags={"family": "tree"}),
        model(f"iris-{uniq}", TREE, {"max_depth": 2, "random_state": seed_of(uniq)},
              {"kind": "sklearn", "name": "iris"})]}
    first, s1 = run_batch(load(tmp_path, spec, settings), app, runtime)
    assert s1.counts == {"promoted": 3}

    second, s2 = run_batch(load(tmp_path, spec, settings), app, runtime)

    assert s2.counts == {"promoted": 3}
    runs = runtime.tracker.runs(batch_id=second.batch_id)
    assert len(runs) == 12 and all(r["status"] == "succeeded" for r in runs)
    cached = [r for r in runs if r["stage"] != "deploy"]
    assert len(cached) == 9 and all(r["cache_hit"] for r in cached)
    assert runtime.tracker.runs(batch_id=first.batch_id, status="succeeded")
    v1 = {r.name: r.version for r in s1.rows}
    assert {r.name: r.version for r in s2.rows} == v1 == {n: 1 for n in v1}
    for name in v1:  # the deploy registered nothing new
        assert [v["version"] for v in runtime.registry.versions(name)] == [1]
    # Tags travel with the runs: filter by them.
    tree_runs = runtime.tracker.runs(batch_id=second.batch_id, tags={"family": "tree"})
    assert {r["model"] for r in tree_runs} == {f"tree-{uniq}"} and len(tree_runs) == 4


def test_no_cache_recomputes_every_stage_once_per_batch(tmp_path: Path, settings: Settings, workers: Any,
                                                       app: Any, runtime: Runtime, uniq: str) -> None:
    # Two estimators on one dataset: one preprocess key, as ten estimators of one store share theirs.
    data = synthetic(uniq)
    spec = {"name": f"nocache-{uniq}", "models": [
        model(f"nc-{uniq}", TREE, {"max_depth": 3, "random_state": 0}, data),
        model(f"nc-lr-{uniq}", LOGREG, {"max_iter": 300}, data)]}
    first, _ = run_batch(load(tmp_path, spec, settings), app, runtime)
    second, status = run_batch(load(tmp_path, spec, settings), app, runtime, no_cache=True)

    assert status.counts == {"promoted": 2}
    runs = runtime.tracker.runs(batch_id=second.batch_id)
    assert len(runs) == 8
    # Nothing the first batch stored is reused; the split both models share is computed once
    # by this batch and reused by its other model (the entry names the batch that stored it).
    hits = [r for r in runs if r["cache_hit"]]
    assert [r["stage"] for r in hits] == ["preprocess"], [(r["model"], r["stage"]) for r in hits]
    preprocess = [r for r in runs if r["stage"] == "preprocess"]
    assert preprocess[0]["cache_key"] == preprocess[1]["cache_key"]
    entry = json.loads(runtime.redis.hget(keys.CACHE, preprocess[0]["cache_key"]) or "{}")
    assert entry.get("batch") == second.batch_id
    assert {r["result"]["data_digest"] for r in preprocess} == {entry["value"]["data_digest"]}
    record = runtime.tracker.get_batch(second.batch_id)
    assert record is not None and record["no_cache"] is True
    # The recomputed results are cached again: a third, cached run hits them.
    third, _ = run_batch(load(tmp_path, spec, settings), app, runtime)
    assert all(r["cache_hit"] for r in runtime.tracker.runs(batch_id=third.batch_id)
               if r["stage"] != "deploy")


def test_one_parameter_change_recomputes_only_that_models_train_evaluate_deploy(
        tmp_path: Path, settings: Settings, workers: Any, app: Any, runtime: Runtime,
        uniq: str) -> None:
    data = synthetic(uniq)
    steady = model(f"steady-{uniq}", LOGREG, {"max_iter": 500}, data)
    changed = model(f"changed-{uniq}", TREE, {"max_depth": 3}, data)
    _, s1 = run_batch(load(tmp_path, {"name": f"p1-{uniq}", "models": [steady, changed]}, settings),
                      app, runtime)
    assert s1.counts == {"promoted": 2}

    changed["estimator"]["params"]["max_depth"] = 5
    handle, s2 = run_batch(load(tmp_path, {"name": f"p2-{uniq}", "models": [steady, changed]},
                                settings), app, runtime)

    assert s2.counts == {"promoted": 2}
    runs = runs_by(runtime, handle.batch_id)
    hits = {key: [r["cache_hit"] for r in rs] for key, rs in runs.items()}
    assert hits[(f"steady-{uniq}", "preprocess")] == [True]
    assert hits[(f"steady-{uniq}", "train")] == [True]
    assert hits[(f"steady-{uniq}", "evaluate")] == [True]
    assert hits[(f"changed-{uniq}", "preprocess")] == [True]
    assert hits[(f"changed-{uniq}", "train")] == [False]
    assert hits[(f"changed-{uniq}", "evaluate")] == [False]
    rows = {r.name: r.version for r in s2.rows}
    assert rows == {f"steady-{uniq}": 1, f"changed-{uniq}": 2}
    assert len(runtime.registry.versions(f"changed-{uniq}")) == 2
    assert len(runtime.registry.versions(f"steady-{uniq}")) == 1


def test_identical_preprocessing_in_one_batch_is_computed_once(
        tmp_path: Path, settings: Settings, workers: Any, app: Any, runtime: Runtime,
        uniq: str) -> None:
    data = synthetic(uniq, n=400)
    models = [model(f"twin{i}-{uniq}", est, params, data) for i, (est, params) in
              enumerate([(LOGREG, {"max_iter": 500}), (TREE, {"max_depth": 3}),
                         (TREE, {"max_depth": 6})])]
    handle, status = run_batch(load(tmp_path, {"name": f"twins-{uniq}", "models": models},
                                    settings), app, runtime)

    assert status.counts == {"promoted": 3}
    pre = [r for r in runtime.tracker.runs(batch_id=handle.batch_id) if r["stage"] == "preprocess"]
    assert len(pre) == 3
    assert sum(not r["cache_hit"] for r in pre) == 1, "preprocess should run once for three models"
    assert len({tuple(r["outputs"]) for r in pre}) == 1


def test_concurrent_deploys_of_one_name_get_consecutive_versions_threads(runtime: Runtime,
                                                                        uniq: str) -> None:
    name, threads, per_thread = f"race-{uniq}", 8, 6
    got: list[tuple[int, bool]] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def deploy(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            result = runtime.registry.register(name, f"{uniq}-artifact-{t}-{i}", {"metrics": {}})
            with lock:
                got.append(result)

    pool = [threading.Thread(target=deploy, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()

    versions = sorted(v for v, created in got)
    assert versions == list(range(1, threads * per_thread + 1)) and all(c for _, c in got)
    # Idempotent: the same artifact again is the same version, nothing new.
    assert runtime.registry.register(name, f"{uniq}-artifact-3-2", {"metrics": {}})[1] is False
    assert len(runtime.registry.versions(name)) == threads * per_thread
    # Every version reached the durable copy that `reindex` rebuilds from, once.
    journaled = sorted(r["record"]["version"] for r in runtime.registry.journal.replay("version")
                       if r["record"]["name"] == name)
    assert journaled == versions


def test_concurrent_deploys_of_one_name_through_workers(tmp_path: Path, settings: Settings,
                                                        workers: Any, app: Any, runtime: Runtime,
                                                        uniq: str) -> None:
    # One model name, n batches at once with n different params: n different artifacts.
    name, n = f"same-{uniq}", 5
    handles = []
    for i in range(n):
        spec = {"name": f"race{i}-{uniq}", "models": [
            model(name, LOGREG, {"max_iter": 500, "C": 0.1 * (i + 1)}, synthetic(uniq))]}
        handles.append(submit(load(tmp_path, spec, settings), app, runtime))
    statuses = [h.wait(timeout=180) for h in handles]

    assert all(s.counts == {"promoted": 1} for s in statuses)
    assert sorted(s.rows[0].version for s in statuses) == list(range(1, n + 1))  # type: ignore[type-var]
    assert [v["version"] for v in runtime.registry.versions(name)] == list(range(1, n + 1))


def test_promote_rollback_lineage_and_serving(tmp_path: Path, settings: Settings, workers: Any,
                                              app: Any, runtime: Runtime, uniq: str) -> None:
    name = f"iris-serve-{uniq}"
    iris = {"kind": "sklearn", "name": "iris"}
    batches = []
    for depth in (1, 3):  # no margin in the gate: each better-or-equal version takes production
        spec = {"name": f"serve{depth}-{uniq}", "models": [
            model(name, TREE, {"max_depth": depth, "random_state": seed_of(uniq)}, iris,
                  tags={"region": f"eu-{uniq}"},
                  deploy={"alias": "production", "gate": {"min_improvement": 0.0}})]}
        handle, status = run_batch(load(tmp_path, spec, settings), app, runtime)
        assert status.counts == {"promoted": 1}
        batches.append(handle.batch_id)
    assert runtime.registry.aliases(name) == {"production": 2}

    # promote by hand, roll back to where it was
    assert run_cli(["promote", name, "1", "--alias", "production"], settings, tmp_path).returncode == 0
    assert runtime.registry.aliases(name) == {"production": 1}
    result = run_cli(["rollback", name, "--alias", "production"], settings, tmp_path)
    assert result.returncode == 0, result.stderr
    assert runtime.registry.aliases(name) == {"production": 2}
    # a whole batch, then a whole tag
    assert run_cli(["promote", "--batch", batches[0], "--alias", "staging"], settings,
                tmp_path).returncode == 0
    assert runtime.registry.aliases(name)["staging"] == 1
    assert run_cli(["promote", "--tag", f"region=eu-{uniq}", "--alias", "staging"], settings,
                tmp_path).returncode == 0
    assert runtime.registry.aliases(name)["staging"] == 2
    assert run_cli(["rollback", "--tag", f"region=eu-{uniq}", "--alias", "staging"], settings,
                tmp_path).returncode == 0
    assert runtime.registry.aliases(name)["staging"] == 1
    # The durable copy `reindex` uses holds the newest aliases and their history.
    aliases_copy = runtime.registry.stored_records()[1][name]
    assert aliases_copy["aliases"] == runtime.registry.aliases(name)
    assert aliases_copy["history"]["staging"] == runtime.registry.history(name, "staging")

    # lineage of production: dataset digest, params, code and libraries, batch, runs, metrics
    out = run_cli(["lineage", f"{name}@production", "--json"], settings, tmp_path)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["version"] == 2 and info["batch_id"] == batches[1]
    assert info["estimator_params"]["max_depth"] == 3 and info["dataset"] == iris
    assert set(info["libraries"]) == {"scikit-learn", "numpy"} and len(info["stage_versions"]["train"]) == 16
    pre = runtime.tracker.get_run(info["run_ids"]["preprocess"])
    assert pre is not None and pre["inputs"] == [info["dataset_digest"]]
    train = runtime.tracker.get_run(info["run_ids"]["train"])
    assert train is not None and info["model_digest"] in train["outputs"]
    deploy = runtime.tracker.get_run(info["run_ids"]["deploy"])
    assert deploy is not None and deploy["batch_id"] == batches[1]
    assert info["metrics"]["accuracy"] == runtime.registry.version(name, 2)["metrics"]["accuracy"]
    table = run_cli(["lineage", f"{name}@production"], settings, tmp_path)
    assert table.returncode == 0 and info["dataset_digest"][:20] in table.stdout

    # serving: raw iris rows in, the accuracy the evaluation reported (on all rows: close to it)
    X, y = load_iris(return_X_y=True)
    fitted = load_model(f"{name}@production", runtime=runtime)
    assert float(np.mean(fitted.predict(X) == y)) > 0.9
    assert load_deployed(f"{name}/1", runtime).version == 1
    with pytest.raises(KeyError):
        load_model(f"{name}@nope", runtime=runtime)


def test_read_commands_print_tables_and_json(tmp_path: Path, settings: Settings, workers: Any,
                                             app: Any, runtime: Runtime, uniq: str) -> None:
    data = synthetic(uniq)
    spec = {"name": f"cli-{uniq}", "models": [
        model(f"a-{uniq}", LOGREG, {"max_iter": 500}, data, tags={"team": f"t{uniq}"}),
        model(f"b-{uniq}", TREE, {"max_depth": 2}, data)]}
    h1, _ = run_batch(load(tmp_path, spec, settings), app, runtime)
    spec["models"][1]["estimator"]["params"]["max_depth"] = 6
    h2, _ = run_batch(load(tmp_path, spec, settings), app, runtime)

    runs = json.loads(run_cli(["runs", "--batch", h2.batch_id, "--json"], settings, tmp_path).stdout)
    assert len(runs) == 8 and {r["batch_id"] for r in runs} == {h2.batch_id}
    tagged = json.loads(run_cli(["runs", "--tag", f"team=t{uniq}", "--json"], settings, tmp_path).stdout)
    assert {r["model"] for r in tagged} == {f"a-{uniq}"} and len(tagged) == 8
    hits = Counter(r["cache_hit"] for r in runs if r["stage"] != "deploy")
    assert hits == {True: 4, False: 2}

    cmp = json.loads(run_cli(["compare", h1.batch_id, h2.batch_id, "--json"], settings, tmp_path).stdout)
    by_model = {r["model"]: r for r in cmp}
    assert by_model[f"a-{uniq}"]["delta"] == 0
    b = by_model[f"b-{uniq}"]
    assert b["delta"] == pytest.approx(b["b"] - b["a"])

    shown = json.loads(run_cli(["show", f"b-{uniq}", "--json"], settings, tmp_path).stdout)
    assert [r["batch_id"] for r in shown["batches"]] == [h1.batch_id, h2.batch_id]
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    listed = json.loads(run_cli(["models", "--tag", f"team=t{uniq}", "--json"], settings, tmp_path).stdout)
    assert [m["name"] for m in listed] == [f"a-{uniq}"]
    grouped = json.loads(run_cli(["models", "--group-by", "team", "--json"], settings, tmp_path).stdout)
    mine = [m["name"] for m in grouped if m["name"] in (f"a-{uniq}", f"b-{uniq}")]
    assert mine == [f"a-{uniq}", f"b-{uniq}"]  # tagged first, untagged last
    versions = json.loads(run_cli(["models", "versions", f"b-{uniq}", "--json"], settings, tmp_path).stdout)
    assert [v["version"] for v in versions["versions"]] == [1, 2]
    board = json.loads(run_cli(["leaderboard", h2.batch_id, "--group-by", "team", "--json"], settings,
                            tmp_path).stdout)
    [section] = board["sections"]
    assert [(r["name"], r["tags"].get("team")) for r in section["rows"]] == [
        (f"a-{uniq}", f"t{uniq}"), (f"b-{uniq}", None)]  # grouped: the tagged first
    only = json.loads(run_cli(["leaderboard", h2.batch_id, "--tag", f"team=t{uniq}", "--json"], settings,
                           tmp_path).stdout)
    assert [r["name"] for s in only["sections"] for r in s["rows"]] == [f"a-{uniq}"]
    versions_cmp = json.loads(run_cli(["compare", f"b-{uniq}/1", f"b-{uniq}/2", "--json"], settings,
                                      tmp_path).stdout)
    assert [(r["model"], r["metric"], r["a"], r["b"], r["status_b"]) for r in versions_cmp] == [
        (f"b-{uniq}", "accuracy", b["a"], b["b"], "version 2")]
    tagged_cmp = json.loads(run_cli(["compare", "--tag", f"team=t{uniq}", h1.batch_id, h2.batch_id,
                                     "--json"], settings, tmp_path).stdout)
    assert [r["model"] for r in tagged_cmp] == [f"a-{uniq}"]
    stats = json.loads(run_cli(["cache", "stats", "--json"], settings, tmp_path).stdout)
    assert stats["entries"] > 0 and stats["hits"] >= 4 and 0 < stats["hit_rate"] < 1
    for args in (["runs", "--batch", h1.batch_id], ["show", f"a-{uniq}"],
                 ["compare", h1.batch_id, h2.batch_id], ["models"], ["models", "versions", f"a-{uniq}"],
                 ["cache", "stats"], ["batches"]):
        result = run_cli(args, settings, tmp_path)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stderr)
    bad = run_cli(["show", f"nobody-{uniq}"], settings, tmp_path)
    assert bad.returncode == 2 and "nobody" in bad.stderr
