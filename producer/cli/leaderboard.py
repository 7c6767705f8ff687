"""`modelfleet leaderboard`: a batch's models ranked per task and metric, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import json
import sys

import click

from producer import leaderboard
from producer.cli.common import (
    MAX_COUNT,
    TAG,
    UserError,
    console,
    parse_tags,
    pass_settings,
    runtime,
    secs,
    section_table,
)
from workers.settings import Settings

CSV_COLUMNS = ["task", "metric", "rank", "name", "value", "status", "version", "promoted",
               "compute_seconds", "queue_seconds", "done_seconds", "worker", "tags", "error"]


@click.command("leaderboard")
@click.argument("batch_id")
@TAG
@click.option("--metric", help="Rank by this metric (where a model's task has it); default: each "
                               "model's primary metric.")
@click.option("--sort", type=click.Choice(leaderboard.SORTS), default="metric", show_default=True,
              help="metric: best first; compute, queue, done: largest first; name.")
@click.option("--top", type=click.IntRange(1, MAX_COUNT), metavar="N", help="Only the first N of each task "
                                                                    "(of each group with --group-by).")
@click.option("--best-per", "best_per", metavar="TAG", help="Only the best model per value of this tag "
                                                            "(matrix axes are tags).")
@click.option("--group-by", "group_by", metavar="TAG", help="Order rows by this tag's value (one table).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@pass_settings
def leaderboard_cmd(settings: Settings, batch_id: str, tags: tuple[str, ...], metric: str | None,
                    sort: str, top: int | None, best_per: str | None, group_by: str | None, fmt: str,
                    as_json: bool) -> None:
    """A batch's models ranked per task by their metric, with what each cost to compute."""
    with runtime(settings) as rt:
        status, found = leaderboard.entries(rt, batch_id, metric, parse_tags(tags))
    if metric and not any(e.metric == metric for e in found):
        known = sorted({m for e in found for m in e.metrics})
        raise UserError(f"--metric: no model of {batch_id} has a metric {metric!r}; they have {known}")
    parts = leaderboard.sections(found, sort, top, best_per, group_by)
    fmt = "json" if as_json else fmt
    if fmt == "json":
        click.echo(json.dumps({"batch_id": batch_id, "counts": status.counts,
                               "sections": [p.to_json() for p in parts]}, indent=1))
    elif fmt == "csv":
        write_csv(parts)
    else:
        summary = ", ".join(f"{n} {s}" for s, n in sorted(status.counts.items()))
        for part in parts:
            console.print(section_table(batch_id, summary, part, best_per or group_by))


def write_csv(parts: list[leaderboard.Section]) -> None:
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(CSV_COLUMNS)
    for part in parts:
        for rank, e in enumerate(part.rows, 1):
            out.writerow([e.task, e.metric, rank, e.name, e.value, e.status, e.version, e.promoted,
                          f"{e.compute_seconds:.4f}", secs(e.queue_seconds, "{:.4f}"),
                          secs(e.done_seconds, "{:.4f}"), e.worker,
                          ";".join(f"{k}={v}" for k, v in sorted(e.tags.items())), e.error])


COMMANDS = [leaderboard_cmd]
