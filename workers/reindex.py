"""Rebuild the Redis index from the JSON copies under the artifact root alone."""

from __future__ import annotations

from workers.runtime import Runtime


def reindex(runtime: Runtime) -> dict[str, int]:
    """Batches, model states, specs, runs, cache entries and counters, registry; returns counts."""
    counts = runtime.tracker.reindex()
    counts["cache_entries"] = runtime.cache.reindex(runtime.tracker.runs(limit=10**9))
    reg = runtime.registry.reindex()
    counts["models"], counts["versions"] = reg["models"], reg["versions"]
    return counts
