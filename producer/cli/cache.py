"""Step-cache commands: cache stats, cache prune, reindex."""

from __future__ import annotations

import click

from producer import history
from producer.cli.common import JSON, UserError, console, emit, pass_settings, runtime, table
from workers.compaction import compact as compact_journal
from workers.reindex import reindex
from workers.runtime import Runtime
from workers.settings import Settings


@click.group()
def cache() -> None:
    """The step cache: stats and pruning."""


@cache.command("stats")
@JSON
@pass_settings
def cache_stats(settings: Settings, as_json: bool) -> None:
    """Entries, artifact objects and bytes, hits, misses and hit rate."""
    with runtime(settings) as rt:
        s = rt.cache.summary()
    rate = f"{s['hit_rate']:.1%}" if s["hit_rate"] is not None else "-"
    emit(s, as_json, lambda: table("step cache", ["entries", "objects", "size", "hits", "misses",
                                                    "hit rate"],
                                     [[s["entries"], s["objects"], f"{s['bytes'] / 1e6:.1f} MB",
                                       s["hits"], s["misses"], rate]]))


@cache.command("prune")
@click.option("--older-than", "older_than", required=True, help="An age like 7d, 12h, 30m.")
@pass_settings
def cache_prune(settings: Settings, older_than: str) -> None:
    """Drop cache entries older than the age, and artifacts nothing references.

    Artifacts of registered versions (model, preprocessing, report) are kept.
    """
    try:
        seconds = history.parse_age(older_than)
    except ValueError as exc:
        raise UserError(f"--older-than: {exc}") from exc
    with runtime(settings) as rt:
        keep = _registered_digests(rt)
        before = rt.store.usage()[1]
        entries, objects = rt.cache.prune(seconds, keep)
        freed = before - rt.store.usage()[1]
    console.print(f"removed {entries} cache entries and {objects} artifacts, freed {freed / 1e6:.1f} MB")


def _registered_digests(rt: Runtime) -> set[str]:
    keep: set[str] = set()
    for name in rt.registry.names():
        for v in rt.registry.versions(name):
            keep.add(v["artifact"])
            chain = v.get("lineage", {})
            for section, field in (("prepared", "transform_digest"), ("trained", "model_digest")):
                if (digest := (chain.get(section) or {}).get(field)) is not None:
                    keep.add(digest)
    return keep


@click.command("reindex")
@click.option("--compact", is_flag=True,
              help="First fold the journal's closed segments: the newest record of each model state, "
                   "cache entry and version, every run.")
@pass_settings
def reindex_cmd(settings: Settings, compact: bool) -> None:
    """Rebuild the Redis index (runs, batches, cache, registry) from the artifact root alone."""
    with runtime(settings) as rt:
        if compact:
            folded = compact_journal(rt.tracker.journal)
            console.print("journal: nothing to compact (or another compaction runs)" if folded is None else
                          f"journal: {folded.segments_before} segment(s), {folded.bytes_before:,} bytes -> "
                          f"{folded.segments_after}, {folded.bytes_after:,} bytes in {folded.seconds:.1f} s")
        counts = reindex(rt)
    console.print("reindexed " + ", ".join(f"{n} {k}" for k, n in counts.items()))


COMMANDS = [cache, reindex_cmd]
