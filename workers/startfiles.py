"""`python -m workers.startfiles`: store what a worker's start reads, ahead of any start.

The stages' code versions (workers/code_versions.py) and skops' list of scikit-learn
estimator names (workers/skops_import.py) follow from the installed code alone. A worker
computes and stores them under `check_cache_dir` at its first start; the image's build
runs this instead, so every container started from it (a compose replica, a pod that an
autoscaler adds) reads them at its very first start.
"""

from __future__ import annotations

import sys

import scipy.special  # noqa: F401  (first, as in a worker: workers/__main__.py)

from workers.settings import settings_or_exit
from workers.skops_import import import_skops, names_file


def main() -> None:
    if sys.argv[1:]:
        print("usage: python -m workers.startfiles (no arguments: the MODELFLEET_* settings say "
              "where)", file=sys.stderr)
        raise SystemExit(2)
    directory = settings_or_exit().check_cache_dir
    if directory is None:
        print("error: MODELFLEET_CHECK_CACHE_DIR is empty: nowhere to store", file=sys.stderr)
        raise SystemExit(2)
    import_skops(directory)
    import workers.stages  # noqa: F401  (registers the stage bodies)
    from workers.code_versions import load_or_compute, versions_file

    load_or_compute(directory)
    for path in (versions_file(directory), names_file(directory)):
        if not path.is_file():
            raise SystemExit(f"could not store {path}")
        print(f"stored {path}")


if __name__ == "__main__":
    main()
