"""Warm a worker's main process before it forks its pool children.

Celery sends `celeryd_after_setup` after importing the task modules and setting up its
logging, and before it starts the pool (and forks). The stages' code versions are read
from an earlier start's copy or computed (workers/code_versions.py); scikit-learn's
`check_random_state` gets its cheaper int seeding (workers/pipeline/seeding.py); the
rehearsal of the steps (workers/pipeline/warmup.py) runs there once; the versions of the team's allow-listed
packages are read (a scan of every installed distribution: 0.17 s that each child paid
in its first stage of a team's model); then every object left is frozen out of the
garbage collector's sight, so the children's collections do not touch (and copy) the
pages they share with their parent.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from celery.signals import celeryd_after_setup

from workers import usercode

log = logging.getLogger(__name__)


@celeryd_after_setup.connect
def _warm_before_fork(instance: Any = None, **_: Any) -> None:
    from workers import code_versions
    from workers.pipeline import seeding
    from workers.pipeline.warmup import rehearse

    started = time.perf_counter()
    settings = getattr(getattr(instance, "app", None), "modelfleet_settings", None)
    try:
        code_versions.load_or_compute(None if settings is None else settings.check_cache_dir)
        if not seeding.install():
            log.info("numpy's RandomState(int) differs from the cheap one: scikit-learn seeds as usual")
        rehearse()
        if settings is not None:
            usercode.code_versions(p.rstrip(".") for p in settings.allowed_estimator_prefixes)
    except Exception:  # a failed rehearsal only leaves the first stages their lazy costs
        log.warning("warm-up rehearsal failed; the first stages will be slower", exc_info=True)
    gc.collect()
    gc.freeze()
    log.info("warmed up in %.2f s", time.perf_counter() - started)
