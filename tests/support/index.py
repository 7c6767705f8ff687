"""The whole Redis index as the read APIs see it, to compare an index with its rebuild."""

from __future__ import annotations

from typing import Any

from workers import keys
from workers.runtime import Runtime


def index_snapshot(rt: Runtime) -> dict[str, Any]:
    """The whole index as the read APIs see it."""
    batch_ids = rt.tracker.list_batches(10**6)
    batches = {b: rt.tracker.get_batch(b) for b in batch_ids}
    runs = rt.tracker.runs(limit=10**9)
    names = rt.registry.names()
    return {
        "batch_order": batch_ids, "batches": batches,
        "states": {b: rt.tracker.model_states(b, rec["models"]) for b, rec in batches.items() if rec},
        "specs": {b: rt.tracker.model_specs(b) for b in batch_ids},
        "runs": runs,
        "batch_runs": {b: [r["id"] for r in rt.tracker.runs(batch_id=b)] for b in batch_ids},
        "model_runs": {m: [r["id"] for r in rt.tracker.runs(model=m)] for m in {r["model"] for r in runs}},
        "cache": sorted(rt.cache.entries(), key=lambda e: e["key"]),
        "cache_stats": rt.cache.stats(),
        "registry": {n: {"versions": rt.registry.versions(n), "aliases": rt.registry.aliases(n),
                         "history": {a: rt.registry.history(n, a) for a in rt.registry.aliases(n)},
                         "by_digest": rt.redis.hgetall(keys.version_by_digest(n))} for n in names},
    }
