"""History commands: runs, show, compare, batches, leaderboard. Rich tables for people,
`--json` for scripts."""

from __future__ import annotations

import json
from typing import Any

import click

from producer import history
from producer.cli.common import (
    JSON,
    MAX_COUNT,
    MAX_PAGE,
    TAG,
    UserError,
    console,
    emit,
    err,
    metrics_text,
    parse_tags,
    pass_settings,
    runtime,
    table,
    versions_table,
    when,
)
from producer.status import batch_status
from workers.runtime import Runtime
from workers.settings import Settings


@click.command()
@click.option("--batch", "batch_id")
@click.option("--model")
@click.option("--status", type=click.Choice(["succeeded", "failed"]))
@click.option("--stage")
@TAG
@click.option("--limit", type=click.IntRange(1, MAX_PAGE), default=200, show_default=True,
              help="Runs per page (the newest first page).")
@click.option("--offset", type=click.IntRange(0, MAX_COUNT), default=0,
              help="Skip this many of the newest runs.")
@click.option("--page", type=click.IntRange(1, MAX_COUNT), help="Page P of --limit runs (1: the newest).")
@JSON
@pass_settings
def runs(settings: Settings, batch_id: str | None, model: str | None, status: str | None, stage: str | None,
         tags: tuple[str, ...], limit: int, offset: int, page: int | None, as_json: bool) -> None:
    """List stage runs, a page at a time (newest page first, oldest run first in it)."""
    if page is not None:
        offset = (page - 1) * limit
    with runtime(settings) as rt:
        found, total = history.page_runs(rt, limit, offset, batch_id=batch_id, model=model, status=status,
                                         stage=stage, tags=parse_tags(tags))
    if as_json:
        click.echo(json.dumps(found, indent=1, default=str))
        return
    console.print(table(f"{len(found)} of {total} run(s)", [
        "run", "batch", "model", "stage", "status", "cache", "seconds", "worker", "metrics / error"],
        [[r["id"][:12], r["batch_id"], r["model"], r["stage"], r["status"],
          "hit" if r["cache_hit"] else "", f"{r['duration']:.2f}", r["worker"],
          _run_detail(r)] for r in found]))
    if offset + len(found) < total:
        err.print(f"showing runs {offset + 1}-{offset + len(found)} of {total}, newest first; older: "
                  f"--page {offset // limit + 2} (or --offset {offset + len(found)})")


def _run_detail(run: dict[str, Any]) -> str:
    """A run's error, a deploy's outcome (promoted, or registered and why), or its metrics."""
    result = run.get("result") or {}
    if not run["error"] and run["stage"] == "deploy" and "promoted" in result:
        return "promoted" if result["promoted"] else f"registered: {result.get('reason', '')}"
    return str(run["error"] or metrics_text(run["metrics"]))


@click.command()
@click.argument("model")
@JSON
@pass_settings
def show(settings: Settings, model: str, as_json: bool) -> None:
    """A model's history across batches, and its registry versions and aliases."""
    with runtime(settings) as rt:
        rows = history.model_history(rt, model)
        versions = rt.registry.versions(model)
        aliases = rt.registry.aliases(model)
    if not rows and not versions:
        raise UserError(f"no runs and no versions of a model named {model!r}")
    if as_json:
        click.echo(json.dumps({"model": model, "batches": rows, "versions": versions,
                               "aliases": aliases}, indent=1, default=str))
        return
    console.print(table(f"{model}: {len(rows)} batch(es)", [
        "batch", "started", "runs", "cache hits", "failed runs", "status", "version", "metrics",
        "unused columns"],
        [[r["batch_id"], when(r["started"]), r["runs"], r["cache_hits"], r["failed_runs"],
          r["status"], r["version"], metrics_text(r["metrics"]), ", ".join(r["unused_columns"])]
         for r in rows]))
    console.print(versions_table(model, versions, aliases))


@click.command()
@click.argument("a")
@click.argument("b")
@TAG
@JSON
@pass_settings
def compare(settings: Settings, a: str, b: str, tags: tuple[str, ...], as_json: bool) -> None:
    """Metric changes between two batches, model versions (NAME/VERSION, NAME@ALIAS) or models
    (their latest versions), side by side; --tag keeps the models with those tags."""
    with runtime(settings) as rt:
        rows = history.compare_refs(rt, a, b, parse_tags(tags))
    if not rows:
        raise UserError(f"nothing to compare: no model of {a} or {b} has the tags {list(tags)}")

    def mark(r: dict[str, Any]) -> str:
        return {True: "better", False: "worse", None: ""}[r["better"]]

    emit(rows, as_json, lambda: table(f"{a} (A) vs {b} (B)", [
        "model", "metric", "A", "B", "change", "", "status A", "status B"],
        [[r["model"], r["metric"], r["a"], r["b"],
          f"{r['delta']:+.4f}" if r["delta"] is not None else "", mark(r), r["status_a"] or "-",
          r["status_b"] or "-"] for r in rows]))


# Batches `batches --user` looks through (newest first) for the user's own, a chunk at a time
# (a record holds its spec's text: a big batch's is megabytes).
_USER_LOOKBACK, _USER_CHUNK = 10_000, 100


def _submitted_by(rt: Runtime, user: str, limit: int) -> list[str]:
    """The ids of the user's newest `limit` batches, read from the batch records."""
    ids = rt.tracker.list_batches(_USER_LOOKBACK)
    mine: list[str] = []
    for start in range(0, len(ids), _USER_CHUNK):
        mine += [r["id"] for r in rt.tracker.get_batches(ids[start:start + _USER_CHUNK])
                 if r.get("submitted_by") == user]
        if len(mine) >= limit:
            break
    return mine[:limit]



@click.command()
@click.option("--limit", type=click.IntRange(1, MAX_PAGE), default=20, show_default=True,
              help="How many of the newest batches.")
@click.option("--user", help="Only the batches this user submitted (MODELFLEET_USER or the OS user).")
@JSON
@pass_settings
def batches(settings: Settings, limit: int, user: str | None, as_json: bool) -> None:
    """Recent batches: id, who submitted them from which commit, models, counts per state, ETA."""
    with runtime(settings) as rt:
        ids = rt.tracker.list_batches(limit)
        if user is not None:
            ids = _submitted_by(rt, user, limit)
        found = [batch_status(rt, b) for b in ids]

    def counts(s: Any) -> str:
        return ", ".join(f"{n} {k}" for k, n in sorted(s.counts.items()))

    def commit(s: Any) -> str:
        sha = str(s.origin.get("git_commit") or "")[:12]
        return sha + ("+dirty" if sha and s.origin.get("git_dirty") else "")

    emit([{k: v for k, v in s.to_json().items() if k != "rows"} for s in found], as_json,
          lambda: table(f"{len(found)} batch(es)", ["batch", "user", "commit", "models", "states",
                                                     "elapsed", "ETA"],
                         [[s.batch_id, s.origin.get("submitted_by", ""), commit(s), len(s.rows), counts(s),
                           f"{s.elapsed:.0f}s" if not s.done else "done",
                           f"{s.eta:.0f}s" if s.eta is not None else ""] for s in found]))


COMMANDS = [runs, show, compare, batches]
