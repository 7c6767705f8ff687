"""A plain `git clone` carries what its tests and examples read: nothing beside it is needed.

The clone goes to a fresh temporary directory (no ../shared, no data root, no .modelfleet next
to it), and the tests that read the Walmart table and the example specs run from there, with
the clone's own code first on the path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA_TESTS = ["tests/unit/test_spec.py::test_walmart_segments_into_45_store_models",
              "tests/unit/test_pipeline.py::test_walmart_segment_regression_beats_mean",
              "tests/unit/test_features.py::test_walmart_with_date_parts_time_split_and_cv_serves_raw_rows",
              "tests/unit/test_bench_report.py",
              "tests/unit/test_messages.py::test_plan_chains_is_one_chain_state_per_model"]


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs git and a git checkout")
def test_data_dependent_tests_pass_from_a_plain_clone(tmp_path: Path) -> None:
    clone = tmp_path / "alone" / "modelfleet"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone)], check=True,
                   timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
    env["PYTHONPATH"] = str(clone)  # the clone's packages, not the editable install's
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *DATA_TESTS],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout.splitlines()[-1]
    # The clone read its own copy of the table: the path the tests use lies inside it.
    probe = subprocess.run([sys.executable, "-c", "from tests.conftest import EXAMPLE_DATA; "
                            "print(EXAMPLE_DATA.resolve())"], cwd=clone, env=env,
                           capture_output=True, text=True, timeout=60, check=True)
    assert Path(probe.stdout.strip()).is_relative_to(clone.resolve())
