"""Who ran what, from which code: the submitting user, the spec's path and digest, and the
commit and dirty flag of the spec's git checkout, recorded with the batch and shown by
`batches` (and `--user`), `status`, `lineage` and the batch page."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from producer.batchview import batch_view
from producer.cli.page_html import batch_page
from tests.conftest import load, run_batch
from tests.support.processes import run_cli
from workers.runtime import Runtime
from workers.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True, timeout=30).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_batch_records_its_user_spec_digest_and_dirty_commit_and_every_view_shows_them(
        tmp_path: Path, settings: Settings, workers: Any, app: Any, runtime: Runtime, uniq: str) -> None:
    # Given a spec committed in a git checkout that has an uncommitted change, and a named user
    repo = tmp_path / "team"
    repo.mkdir()
    _git(repo, "init", "-q")
    spec = {"name": f"who-{uniq}", "models": [
        {"name": f"who-{uniq}", "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
         "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier"}}]}
    batch = load(repo, spec, settings)
    (repo / "notes.txt").write_text("v1")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "spec")
    commit = _git(repo, "rev-parse", "HEAD")
    (repo / "notes.txt").write_text("v2, not committed")
    user = f"ann-{uniq}"

    # When it is submitted as that user
    handle, status = run_batch(batch, app, Runtime.from_settings(settings.model_copy(update={"user": user})))

    # Then the record holds who, which file and its digest, which commit, and that it was dirty
    record = runtime.tracker.get_batch(handle.batch_id)
    assert record is not None and status.counts == {"promoted": 1}
    spec_file = (repo / "batch.yaml").resolve()
    assert record["submitted_by"] == user and record["spec_path"] == str(spec_file)
    assert record["spec_digest"] == "sha256:" + hashlib.sha256(spec_file.read_bytes()).hexdigest()
    assert record["git_commit"] == commit and record["git_dirty"] is True

    # And `batches --user` lists it (and only that user's), with the user and the commit
    mine = json.loads(run_cli(["batches", "--user", user, "--json"], settings, tmp_path).stdout)
    assert [b["batch_id"] for b in mine] == [handle.batch_id]
    assert mine[0]["origin"]["git_dirty"] is True
    table = run_cli(["batches", "--limit", "200"], settings, tmp_path).stdout
    line = next(x for x in table.splitlines() if handle.batch_id in x)
    assert user in line and f"{commit[:12]}+dirty" in line
    nobody = run_cli(["batches", "--user", f"nobody-{uniq}", "--json"], settings, tmp_path)
    assert nobody.stdout.strip() == "[]"
    # `status`, `lineage` and the batch page say the same
    shown = run_cli(["status", handle.batch_id], settings, tmp_path).stdout
    assert f"by {user}" in shown and str(spec_file) in shown and f"at commit {commit[:12]} (dirty)" in shown
    lineage = json.loads(run_cli(["lineage", f"who-{uniq}@production", "--json"], settings, tmp_path).stdout)
    assert (lineage["submitted_by"], lineage["git_commit"], lineage["git_dirty"]) == (user, commit, True)
    assert lineage["spec_digest"] == record["spec_digest"]
    page = batch_page(batch_view(runtime, handle.batch_id), "http://flower")
    assert f"by {user}" in page and f"at commit {commit[:12]} (dirty)" in page
