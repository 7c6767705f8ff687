"""The cache's code part follows the source a stage runs; model files are byte-stable."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from tests.conftest import REPO
from workers import stages
from workers.fingerprint import reached_definitions, reached_modules
from workers.pipeline.train import dump_model, load_model

_VERSIONS = "import json, workers.stages as s; print(json.dumps(s.stage_code_versions()))"


def _versions_of(copy: Path) -> dict[str, str]:
    """The stage code versions as a fresh process computes them from the package in `copy`."""
    out = subprocess.run([sys.executable, "-c", _VERSIONS], cwd=copy, env={"PYTHONPATH": str(copy)},
                         capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(out.stdout))


def _copy_with_edit(tmp_path: Path, relpath: str, edit: str) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "workers", copy / "workers")  # compiled files too: a faster import
    with (copy / relpath).open("a") as f:
        f.write(edit)
    return copy


@pytest.mark.slow  # a fresh process imports celery and scikit-learn: ~5 s
def test_editing_evaluate_changes_only_the_evaluate_key(tmp_path: Path) -> None:
    # Given the code versions of this checkout (a copy's are the same: they hash source only)
    before = stages.stage_code_versions()
    # When workers/pipeline/evaluate.py is edited in a copy of the package
    # (a later definition of a name replaces the earlier one, as when Python runs the module)
    after = _versions_of(_copy_with_edit(tmp_path, "workers/pipeline/evaluate.py",
                                         "\n\ndef plot_data(*args, **kwargs):\n    return {}\n"))
    # Then evaluate misses, preprocess, train and deploy keep their keys
    changed = {stage for stage in before if before[stage] != after[stage]}
    assert changed == {"evaluate"}, (before, after)


@pytest.mark.slow  # a fresh process imports celery and scikit-learn: ~5 s
def test_editing_a_shared_function_changes_every_stage_that_runs_it(tmp_path: Path) -> None:
    before = stages.stage_code_versions()
    after = _versions_of(_copy_with_edit(tmp_path, "workers/pipeline/preprocess.py",
                                         "\n\ndef load_split(*args, **kwargs):\n    return None\n"))
    # train and evaluate load the split with preprocess.load_split; preprocess writes it
    assert {s for s in before if before[s] != after[s]} == {"train", "evaluate"}


@pytest.mark.slow  # a fresh process imports celery and scikit-learn: ~5 s
def test_a_comment_changes_no_stage(tmp_path: Path) -> None:
    before = stages.stage_code_versions()
    assert _versions_of(_copy_with_edit(tmp_path, "workers/pipeline/evaluate.py",
                                        "\n# a note\n")) == before


@pytest.mark.slow  # a fresh process imports celery and scikit-learn: ~5 s
def test_editing_the_store_changes_every_stage_and_editing_the_index_writers_none(tmp_path: Path) -> None:
    """Issue 19: the fingerprints covered the pipeline only, not workers/store.py, whose code
    decides how a stage's outputs are written and named (the report's digest is put_json's)."""
    before = stages.stage_code_versions()
    store = _copy_with_edit(tmp_path / "store", "workers/store.py",
                            "\n\ndef digest_bytes(data):\n    return hashlib.sha1(data).hexdigest()\n")
    assert {s for s in before if before[s] != _versions_of(store)[s]} == set(before)
    # The machinery around a step (where its records go) does not change what it computes
    tracking = _copy_with_edit(tmp_path / "tracking", "workers/tracking.py", "\n\n_CHUNK = 100\n")
    assert _versions_of(tracking) == before


def test_stage_modules_are_found_from_the_stage_functions() -> None:
    assert ("workers.pipeline.evaluate", "plot_data") in reached_definitions(stages._evaluate)
    # train runs the CV scores of evaluate.py, not its plots
    assert ("workers.pipeline.evaluate", "score") in reached_definitions(stages._train)
    assert ("workers.pipeline.evaluate", "plot_data") not in reached_definitions(stages._train)
    assert ("workers.pipeline.train", "_get_state") in reached_definitions(stages._train)
    assert "workers.pipeline.estimators" in reached_modules(stages._train)
    # Beyond the pipeline: the store and the spec (reached through attributes), the team's
    # package versions, and the gate's decision
    for stage in (stages._preprocess, stages._train, stages._evaluate, stages._deploy):
        assert {("workers.store", "ArtifactStore"), ("workers.contracts", "ModelSpec")} <= \
            reached_definitions(stage)
    assert ("workers.usercode", "code_versions") in reached_definitions(stages._train)
    assert ("workers.registry", "decide") in reached_definitions(stages._deploy)
    assert len(set(stages.stage_code_versions().values())) == 4


def test_identical_fits_dump_to_identical_bytes_that_load() -> None:
    X, y = load_iris(return_X_y=True)
    first = dump_model(RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y))
    second = dump_model(RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y))
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    loaded = load_model(first, ["sklearn."])
    assert (loaded.predict(X) == RandomForestClassifier(n_estimators=3, random_state=0)
            .fit(X, y).predict(X)).all()
