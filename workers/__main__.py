"""`python -m workers ARGS`: Celery's command line (`celery -A workers.app ARGS`), with
scipy.special imported before anything else.

skops, which the task modules import, names scipy's ~230 ufuncs at import by searching
`sys.modules` in import order for each one. Imported first, scipy.special sits at about the
220th module instead of the ~1,050th (after Celery, pandas and scikit-learn): 0.08-0.14 s
of CPU at a worker's start instead of 0.43-0.81 s, with the same names. A worker then
imports skops with scikit-learn's estimator names read from disk (workers/skops_import.py),
and its command line loads no Celery plugin command (Flower's). Together with the stage
code versions read from disk (workers/code_versions.py): ~0.7 s less CPU a start.
"""

import sys

import scipy.special  # noqa: F401  (first: see above)

from workers.launch import celery_main, prepare_worker
from workers.settings import settings_or_exit

if sys.argv[1:2] == ["worker"]:
    prepare_worker(settings_or_exit().check_cache_dir)  # bad settings: one line, exit 2

if __name__ == "__main__":
    celery_main(sys.argv[1:])
