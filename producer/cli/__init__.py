"""The `modelfleet` command: one group, one module per command family.

batches.py  run, submit, status, cancel, retry
runs.py     runs, show, compare, batches
leaderboard.py  leaderboard (per task and metric; table, CSV or JSON)
report.py   report (HTML pages per model version and per batch; report_html.py, plots.py)
registry.py models, promote, rollback, lineage
platform.py up, worker
cache.py    cache, reindex
predict.py  predict, score
monitor.py  evaluate (deployed models on new labelled rows)
common.py   consoles, user errors, the broker, the progress view, rich tables
"""

from __future__ import annotations

import click
from pydantic import ValidationError

from producer.cli import batches, cache, leaderboard, monitor, platform, predict, registry, report, runs
from producer.cli.common import UserError
from workers.settings import Settings


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Train, evaluate and deploy many models at once on Celery workers over Redis."""
    # Built once, from MODELFLEET_* in the environment; commands take it with @pass_settings.
    try:
        ctx.obj = Settings()
    except ValidationError as exc:
        raise UserError("invalid MODELFLEET_* environment: " + "; ".join(
            f"MODELFLEET_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())) from exc


for family in (batches, runs, leaderboard, report, registry, predict, monitor, platform, cache):
    for command in family.COMMANDS:
        main.add_command(command)

if __name__ == "__main__":
    main()
