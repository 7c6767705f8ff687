"""Loaded models kept in memory, least recently used out first (`predict`, `score`, the workers).

A model file is content-addressed, so its digest names one loaded model for good: a hit
skips reading, the digest check and skops (a 200-tree ensemble: a quarter of a second).
The allow-list is part of the key, so a model loaded under a wider one is not served
under a narrower one. Sized by `Settings.model_cache_size` (0: no cache).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from workers.loadcache import load_cache
from workers.skops_import import import_skops

if TYPE_CHECKING:
    from workers.settings import Settings


class ModelCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self._models: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The model under `key`, loaded by `load()` on a miss (outside the lock: loads are slow)."""
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        model = load()
        with self._lock:
            if self.size > 0:
                self._models[key] = model
                while len(self._models) > self.size:
                    self._models.popitem(last=False)
        return model

    def __len__(self) -> int:
        return len(self._models)

    def resize(self, size: int) -> None:
        with self._lock:
            self.size = size
            while len(self._models) > max(size, 0):
                self._models.popitem(last=False)


# One per process: the producer's `predict`/`score` and each worker process share it.
MODELS = ModelCache(64)


def cached_served(read: Callable[[str], bytes], model_digest: str, transform_digest: str | None,
                  settings: Settings, trusted: dict[str, list[str]] | None = None) -> Any:
    """`load_served` through the process's cache (resized to the settings' size), and on a miss
    through this machine's signed load cache (workers/loadcache.py) where the settings keep one.
    skops is imported only on a miss of both: a `predict` served from this machine's cache
    starts without it (0.6-1 s of CPU)."""
    if MODELS.size != settings.model_cache_size:
        MODELS.resize(settings.model_cache_size)
    allowed = settings.allowed_estimator_prefixes
    key = served_key(model_digest, transform_digest, allowed)

    def load() -> Any:
        # The store's files are read and digest-checked on every load, kept on disk or not: a
        # damaged or replaced file is refused whatever this machine kept. The disk cache spares
        # only skops' work.
        files = {d: read(d) for d in (model_digest, transform_digest) if d is not None}
        disk = load_cache(settings.model_load_cache, settings.model_load_cache_mb)

        def skops_load() -> Any:
            import_skops(settings.check_cache_dir)  # scikit-learn's estimator names from disk
            from workers.pipeline.train import load_served

            return load_served(files.__getitem__, model_digest, transform_digest, allowed, trusted)

        return skops_load() if disk is None else disk.get(key, skops_load)

    return MODELS.get(key, load)


def served_key(model_digest: str, transform_digest: str | None, allowed: list[str]) -> tuple[Any, ...]:
    """What one loaded model is kept under, in memory and on disk: its files and the allow-list
    (a model loaded under a wider list is not served under a narrower one)."""
    return model_digest, transform_digest, tuple(allowed)


# A model file at least this big is also kept in the machine's load cache as it is trained, so a
# predict on the same machine (local runs: `modelfleet run`, then `predict`) finds it loaded the
# first time. A 200-tree ensemble's file is ~1.5 MB and its skops load ~0.18 s; a small model's
# load is a few ms, less than writing its pickle would cost every fit.
KEEP_TRAINED_BYTES = 256 << 10


def keep_trained(settings: Settings, model_digest: str, fitted: Any, file_bytes: int) -> None:
    """Put a just-trained big model into this machine's load cache, as `cached_served` keys it
    (a model trained today has no separate transform file)."""
    if file_bytes < KEEP_TRAINED_BYTES:
        return
    disk = load_cache(settings.model_load_cache, settings.model_load_cache_mb)
    if disk is not None:
        disk.put(served_key(model_digest, None, settings.allowed_estimator_prefixes), fitted)
