"""History commands: runs, show, compare, batches, leaderboard. Rich tables for people,
`--json` for scripts."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from typing import Any

import click

from producer import history
from producer.cli.common import (
    JSON,
    TAG,
    UserError,
    console,
    emit,
    leaderboard_table,
    metrics_text,
    parse_tags,
    pass_settings,
    runtime,
    table,
    versions_table,
    when,
)
from producer.status import batch_status
from workers.settings import Settings


@click.command()
@click.option("--batch", "batch_id")
@click.option("--model")
@click.option("--status", type=click.Choice(["succeeded", "failed"]))
@click.option("--stage")
@TAG
@click.option("--limit", type=int, default=200, show_default=True, help="Newest this many runs.")
@JSON
@pass_settings
def runs(settings: Settings, batch_id: str | None, model: str | None, status: str | None, stage: str | None,
         tags: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List stage runs, newest last."""
    with runtime(settings) as rt:
        found = rt.tracker.runs(batch_id=batch_id, model=model, status=status, tags=parse_tags(tags),
                                limit=limit if not (stage or tags or status) else 10**9)
    found = [r for r in found if stage is None or r["stage"] == stage][-limit:]
    emit(found, as_json, lambda: table(f"{len(found)} run(s)", [
        "run", "batch", "model", "stage", "status", "cache", "seconds", "worker", "metrics / error"],
        [[r["id"][:12], r["batch_id"], r["model"], r["stage"], r["status"],
          "hit" if r["cache_hit"] else "", f"{r['duration']:.2f}", r["worker"],
          _run_detail(r)] for r in found]))


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
        "batch", "started", "runs", "cache hits", "failed runs", "status", "version", "metrics"],
        [[r["batch_id"], when(r["started"]), r["runs"], r["cache_hits"], r["failed_runs"],
          r["status"], r["version"], metrics_text(r["metrics"])] for r in rows]))
    console.print(versions_table(model, versions, aliases))


@click.command()
@click.argument("batch_a")
@click.argument("batch_b")
@JSON
@pass_settings
def compare(settings: Settings, batch_a: str, batch_b: str, as_json: bool) -> None:
    """Metric changes per model between two batches, side by side."""
    with runtime(settings) as rt:
        rows = history.compare(rt, batch_a, batch_b)

    def mark(r: dict[str, Any]) -> str:
        return {True: "better", False: "worse", None: ""}[r["better"]]

    emit(rows, as_json, lambda: table(f"{batch_a} (A) vs {batch_b} (B)", [
        "model", "metric", "A", "B", "change", "", "status A", "status B"],
        [[r["model"], r["metric"], r["a"], r["b"],
          f"{r['delta']:+.4f}" if r["delta"] is not None else "", mark(r), r["status_a"] or "-",
          r["status_b"] or "-"] for r in rows]))


@click.command()
@click.option("--limit", type=int, default=20, show_default=True)
@JSON
@pass_settings
def batches(settings: Settings, limit: int, as_json: bool) -> None:
    """Recent batches: id, models, counts per state, ETA while running."""
    with runtime(settings) as rt:
        found = [batch_status(rt, b) for b in rt.tracker.list_batches(limit)]
    def counts(s: Any) -> str:
        return ", ".join(f"{n} {k}" for k, n in sorted(s.counts.items()))

    emit([{k: v for k, v in s.to_json().items() if k != "rows"} for s in found], as_json,
          lambda: table(f"{len(found)} batch(es)", ["batch", "models", "states", "elapsed", "ETA"],
                         [[s.batch_id, len(s.rows), counts(s), f"{s.elapsed:.0f}s" if not s.done else "done",
                           f"{s.eta:.0f}s" if s.eta is not None else ""] for s in found]))


@click.command("leaderboard")
@click.argument("batch_id")
@TAG
@click.option("--group-by", "group_by", metavar="KEY", help="One leaderboard per value of this tag.")
@JSON
@pass_settings
def leaderboard_cmd(settings: Settings, batch_id: str, tags: tuple[str, ...], group_by: str | None,
                    as_json: bool) -> None:
    """A batch's leaderboard, filtered by tags and grouped by a tag's value."""
    wanted = parse_tags(tags)
    with runtime(settings) as rt:
        status = batch_status(rt, batch_id)
        model_tags = {n: s.get("tags", {}) for n, s in rt.tracker.model_specs(batch_id).items()}
    groups: dict[str, list[Any]] = {}
    for row in status.rows:
        mine = model_tags.get(row.name, {})
        if all(mine.get(k) == v for k, v in wanted.items()):
            groups.setdefault(mine.get(group_by, "-") if group_by else "", []).append(row)
    if as_json:
        click.echo(json.dumps({g: [vars(r) for r in rows] for g, rows in sorted(groups.items())},
                              indent=1))
        return
    for group, rows in sorted(groups.items()):
        sub = replace(status, batch_id=f"{batch_id} {group_by}={group}" if group_by else batch_id,
                      rows=rows, counts=dict(Counter(r.status for r in rows)))
        console.print(leaderboard_table(sub))


COMMANDS = [runs, show, compare, batches, leaderboard_cmd]
