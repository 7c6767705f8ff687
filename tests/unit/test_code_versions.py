"""Stage code versions stored on disk are read back only for the very same source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from workers import code_versions, stages, task
from workers.code_versions import versions_file
from workers.fingerprint import fingerprint
from workers.skops_import import names_file


@pytest.fixture(autouse=True)
def _fresh_versions() -> Iterator[None]:
    """Each test starts and leaves this process with nothing remembered."""
    task.KNOWN_CODE_VERSIONS.clear()
    task.stage_code_version.cache_clear()
    yield
    task.KNOWN_CODE_VERSIONS.clear()
    task.stage_code_version.cache_clear()


def test_versions_are_stored_and_read_back_instead_of_computed(tmp_path: Path) -> None:
    # Given a first start, which computes the fingerprints and stores them
    first = code_versions.load_or_compute(tmp_path)
    assert first == {stage: fingerprint(body) for stage, body in task.BODIES.items()}
    assert json.loads(versions_file(tmp_path).read_text()) == first
    # When a later start of the same source finds the file (here altered, to see it is read)
    versions_file(tmp_path).write_text(json.dumps({stage: f"read-{stage}" for stage in first}))
    task.stage_code_version.cache_clear()
    read = code_versions.load_or_compute(tmp_path)
    # Then the cache keys use what the file says, and nothing was computed
    assert read == {stage: f"read-{stage}" for stage in first}
    assert stages.stage_code_versions() == read


@pytest.mark.parametrize("content", ["{not json", "[]", '{"train": "x"}',
                                     '{"preprocess": "", "train": "a", "evaluate": "b", "deploy": "c"}'])
def test_a_damaged_file_is_computed_again_and_replaced(tmp_path: Path, content: str) -> None:
    expected = {stage: fingerprint(body) for stage, body in task.BODIES.items()}
    versions_file(tmp_path).write_text(content)
    assert code_versions.load_or_compute(tmp_path) == expected
    assert json.loads(versions_file(tmp_path).read_text()) == expected


def test_without_a_usable_directory_the_versions_are_computed(tmp_path: Path) -> None:
    expected = {stage: fingerprint(body) for stage, body in task.BODIES.items()}
    assert code_versions.load_or_compute(None) == expected
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert code_versions.load_or_compute(blocked / "sub") == expected  # not writable: no error


def test_any_edit_of_the_package_names_another_file(tmp_path: Path) -> None:
    # Given a copy of the package: the same source, the same digest
    copy = tmp_path / "workers"
    shutil.copytree(REPO / "workers", copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_versions.sources_digest(copy) == code_versions.sources_digest()
    # An edit anywhere (even a comment, even outside what a fingerprint reads) changes it ...
    with (copy / "pipeline" / "evaluate.py").open("a") as f:
        f.write("\n# a note\n")
    edited = code_versions.sources_digest(copy)
    assert edited != code_versions.sources_digest()
    # ... and so does a new module, which could change what a stage's imports find
    (copy / "pipeline" / "extra.py").write_text("")
    assert code_versions.sources_digest(copy) not in {edited, code_versions.sources_digest()}


@pytest.mark.slow  # a fresh process imports the worker's modules: ~5 s
def test_startfiles_stores_what_a_first_worker_start_reads(tmp_path: Path) -> None:
    # The image's build runs it (deploy/Dockerfile), so a new container reads, not computes
    env = {**os.environ, "MODELFLEET_CHECK_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-m", "workers.startfiles"], cwd=REPO, env=env, capture_output=True,
                   text=True, timeout=120, check=True)
    expected = {stage: fingerprint(body) for stage, body in task.BODIES.items()}
    assert json.loads(versions_file(tmp_path).read_text()) == expected
    assert ["sklearn.linear_model._ridge", "Ridge"] in json.loads(names_file(tmp_path).read_text())
