"""`modelfleet evaluate`: deployed models on new labelled rows, per segment, beside the metrics
they were promoted with; `--retrain` sends the flagged ones back through the gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from producer.cli.common import (
    MAX_PROCESSES,
    Finite,
    UserError,
    broker,
    console,
    err,
    exit_for,
    pass_settings,
    table,
    watch,
)
from producer.local import LocalWorkers
from producer.submit import BrokerUnavailable, submit
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import Settings

if TYPE_CHECKING:  # producer.monitor imports pandas: only when the command runs
    from producer.monitor import Evaluation
    from producer.spec import Batch


@click.command()
@click.argument("ref", metavar="MODEL@ALIAS|FAMILY@ALIAS")
@click.argument("labelled", metavar="LABELLED", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--segment-by", "segment_by", metavar="COLUMN",
              help="REF is a segment family: each row is checked by its COLUMN value's model.")
@click.option("--tolerance", type=Finite(1.0, 1e6), default=1.5, show_default=True,
              help="Flag a model whose error on the new rows exceeds its registered error times this.")
@click.option("--metric", help="Compare this metric (default: each model's gate metric).")
@click.option("--retrain", is_flag=True,
              help="Submit a batch of the flagged models: their spec, their data plus the new rows.")
@click.option("--workers", "-w", default=2, show_default=True, type=click.IntRange(1, MAX_PROCESSES),
              help="With --retrain and no broker configured: local workers to start.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_settings
def evaluate(settings: Settings, ref: str, labelled: Path, segment_by: str | None, tolerance: float,
             metric: str | None, retrain: bool, workers: int, as_json: bool) -> None:
    """Check deployed models on new labelled rows (a CSV or Parquet table with the target)."""
    from producer import monitor
    from producer.tables import TableError, read_table
    from workers.pipeline.errors import PipelineError
    from workers.pipeline.schema import SchemaError

    try:
        frame = read_table(labelled, (segment_by,) if segment_by else ())
    except TableError as exc:
        raise UserError(str(exc)) from exc
    with broker(settings) as live:
        rt = Runtime.from_settings(live)
        try:
            result = monitor.evaluate(ref, frame, rt, segment_by, tolerance, metric, str(labelled))
            batch = monitor.retrain_batch(result, frame, rt) if retrain and result.flagged else None
        except KeyError as exc:
            raise UserError(str(exc.args[0])) from exc
        except SchemaError as exc:
            raise UserError(f"{labelled}: {exc}") from exc
        except (ValueError, PipelineError) as exc:
            raise UserError(f"{labelled}: {exc}") from exc
        if as_json:
            click.echo(json.dumps(result.to_json(), indent=1, default=str))
        else:
            _show(result)
        if batch is None:
            if retrain:
                err.print("nothing flagged: nothing to retrain")
            return
        _retrain(batch, live, settings.broker_url is None, workers)


def _show(result: Evaluation) -> None:
    rows = []
    for c in sorted(result.checks, key=lambda c: (-(c.ratio or 0.0), c.model)):
        registered, now = c.registered.get(c.metric), c.now.get(c.metric)
        rows.append([c.segment or "", c.model, c.rows, c.metric, registered, now,
                     f"{c.ratio:.2f}x" if c.ratio is not None else "",
                     "FLAG" if c.flagged else c.note])
    console.print(table(f"{result.ref} on {result.source}: {len(result.flagged)} of {len(result.checks)} "
                        f"flagged (error > {result.tolerance:g}x registered); runs: {result.id}",
                        ["segment", "model", "rows", "metric", "registered", "now", "ratio", "flag"], rows))


def _retrain(batch: Batch, live: Settings, local: bool, workers: int) -> None:
    app = create_app(live)
    try:
        if local:  # no broker of the user's: workers of our own, and wait for them
            with LocalWorkers(live, workers, live.local_redis_dir.parent / "logs") as started:
                handle = submit(batch, app, Runtime.from_settings(live))
                console.print(f"retraining {len(batch.models)} flagged model(s): batch "
                              f"[bold]{escape(handle.batch_id)}[/]")
                exit_for(watch(handle, None, started))
            return
        handle = submit(batch, app, Runtime.from_settings(live))
    except BrokerUnavailable as exc:
        raise UserError(f"{exc}; nothing was submitted") from exc
    finally:
        app.close()
    console.print(f"submitted batch [bold]{escape(handle.batch_id)}[/] retraining {len(batch.models)} "
                  f"flagged model(s); `modelfleet status {handle.batch_id}`")


COMMANDS = [evaluate]
