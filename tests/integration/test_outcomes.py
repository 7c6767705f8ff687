"""Honest outcomes with real workers: promoted vs registered, --fail-on-gate, lineage of a
never-promoted model, and an identical refit that keeps its version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from producer.status import batch_status
from tests.conftest import load, run_batch, write_spec
from workers import keys
from workers.runtime import Runtime
from workers.settings import Settings

pytestmark = pytest.mark.integration


def _cli(args: list[str], settings: Settings, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.to_env(), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "producer", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=180)


def _tree(name: str, dataset: str, depth: int, threshold: float) -> dict[str, Any]:
    return {"name": name, "task": "classification", "dataset": {"kind": "sklearn", "name": dataset},
            "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier",
                          "params": {"max_depth": depth, "random_state": 0}},
            "deploy": {"gate": {"metric": "accuracy", "threshold": threshold}}}


def _batch_id(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.split("submitted batch ")[1].split()[0]


@pytest.mark.slow  # three batches and seven command-line processes: about 45 s on 2 busy cores
def test_gate_outcomes_fail_on_gate_and_identical_refit(tmp_path: Path, settings: Settings,
                                                        workers: Any, runtime: Runtime,
                                                        uniq: str) -> None:
    passes, stuck = f"pass-{uniq}", f"stuck-{uniq}"
    # A depth-1 tree on wine (3 classes) cannot reach 99% accuracy: registered, not promoted.
    models = [_tree(passes, "iris", 3, 0.8), _tree(stuck, "wine", 1, 0.99)]
    spec = write_spec(tmp_path, {"name": f"gates-{uniq}", "models": models})

    # When the batch runs without --fail-on-gate, it exits 0, and the outcomes differ
    first = _cli(["submit", str(spec), "--wait", "--timeout", "150"], settings, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "1 promoted, 1 registered" in first.stdout
    status = json.loads(_cli(["status", _batch_id(first), "--json"], settings, tmp_path).stdout)
    assert status["counts"] == {"promoted": 1, "registered": 1}
    rows = {r["name"]: r for r in status["rows"]}
    assert rows[passes]["status"] == "promoted" and rows[stuck]["status"] == "registered"
    assert "gate failed: accuracy=" in rows[stuck]["reason"]
    shown = _cli(["show", stuck, "--json"], settings, tmp_path)
    assert json.loads(shown.stdout)["batches"][-1]["status"] == "registered", shown.stdout
    deploys = _cli(["runs", "--batch", _batch_id(first), "--stage", "deploy"], settings, tmp_path)
    assert "registered: gate failed" in deploys.stdout and "promoted" in deploys.stdout, deploys.stdout
    versions = {n: rows[n]["version"] for n in (passes, stuck)}
    digests = {r["model"]: r["outputs"] for r in runtime.tracker.runs(batch_id=_batch_id(first))
               if r["stage"] == "train"}

    # The never-promoted model's alias says so instead of "no alias"
    lineage = _cli(["lineage", f"{stuck}@production"], settings, tmp_path)
    assert lineage.returncode == 2 and "Traceback" not in lineage.stderr
    assert f"{stuck} was never promoted to 'production'" in lineage.stderr
    assert "gate failed" in lineage.stderr

    # When the same batch runs again with --no-cache (every stage recomputed) and --fail-on-gate
    second = _cli(["submit", str(spec), "--wait", "--no-cache", "--fail-on-gate", "--timeout", "150"],
                  settings, tmp_path)
    # Then it exits 1 for the gate, and the identical refit registers no new version
    assert second.returncode == 1, second.stdout + second.stderr
    assert "1 of 2 models were registered but not promoted" in second.stderr
    refit = runtime.tracker.runs(batch_id=_batch_id(second))
    assert not any(r["cache_hit"] for r in refit), "--no-cache recomputed every stage"
    assert {r["model"]: r["outputs"] for r in refit if r["stage"] == "train"} == digests
    again = batch_status(runtime, _batch_id(second))
    assert {r.name: r.version for r in again.rows} == versions
    assert [v["version"] for v in runtime.registry.versions(passes)] == [versions[passes]]
    assert runtime.registry.aliases(passes) == {"production": versions[passes]}
    assert runtime.registry.aliases(stuck) == {}

    # The spec option does what the flag does
    strict = write_spec(tmp_path, {"name": f"strict-{uniq}", "fail_on_gate": True, "models": models},
                        "strict.yaml")
    third = _cli(["submit", str(strict), "--wait", "--timeout", "150"], settings, tmp_path)
    assert third.returncode == 1 and "registered but not promoted" in third.stderr, third.stderr


def test_same_content_key_returns_the_existing_version(runtime: Runtime, uniq: str) -> None:
    """Model files whose bytes differ (an estimator without a seed, a library that stamps
    them) but whose data, params, code and metrics are the same register once."""
    name = f"content-{uniq}"
    record = {"metrics": {"accuracy": 0.9}}
    first = runtime.registry.register_record(name, f"report-a-{uniq}", record, content_key="k1")
    again = runtime.registry.register_record(name, f"report-b-{uniq}", record, content_key="k1")
    other = runtime.registry.register_record(name, f"report-c-{uniq}", record, content_key="k2")
    assert (first[0]["version"], first[1]) == (1, True)
    assert (again[0]["version"], again[1]) == (1, False)
    assert (other[0]["version"], other[1]) == (2, True)
    # reindex rebuilds the content index from the stored records
    runtime.redis.delete(keys.version_by_digest(name))
    runtime.registry.reindex()
    assert runtime.registry.register_record(name, f"report-d-{uniq}", record, content_key="k2")[0] == \
        other[0]


def test_a_registration_reads_the_models_aliases_in_the_same_trip(runtime: Runtime, uniq: str) -> None:
    name = f"aliases-{uniq}"
    record = {"metrics": {"accuracy": 0.9}}
    first = runtime.registry.register_reading_aliases(name, f"report-a-{uniq}", record)
    assert first[1:] == (True, {})
    runtime.registry.promote(name, first[0]["version"], "production")
    runtime.registry.promote(name, first[0]["version"], "staging")
    second = runtime.registry.register_reading_aliases(name, f"report-b-{uniq}", record)
    again = runtime.registry.register_reading_aliases(name, f"report-b-{uniq}", record)
    assert (second[0]["version"], second[1]) == (2, True) and (again[0]["version"], again[1]) == (2, False)
    assert second[2] == again[2] == {"production": 1, "staging": 1} == runtime.registry.aliases(name)


def test_identical_refit_is_decided_again_under_a_changed_gate(tmp_path: Path, settings: Settings,
                                                                 workers: Any, app: Any,
                                                                 runtime: Runtime, uniq: str) -> None:
    """Issue 19: an identical refit kept its version's old gate decision after the gate changed."""
    name = f"regate-{uniq}"
    # Given a depth-1 tree on iris (about 2/3 accuracy) registered, not promoted, under a 0.95 gate
    strict = load(tmp_path, {"name": f"strict-{uniq}", "models": [_tree(name, "iris", 1, 0.95)]}, settings)
    _, first = run_batch(strict, app, runtime)
    assert first.counts == {"registered": 1}, first.rows
    version = first.rows[0].version
    assert runtime.registry.aliases(name) == {}

    # When the same model is submitted again (every stage a cache hit) under a 0.5 gate
    loose = load(tmp_path, {"name": f"loose-{uniq}", "models": [_tree(name, "iris", 1, 0.5)]}, settings)
    _, second = run_batch(loose, app, runtime)

    # Then the same version is decided again: promoted, the alias moves to it
    assert second.counts == {"promoted": 1}, second.rows
    assert second.rows[0].version == version and second.rows[0].reason == "gate passed"
    assert [v["version"] for v in runtime.registry.versions(name)] == [version]
    assert runtime.registry.aliases(name) == {"production": version}
    record = runtime.registry.version(name, version)
    decisions = [(d["promoted"], d["gate"]["threshold"]) for d in record["decisions"]]
    assert decisions == [(False, 0.95), (True, 0.5)]
    assert record["decision"]["promoted"] is True

    # And a third refit under the same gate reuses that decision (no third one),
    # while the index rebuilt from the artifact root keeps the newest
    _, third = run_batch(load(tmp_path, {"name": f"again-{uniq}", "models": [_tree(name, "iris", 1, 0.5)]},
                              settings), app, runtime)
    assert third.counts == {"promoted": 1}
    assert len(runtime.registry.version(name, version)["decisions"]) == 2
    runtime.redis.delete(keys.versions(name))
    runtime.registry.reindex()
    assert runtime.registry.version(name, version)["decision"]["gate"]["threshold"] == 0.5
