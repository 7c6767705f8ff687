"""History commands: runs, show, compare, batches, models, promote, rollback,
lineage, cache, retry, reindex. Rich tables for people, `--json` for scripts."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from producer import history
from producer.cli_common import UserError, broker, console, err
from producer.local import LocalWorkers
from producer.status import batch_status, leaderboard
from producer.submit import BrokerUnavailable, NothingToRetry, models_to_retry, retry
from workers.app import create_app
from workers.reindex import reindex
from workers.runtime import Runtime
from workers.settings import Settings

TAG = click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Filter by tag (repeatable).")
JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@contextmanager
def _runtime() -> Iterator[Runtime]:
    """The configured broker's runtime (or the embedded Redis); user errors for unknown names."""
    with broker(Settings()) as live:
        try:
            yield Runtime.from_settings(live)
        except KeyError as exc:
            raise UserError(str(exc.args[0])) from exc


def _tags(pairs: tuple[str, ...]) -> dict[str, str]:
    try:
        return history.parse_tags(pairs)
    except ValueError as exc:
        raise UserError(f"--tag: {exc}") from exc


def _emit(data: Any, as_json: bool, table: Callable[[], Table]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=1, default=str))
    else:
        console.print(table())


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))


def _metrics(m: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in m.items())


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(_num(c) for c in row))
    return table


