"""skops imported with scikit-learn's estimator names from disk: the same trusted lists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from workers.skops_import import names_file

# skops' default trusted lists as a fresh process builds them, and whether scikit-learn's
# estimator crawl ran (it imports sklearn.utils._testing, which nothing else here does).
_LISTS = """
import json, sys
from pathlib import Path
import scipy.special
from workers.skops_import import import_skops
import_skops(Path(sys.argv[1]))
import sklearn.utils
import skops.io._trusted_types as trusted
print(json.dumps({"lists": {k: getattr(trusted, k) for k in dir(trusted) if k.endswith("_NAMES")},
                  "crawled": "sklearn.utils._testing" in sys.modules,
                  "restored": trusted.all_estimators is sklearn.utils.all_estimators}))
"""


def _fresh_import(directory: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _LISTS, str(directory)], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


@pytest.mark.slow  # two fresh processes import scikit-learn and skops: ~4 s each
def test_a_later_import_reads_the_names_and_skops_trusts_the_same_types(tmp_path: Path) -> None:
    # Given a names file skops makes no name of (as a skops that reads more than a module
    # and a name would): the first import is done again in full, and the file written again
    names_file(tmp_path).write_text('[["elsewhere.module", "Thing"]]')
    first = _fresh_import(tmp_path)
    assert first["crawled"] and first["restored"]
    assert "importing it in full" in first["stderr"]
    stored = json.loads(names_file(tmp_path).read_text())
    assert ["sklearn.ensemble._forest", "RandomForestRegressor"] in stored
    # When a later process imports skops
    later = _fresh_import(tmp_path)
    # Then it did not crawl, and skops' trusted lists are the same, in the same order
    assert not later["crawled"] and later["restored"] and "in full" not in later["stderr"]
    assert later["lists"] == first["lists"]
    assert "sklearn.ensemble._forest.RandomForestRegressor" in later["lists"]["SKLEARN_ESTIMATOR_TYPE_NAMES"]
