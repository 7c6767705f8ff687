"""`python -m workers ARGS`: Celery's command line (`celery -A workers.app ARGS`), with
scipy.special imported before anything else.

skops, which the task modules import, names scipy's ~230 ufuncs at import by searching
`sys.modules` in import order for each one. Imported first, scipy.special sits at about the
220th module instead of the ~1,050th (after Celery, pandas and scikit-learn): 0.08-0.14 s
of CPU at a worker's start instead of 0.43-0.81 s, with the same names. skops is then
imported with scikit-learn's estimator names read from disk (workers/skops_import.py),
and a worker's command line loads no Celery plugin command (Flower's). Together with the
stage code versions read from disk (workers/code_versions.py): ~0.7 s less CPU a start.
"""

import sys

import scipy.special  # noqa: F401  (first: see above)

from workers.settings import Settings
from workers.skops_import import import_skops

try:
    _names_dir = Settings().check_cache_dir
except ValueError:  # bad settings: the app refuses them below, with the message
    _names_dir = None
import_skops(_names_dir)  # its estimator names from disk (workers/skops_import.py)

if sys.argv[1:2] == ["worker"]:
    # Celery's command line imports every installed plugin command as it is imported
    # (Flower's: tornado, prometheus_client, ...); a worker runs none of them.
    import importlib.metadata as _metadata

    _entry_points = _metadata.entry_points
    _metadata.entry_points = lambda **params: (  # type: ignore[assignment]
        _metadata.EntryPoints(()) if params.get("group") == "celery.commands" else _entry_points(**params))
    try:
        import celery.bin.celery  # noqa: F401
    finally:
        _metadata.entry_points = _entry_points

from celery.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "-A", "workers.app", *sys.argv[1:]]
    main()
