"""`import modelfleet`: the names a script needs, and nothing heavy until one is used."""

from __future__ import annotations

import subprocess
import sys

import modelfleet


def test_the_public_names() -> None:
    assert {"Settings", "load_batch", "submit", "load_model", "predict"} <= set(modelfleet.__all__)
    assert all(callable(getattr(modelfleet, name)) for name in modelfleet.__all__)


def test_import_loads_neither_scikit_learn_nor_celery() -> None:
    code = ("import sys, modelfleet; heavy = [m for m in ('sklearn', 'celery', 'numpy') if m in sys.modules];"
            " print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""
