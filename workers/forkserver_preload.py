"""Imported once by the local workers' fork server (workers/forked.py), never by a worker.

What every worker imports before its first task: scipy.special first (see
workers/__main__.py), skops with its estimator names from disk, Celery's command line and
the task modules with scikit-learn, pandas and numpy under them. Nothing here reads a
worker's settings or opens a connection: each forked worker reads its own environment.
The server starts with one BLAS thread (workers/forked.py), so its pools are the workers'.
"""

try:
    import scipy.special  # noqa: F401  (first: see workers/__main__.py)

    from workers.launch import prepare_worker
    from workers.settings import Settings

    try:
        check_cache_dir = Settings().check_cache_dir
    except Exception:  # bad settings in this environment: the workers report their own
        check_cache_dir = None
    prepare_worker(check_cache_dir)
    import workers.scoring  # noqa: F401
    import workers.slots  # noqa: F401
    import workers.stages  # noqa: F401
    import workers.warm  # noqa: F401
except Exception:  # noqa: S110  (a worker imports what is missing here; the server must live)
    pass
