"""Registry commands: models, promote, rollback, lineage."""

from __future__ import annotations

import json
import sys

import click
from rich.markup import escape
from rich.table import Table

from producer import history
from producer.cli.common import (
    JSON,
    MAX_COUNT,
    TAG,
    UserError,
    console,
    emit,
    err,
    metrics_text,
    num,
    parse_tags,
    pass_settings,
    plain,
    runtime,
    table,
    versions_table,
    when,
)
from workers.runtime import Runtime
from workers.settings import Settings

# Trials a lineage table lists (best first); --json gives every recorded one.
_TRIALS_SHOWN = 10

@click.group(invoke_without_command=True)
@TAG
@click.option("--group-by", "group_by", metavar="KEY", help="Group the rows by this tag's value.")
@JSON
@pass_settings
@click.pass_context
def models(ctx: click.Context, settings: Settings, tags: tuple[str, ...], group_by: str | None,
           as_json: bool) -> None:
    """Registered models with their latest version and aliases (`models versions NAME` for all)."""
    if ctx.invoked_subcommand is not None:
        return
    with runtime(settings) as rt:
        rows = []
        for name in rt.registry.names(parse_tags(tags)):
            latest = rt.registry.versions(name)[-1]
            rows.append({"name": name, "latest": latest["version"], "aliases": rt.registry.aliases(name),
                         "metrics": latest.get("metrics", {}), "tags": latest.get("tags", {}),
                         "batch_id": latest.get("batch_id")})
    if group_by:  # stable sort: by the tag's value, then by name
        rows.sort(key=lambda r: r["tags"].get(group_by, "\uffff"))
    emit(rows, as_json, lambda: table(f"{len(rows)} model(s)", [
        "model", "latest", "aliases", "metrics (latest)", "tags", "batch"],
        [[r["name"], r["latest"], " ".join(f"{a}->{v}" for a, v in sorted(r["aliases"].items())),
          metrics_text(r["metrics"]), " ".join(f"{k}={v}" for k, v in sorted(r["tags"].items())),
          r["batch_id"]] for r in rows]))


@models.command("versions")
@click.argument("name")
@JSON
@pass_settings
def models_versions(settings: Settings, name: str, as_json: bool) -> None:
    """Every version of one model: metrics, batch, aliases, promotion decision."""
    with runtime(settings) as rt:
        versions, aliases = rt.registry.versions(name), rt.registry.aliases(name)
    if not versions:
        raise UserError(f"no model named {name!r} in the registry")
    if as_json:
        click.echo(json.dumps({"name": name, "versions": versions, "aliases": aliases}, indent=1))
        return
    console.print(versions_table(name, versions, aliases))


def _bulk(name: str | None, version: int | None, batch_id: str | None, tags: tuple[str, ...],
          rt: Runtime) -> list[tuple[str, int | None]]:
    given = sum(x is not None and x != () for x in (name, batch_id, tags or None))
    if given != 1:
        raise UserError("give exactly one of NAME, --batch or --tag")
    if name is not None:
        return [(name, version)]
    targets = history.bulk_targets(rt, batch_id, parse_tags(tags) if tags else None)
    if not targets:
        raise UserError("no registered model matches")
    return list(targets)


@click.command()
@click.argument("name", required=False)
@click.argument("version", type=click.IntRange(1, MAX_COUNT), required=False)
@click.option("--alias", required=True)
@click.option("--batch", "batch_id", help="Promote the version every model of this batch deployed.")
@TAG
@pass_settings
def promote(settings: Settings, name: str | None, version: int | None, alias: str, batch_id: str | None,
            tags: tuple[str, ...]) -> None:
    """Point an alias at a version: NAME VERSION, or a whole --batch, or every model with --tag."""
    if name is not None and version is None:
        raise UserError("promote NAME VERSION --alias A: give the version number")
    with runtime(settings) as rt:
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
@pass_settings
def rollback(settings: Settings, name: str | None, alias: str, batch_id: str | None,
             tags: tuple[str, ...]) -> None:
    """Point an alias back at the version it pointed at before (one model, a --batch or a --tag)."""
    failed = 0
    with runtime(settings) as rt:
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
@pass_settings
def lineage(settings: Settings, ref: str, as_json: bool) -> None:
    """The chain that produced a version: data, params, code, batch, runs, metrics."""
    with runtime(settings) as rt:
        info = history.lineage(rt, ref)
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    table = Table(title=plain(f"lineage of {ref} = {info['name']}/{info['version']}"), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in info.items():
        if key in ("ref",):
            continue
        if key == "created":
            value = when(value)
        elif isinstance(value, dict) and key != "run_ids":
            value = json.dumps(value, sort_keys=True)
        elif key == "run_ids":
            value = "\n".join(f"{s}: {r}" for s, r in value.items())
        elif key == "search_trials":  # best first; all of them with --json
            value = "\n".join(f"#{t['rank']} {num(t['mean'])} ± {num(t['std'])} "
                              f"{json.dumps(t['params'], sort_keys=True)}" for t in value[:_TRIALS_SHOWN])
        table.add_row(plain(key), plain(num(value) if not isinstance(value, list) else ", ".join(value)))
    console.print(table)


COMMANDS = [models, promote, rollback, lineage]
