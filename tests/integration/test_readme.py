"""The README's first command and its Python API, run as written: real embedded Redis, real
workers, the quickstart's 12 models, with only what `pip install -e '.[local]'` installs.

The developer tools `.[dev]` adds (matplotlib, boto3, moto, hypothesis, ...) are present in the
test environment, so every process started here (the command, its workers) refuses to import
them: a `sitecustomize` on PYTHONPATH blocks them, as a lean install would lack them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Top-level modules that `dev` (and `report`, `s3`, `mlflow`) install and `local` does not.
NOT_IN_LOCAL = ("matplotlib", "boto3", "botocore", "moto", "hypothesis", "mypy", "mlflow", "pytest",
                "check_jsonschema", "kubernetes_validate", "importlinter", "dockerfile_parse", "ruff")

BLOCKER = f'''
import sys
BLOCKED = {NOT_IN_LOCAL!r}

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not installed by .[local] (blocked by the test)")
        return None

sys.meta_path.insert(0, Blocker())
'''


def _readme_block(fence: str, containing: str) -> str:
    """The README's fenced `fence` block that contains `containing`."""
    blocks = re.findall(rf"```{fence}\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return next(b for b in blocks if containing in b)


def _lean_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "lean").mkdir(exist_ok=True)
    (tmp_path / "lean" / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
    env.update(PYTHONPATH=f"{tmp_path / 'lean'}{os.pathsep}{REPO}",
               MODELFLEET_LOCAL_REDIS_DIR=str(tmp_path / "mf" / "redis"),
               MODELFLEET_ARTIFACT_ROOT=str(tmp_path / "mf" / "artifacts"))
    return env


def test_command_one_and_the_python_api_run_as_written_with_the_local_extra_only(tmp_path: Path) -> None:
    # Given the README's command 1: it installs `.[local]` and runs the quickstart
    command = _readme_block("bash", "# 1.").strip().splitlines()[-1]
    install, _, run = command.rpartition(" && ")
    assert "pip install -e '.[local]'" in install and "[dev]" not in install
    env = _lean_env(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import matplotlib"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert probe.returncode == 1 and "blocked by the test" in probe.stderr

    # When it runs (the `modelfleet` script of this environment, as the command names it)
    argv = run.split()
    assert argv[:2] == ["modelfleet", "run"]
    done = subprocess.run([str(Path(sys.executable).with_name("modelfleet")), *argv[1:]], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)

    # Then 12 models are promoted, and the next commands name this batch and its best model
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    batch_id = re.search(r"modelfleet leaderboard (quickstart-\S+)", done.stdout)
    assert batch_id, done.stdout[-3000:]
    assert "12 promoted" in done.stdout
    assert re.search(r"modelfleet predict \S+-\S+@production ROWS\.csv", done.stdout), done.stdout[-2000:]
    assert f"modelfleet report --batch {batch_id.group(1)} --out reports" in done.stdout
    assert "modelfleet up --workers 2" in done.stdout and "--segment-by" not in done.stdout

    # And the README's Python API block, run as written afterwards (its Redis and workers
    # started and stopped by the call), runs the batch again and predicts
    code = _readme_block("python", "modelfleet.run(")
    api = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert api.returncode == 0, api.stderr[-3000:]
    counts, predicted = api.stdout.strip().splitlines()[-2:]
    assert counts == "{'promoted': 12}", api.stdout
    assert predicted == "[0]", api.stdout  # iris row 0 is a setosa
    # Nothing it started is left running: the embedded Redis's address file is gone.
    assert not (tmp_path / "mf" / "redis.address").exists()