@click.command()
@click.option("--batch", "batch_id")
@click.option("--model")
@click.option("--status", type=click.Choice(["succeeded", "failed"]))
@click.option("--stage")
@TAG
@click.option("--limit", type=int, default=200, show_default=True, help="Newest this many runs.")
@JSON
def runs(batch_id: str | None, model: str | None, status: str | None, stage: str | None,
         tags: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List stage runs, newest last."""
    with _runtime() as rt:
        found = rt.tracker.runs(batch_id=batch_id, model=model, status=status, tags=_tags(tags),
                                limit=limit if not (stage or tags or status) else 10**9)
    found = [r for r in found if stage is None or r["stage"] == stage][-limit:]
    _emit(found, as_json, lambda: _table(f"{len(found)} run(s)", [
        "run", "batch", "model", "stage", "status", "cache", "seconds", "worker", "metrics / error"],
        [[r["id"][:12], r["batch_id"], r["model"], r["stage"], r["status"],
          "hit" if r["cache_hit"] else "", f"{r['duration']:.2f}", r["worker"],
          _run_detail(r)] for r in found]))


def _run_detail(run: dict[str, Any]) -> str:
    """A run's error, a deploy's outcome (promoted, or registered and why), or its metrics."""
    result = run.get("result") or {}
    if not run["error"] and run["stage"] == "deploy" and "promoted" in result:
        return "promoted" if result["promoted"] else f"registered: {result.get('reason', '')}"
    return str(run["error"] or _metrics(run["metrics"]))


@click.command()
@click.argument("model")
@JSON
def show(model: str, as_json: bool) -> None:
    """A model's history across batches, and its registry versions and aliases."""
    with _runtime() as rt:
        rows = history.model_history(rt, model)
        versions = rt.registry.versions(model)
        aliases = rt.registry.aliases(model)
    if not rows and not versions:
        raise UserError(f"no runs and no versions of a model named {model!r}")
    if as_json:
        click.echo(json.dumps({"model": model, "batches": rows, "versions": versions,
                               "aliases": aliases}, indent=1, default=str))
        return
    console.print(_table(f"{model}: {len(rows)} batch(es)", [
        "batch", "started", "runs", "cache hits", "failed runs", "status", "version", "metrics"],
        [[r["batch_id"], _when(r["started"]), r["runs"], r["cache_hits"], r["failed_runs"],
          r["status"], r["version"], _metrics(r["metrics"])] for r in rows]))
    console.print(_versions_table(model, versions, aliases))


def _versions_table(name: str, versions: list[dict[str, Any]], aliases: dict[str, int]) -> Table:
    by_version: dict[int, list[str]] = {}
    for alias, v in aliases.items():
        by_version.setdefault(v, []).append(alias)
    return _table(f"{name}: {len(versions)} version(s)", [
        "version", "aliases", "created", "batch", "metrics", "decision", "artifact"],
        [[v["version"], ",".join(sorted(by_version.get(v["version"], []))), _when(v["created"]),
          v.get("batch_id"), _metrics(v.get("metrics", {})), (v.get("decision") or {}).get("reason", ""),
          v["artifact"][:12]] for v in versions])


@click.command()
@click.argument("batch_a")
@click.argument("batch_b")
@JSON
def compare(batch_a: str, batch_b: str, as_json: bool) -> None:
    """Metric changes per model between two batches, side by side."""
    with _runtime() as rt:
        rows = history.compare(rt, batch_a, batch_b)

    def mark(r: dict[str, Any]) -> str:
        return {True: "better", False: "worse", None: ""}[r["better"]]

    _emit(rows, as_json, lambda: _table(f"{batch_a} (A) vs {batch_b} (B)", [
        "model", "metric", "A", "B", "change", "", "status A", "status B"],
        [[r["model"], r["metric"], r["a"], r["b"],
          f"{r['delta']:+.4f}" if r["delta"] is not None else "", mark(r), r["status_a"] or "-",
          r["status_b"] or "-"] for r in rows]))


@click.command()
@click.option("--limit", type=int, default=20, show_default=True)
@JSON
def batches(limit: int, as_json: bool) -> None:
    """Recent batches: id, models, counts per state, ETA while running."""
    with _runtime() as rt:
        found = [batch_status(rt, b) for b in rt.tracker.list_batches(limit)]
    def counts(s: Any) -> str:
        return ", ".join(f"{n} {k}" for k, n in sorted(s.counts.items()))

    _emit([{k: v for k, v in s.to_json().items() if k != "rows"} for s in found], as_json,
          lambda: _table(f"{len(found)} batch(es)", ["batch", "models", "states", "elapsed", "ETA"],
                         [[s.batch_id, len(s.rows), counts(s), f"{s.elapsed:.0f}s" if not s.done else "done",
                           f"{s.eta:.0f}s" if s.eta is not None else ""] for s in found]))


@click.command("leaderboard")
@click.argument("batch_id")
@TAG
@click.option("--group-by", "group_by", metavar="KEY", help="One leaderboard per value of this tag.")
@JSON
def leaderboard_cmd(batch_id: str, tags: tuple[str, ...], group_by: str | None, as_json: bool) -> None:
    """A batch's leaderboard, filtered by tags and grouped by a tag's value."""
    wanted = _tags(tags)
    with _runtime() as rt:
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
        console.print(leaderboard(sub))


@click.group(invoke_without_command=True)
@TAG
@click.option("--group-by", "group_by", metavar="KEY", help="Group the rows by this tag's value.")
@JSON
@click.pass_context
def models(ctx: click.Context, tags: tuple[str, ...], group_by: str | None, as_json: bool) -> None:
    """Registered models with their latest version and aliases (`models versions NAME` for all)."""
    if ctx.invoked_subcommand is not None:
        return
    with _runtime() as rt:
        rows = []
        for name in rt.registry.names(_tags(tags)):
            latest = rt.registry.versions(name)[-1]
            rows.append({"name": name, "latest": latest["version"], "aliases": rt.registry.aliases(name),
                         "metrics": latest.get("metrics", {}), "tags": latest.get("tags", {}),
                         "batch_id": latest.get("batch_id")})
    if group_by:  # stable sort: by the tag's value, then by name
        rows.sort(key=lambda r: r["tags"].get(group_by, "\uffff"))
    _emit(rows, as_json, lambda: _table(f"{len(rows)} model(s)", [
        "model", "latest", "aliases", "metrics (latest)", "tags", "batch"],
        [[r["name"], r["latest"], " ".join(f"{a}->{v}" for a, v in sorted(r["aliases"].items())),
          _metrics(r["metrics"]), " ".join(f"{k}={v}" for k, v in sorted(r["tags"].items())),
          r["batch_id"]] for r in rows]))


@models.command("versions")
@click.argument("name")
@JSON
def models_versions(name: str, as_json: bool) -> None:
    """Every version of one model: metrics, batch, aliases, promotion decision."""
    with _runtime() as rt:
        versions, aliases = rt.registry.versions(name), rt.registry.aliases(name)
    if not versions:
        raise UserError(f"no model named {name!r} in the registry")
    if as_json:
        click.echo(json.dumps({"name": name, "versions": versions, "aliases": aliases}, indent=1))
        return
    console.print(_versions_table(name, versions, aliases))


def _bulk(name: str | None, version: int | None, batch_id: str | None, tags: tuple[str, ...],
          rt: Runtime) -> list[tuple[str, int | None]]:
    given = sum(x is not None and x != () for x in (name, batch_id, tags or None))
    if given != 1:
        raise UserError("give exactly one of NAME, --batch or --tag")
    if name is not None:
        return [(name, version)]
    targets = history.bulk_targets(rt, batch_id, _tags(tags) if tags else None)
    if not targets:
        raise UserError("no registered model matches")
    return list(targets)


@click.command()
@click.argument("name", required=False)
@click.argument("version", type=int, required=False)
@click.option("--alias", required=True)
@click.option("--batch", "batch_id", help="Promote the version every model of this batch deployed.")
@TAG
def promote(name: str | None, version: int | None, alias: str, batch_id: str | None,
            tags: tuple[str, ...]) -> None:
    """Point an alias at a version: NAME VERSION, or a whole --batch, or every model with --tag."""
    if name is not None and version is None:
        raise UserError("promote NAME VERSION --alias A: give the version number")
    with _runtime() as rt:
        for model, v in _bulk(name, version, batch_id, tags, rt):
            assert v is not None
            before = rt.registry.aliases(model).get(alias)
            rt.registry.promote(model, v, alias)
            console.print(escape(f"{model}@{alias}: {before if before is not None else '-'} -> {v}"))


@click.command()
@click.argument("name", required=False)
@click.option("--alias", required=True)
@click.option("--batch", "batch_id", help="Roll back every model of this batch.")
@TAG
def rollback(name: str | None, alias: str, batch_id: str | None, tags: tuple[str, ...]) -> None:
    """Point an alias back at the version it pointed at before (one model, a --batch or a --tag)."""
    failed = 0
    with _runtime() as rt:
        for model, _ in _bulk(name, None, batch_id, tags, rt):
            before = rt.registry.aliases(model).get(alias)
            try:
                after = rt.registry.rollback(model, alias)
            except (KeyError, RuntimeError) as exc:
                failed += 1
                err.print(escape(f"{model}@{alias}: {exc.args[0]}"))
                continue
            console.print(escape(f"{model}@{alias}: {before} -> {after}"))
    if failed:
        if name is not None:
            raise UserError("nothing rolled back")
        sys.exit(1)


@click.command()
@click.argument("ref", metavar="NAME@ALIAS|NAME/VERSION")
@JSON
def lineage(ref: str, as_json: bool) -> None:
    """The chain that produced a version: data, params, code, batch, runs, metrics."""
    with _runtime() as rt:
        info = history.lineage(rt, ref)
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    table = Table(title=f"lineage of {ref} = {info['name']}/{info['version']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in info.items():
        if key in ("ref",):
            continue
        if key == "created":
            value = _when(value)
        elif isinstance(value, dict) and key != "run_ids":
            value = json.dumps(value, sort_keys=True)
        elif key == "run_ids":
            value = "\n".join(f"{s}: {r}" for s, r in value.items())
        table.add_row(key, _num(value) if not isinstance(value, list) else ", ".join(value))
    console.print(table)


@click.group()
def cache() -> None:
    """The step cache: stats and pruning."""


@cache.command("stats")
@JSON
def cache_stats(as_json: bool) -> None:
    """Entries, artifact objects and bytes, hits, misses and hit rate."""
    with _runtime() as rt:
        s = rt.cache.summary()
    rate = f"{s['hit_rate']:.1%}" if s["hit_rate"] is not None else "-"
    _emit(s, as_json, lambda: _table("step cache", ["entries", "objects", "size", "hits", "misses",
                                                    "hit rate"],
                                     [[s["entries"], s["objects"], f"{s['bytes'] / 1e6:.1f} MB",
                                       s["hits"], s["misses"], rate]]))


@cache.command("prune")
@click.option("--older-than", "older_than", required=True, help="An age like 7d, 12h, 30m.")
def cache_prune(older_than: str) -> None:
    """Drop cache entries older than the age, and artifacts nothing references.

    Artifacts of registered versions (model, preprocessing, report) are kept.
    """
    try:
        seconds = history.parse_age(older_than)
    except ValueError as exc:
        raise UserError(f"--older-than: {exc}") from exc
    with _runtime() as rt:
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


@click.command("retry")
@click.argument("batch_id")
@click.option("--workers", "-w", default=2, show_default=True,
              help="Local workers to start when no broker is configured.")
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--timeout", type=float, default=None)
def retry_cmd(batch_id: str, workers: int, wait: bool, timeout: float | None) -> None:
    """Rerun only the failed or cancelled models of a batch, under the same batch id."""
    settings = Settings()
    with broker(settings) as live, ExitStack() as stack:
        rt = Runtime.from_settings(live)
        try:
            models_to_retry(rt, batch_id)  # before starting any worker
            if settings.broker_url is None:  # local: workers of our own, and watch them
                stack.enter_context(LocalWorkers(live, workers, live.local_redis_dir.parent / "logs"))
                wait = True
            handle, names = retry(batch_id, create_app(live), rt)
        except (KeyError, NothingToRetry, BrokerUnavailable) as exc:
            raise UserError(str(exc.args[0])) from exc
        console.print(f"retrying {len(names)} model(s) of batch [bold]{escape(batch_id)}[/]: "
                      f"{', '.join(names)}")
        if not wait:
            return
        from producer.cli import _exit_for, _watch  # the run/submit progress view

        status = _watch(handle, timeout)
    _exit_for(status)


@click.command("reindex")
def reindex_cmd() -> None:
    """Rebuild the Redis index (runs, batches, cache, registry) from the artifact root alone."""
    with _runtime() as rt:
        counts = reindex(rt)
    console.print("reindexed " + ", ".join(f"{n} {k}" for k, n in counts.items()))

