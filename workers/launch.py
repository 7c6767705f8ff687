"""What a worker's start does before Celery's command line runs, shared by
`python -m workers worker` (workers/__main__.py) and the forked local workers (workers/forked.py)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from workers.skops_import import import_skops


def prepare_worker(check_cache_dir: Path | None) -> None:
    """skops with its estimator names from disk (workers/skops_import.py), and Celery's
    command line without its plugin commands (Flower's, which import tornado,
    prometheus_client, ...): a worker runs none of them."""
    import_skops(check_cache_dir)
    import importlib.metadata as metadata

    entry_points = metadata.entry_points
    metadata.entry_points = lambda **params: (  # type: ignore[assignment]
        metadata.EntryPoints(()) if params.get("group") == "celery.commands" else entry_points(**params))
    try:
        import celery.bin.celery  # noqa: F401
    finally:
        metadata.entry_points = entry_points


def celery_main(argv: Sequence[str]) -> None:
    """`celery -A workers.app ARGV`, in this process."""
    from celery.__main__ import main

    sys.argv = [sys.argv[0], "-A", "workers.app", *argv]
    main()
