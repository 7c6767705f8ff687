"""Operations on running batches: `modelfleet cancel`."""

from __future__ import annotations

import json
from collections import Counter

import click
from rich.markup import escape

from producer.cancel import cancel_batch
from producer.cli_common import UserError, broker, console
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import Settings


@click.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def cancel(batch_id: str, as_json: bool) -> None:
    """Cancel a batch: revoke models not started yet; running ones stop after their stage."""
    with broker(Settings()) as live:
        app = create_app(live)
        try:
            report = cancel_batch(Runtime.from_settings(live), app, batch_id)
        except KeyError as exc:
            raise UserError(str(exc.args[0])) from exc
        finally:
            app.close()
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=1))
        return
    console.print(f"batch [bold]{escape(batch_id)}[/]: cancelled {len(report.revoked)} model(s) that had "
                  f"not started" + (f": {', '.join(report.revoked)}" if report.revoked else ""))
    if report.stopping:
        console.print(f"{len(report.stopping)} running model(s) stop after their current stage: "
                      + ", ".join(report.stopping))
    if report.finished:
        counts = Counter(report.finished.values())
        console.print("left as they were: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
