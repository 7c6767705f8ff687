"""Using what was trained: predict (a table, in this process) and score (on the workers).

pandas and scikit-learn are imported inside the commands: the other commands start without them.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from producer.cli.common import MAX_COUNT, MAX_PROCESSES, SECONDS, UserError, err, pass_settings, runtime
from workers.settings import Settings

if TYPE_CHECKING:
    from producer.segments import Predicted


@click.command()
@click.argument("ref", metavar="MODEL@ALIAS|MODEL/VERSION")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here: .csv, .parquet or .json (default: CSV on stdout).")
@click.option("--segment-by", "segment_by", metavar="COLUMN",
              help="REF is a segment family FAMILY@ALIAS: each row goes to its COLUMN value's model.")
@click.option("--strict", is_flag=True,
              help="Exit 1 when some rows are left without a prediction (default: report them, exit 0).")
@click.option("--fallback", type=click.Choice(["latest"]),
              help="With --segment-by: score a segment whose model is registered but not at the alias "
                   "(its gate failed) with its latest version; a `served_by` column says which served "
                   "each row.")
@click.option("--force", is_flag=True, help="Replace --out if it exists (never the input itself).")
@pass_settings
def predict(settings: Settings, ref: str, input_path: Path, out: Path | None, segment_by: str | None,
            strict: bool, fallback: str | None, force: bool) -> None:
    """Predict a CSV or Parquet table with a registered model: the input's columns plus
    `prediction` (and, with --segment-by, the `model` that predicted each row).

    With --segment-by, rows are left without a prediction where their segment has no model,
    or where its model is registered but not at the alias (each such segment is named, with
    its gate's reason); --fallback latest scores the latter with their latest version.

    The rows are checked against the model's input schema first: a missing column or a
    value of the wrong type is an error naming the column (exit 2)."""
    from producer.segments import predict_frame
    from producer.tables import TableError, check_writable, read_table, write_table
    from workers.pipeline.errors import PipelineError
    from workers.pipeline.schema import SchemaError
    from workers.store import IntegrityError

    try:
        if out is not None:
            check_writable(out)
            _refuse_overwrite(out, input_path, force)
        frame = read_table(input_path, (segment_by,) if segment_by else ())
    except TableError as exc:
        raise UserError(str(exc)) from exc
    with runtime(settings) as rt:
        try:
            result = predict_frame(ref, frame, rt, segment_by, fallback)
        except SchemaError as exc:
            raise UserError(f"{input_path}: {exc}") from exc
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        except (IntegrityError, PipelineError) as exc:  # a tampered or refused model file
            err.print(escape(f"error: {ref}: {exc}"))
            sys.exit(1)
    if out is None:
        result.frame.to_csv(sys.stdout, index=False)
    else:
        write_table(result.frame, out)
    for note in result.notes:
        err.print(escape(f"note: {note}"))
    done = len(frame) - result.unpredicted
    models = sorted(set(result.frame["model"].dropna())) if segment_by else []
    by = f"{len(models)} segment model(s) of {ref}" if segment_by else ref
    err.print(escape(f"predicted {done} of {len(frame)} row(s) with {by}"
                     + (f" -> {out}" if out is not None else "")))
    for line in segment_report(result, ref, segment_by or ""):
        err.print(escape(line))
    if result.unpredicted and strict:
        sys.exit(1)


def segment_report(result: Predicted, ref: str, segment_by: str, limit: int = 20) -> list[str]:
    """What segment predict says of the rows it did not serve at the alias: those with no model
    (counted per value), those whose model is registered but not promoted (each named, with
    its gate's reason), and those a fallback served."""
    lines = []
    if result.unknown:
        shown = ", ".join(f"{v!r}: {n}" for v, n in sorted(result.unknown.items())[:limit])
        more = f" and {len(result.unknown) - limit} more" if len(result.unknown) > limit else ""
        lines.append(f"warning: {sum(result.unknown.values())} row(s) of {len(result.unknown)} {segment_by} "
                     f"value(s) with no model at {ref}, left without a prediction (rows per value: "
                     f"{shown}{more})")
    for served in (False, True):
        group = {v: u for v, u in result.unpromoted.items() if u.served == served}
        if not group:
            continue
        rows = sum(u.rows for u in group.values())
        lines.append(f"note: {rows} row(s) of {len(group)} {segment_by} value(s) scored with their latest "
                     f"version, not promoted at {ref} (served_by 'latest'):" if served else
                     f"warning: {rows} row(s) of {len(group)} {segment_by} value(s) whose model is "
                     f"registered but not promoted at {ref}, left without a prediction (--fallback latest "
                     f"scores them with their latest version):")
        lines += [f"  {segment_by} {v}: {u.describe()} ({u.rows} row(s))"
                  for v, u in sorted(group.items())[:limit]]
        if len(group) > limit:
            lines.append(f"  and {len(group) - limit} more")
    return lines


def _refuse_overwrite(out: Path, input_path: Path, force: bool) -> None:
    """The user's data is never replaced: not the input (even with --force), nor another
    existing file unless --force says so."""
    if out.resolve() == input_path.resolve() or (
            out.exists() and input_path.exists() and out.samefile(input_path)):
        raise UserError(f"--out {out}: that is the input file; write the predictions elsewhere")
    if out.exists() and not force:
        raise UserError(f"--out {out}: the file exists; pass --force to replace it")


@click.command()
@click.argument("ref", metavar="MODEL@ALIAS|MODEL/VERSION")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for predictions.parquet (the input's columns plus `prediction`).")
@click.option("--chunk-rows", default=100_000, show_default=True, type=click.IntRange(1, MAX_COUNT),
              help="Rows per chunk: one `score` task each.")
@click.option("--workers", "-w", "n_workers", default=0, type=click.IntRange(0, MAX_PROCESSES),
              help="Start K local workers on the score queue for this job (default: use running ones, "
                   "`modelfleet worker -Q score`).")
@click.option("--timeout", default=3600.0, show_default=True, type=SECONDS,
              help="Seconds to wait for the chunks.")
@click.option("--segment-by", "segment_by", metavar="COLUMN",
              help="REF is a segment family FAMILY@ALIAS: each row goes to its COLUMN value's model "
                   "(the input is read and sent a chunk at a time).")
@pass_settings
def score(settings: Settings, ref: str, input_path: Path, out_dir: Path, chunk_rows: int, n_workers: int,
          timeout: float, segment_by: str | None) -> None:
    """Score a large CSV or Parquet table on the workers: one task per chunk on the `score` queue,
    chunks and predictions through the artifact store, joined in order into DIR."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from producer.cli.common import broker
    from producer.local import LocalWorkers
    from producer.scoring import NoScoreWorkers, score_table
    from producer.segment_scoring import score_segments
    from producer.tables import TableError, read_table
    from workers.app import create_app
    from workers.pipeline.schema import SchemaError
    from workers.runtime import Runtime
    from workers.settings import SCORE_QUEUE
    from workers.store import IntegrityError

    try:
        frame = None if segment_by else read_table(input_path)
    except TableError as exc:
        raise UserError(str(exc)) from exc
    with broker(settings) as live:
        app = create_app(live)
        try:
            with ExitStack() as stack:
                if n_workers:
                    stack.enter_context(LocalWorkers(live, n_workers, live.local_redis_dir.parent / "logs",
                                                     queues=[SCORE_QUEUE], name_prefix="score"))
                rt = Runtime.from_settings(live)
                if frame is None:
                    assert segment_by is not None
                    result = score_segments(ref, input_path, segment_by, rt, app, out_dir, chunk_rows,
                                            timeout, check_workers=not n_workers)
                else:
                    result = score_table(ref, frame, rt, app, out_dir, chunk_rows, timeout,
                                         check_workers=not n_workers)
        except KeyError as exc:
            raise UserError(str(exc.args[0])) from exc
        except SchemaError as exc:
            raise UserError(f"{input_path}: {exc}") from exc
        except NoScoreWorkers as exc:
            raise UserError(f"{exc}: start one (`modelfleet worker -Q {SCORE_QUEUE}`) or pass --workers K") \
                from exc
        except CeleryTimeout as exc:
            err.print(escape(f"error: the chunks did not finish within {timeout:.0f} s; is a worker "
                             f"consuming the {SCORE_QUEUE!r} queue?"))
            raise SystemExit(1) from exc
        except ValueError as exc:  # by segment: an unreadable table, a wrong family or rows
            raise UserError(str(exc)) from exc
        except IntegrityError as exc:  # a worker found a model file modified in the store
            err.print(escape(f"error: {ref}: {exc}"))
            raise SystemExit(1) from exc
        finally:
            app.close()
    spread = ", ".join(f"{w}: {n}" for w, n in sorted(result.per_worker.items()))
    done = f"{result.rows - sum(result.unknown.values())} of " if segment_by else ""
    err.print(escape(f"scored {done}{result.rows} row(s) with {result.model} in {result.chunks} chunk(s) "
                     f"({spread}): {result.scoring_seconds:.2f} s on the workers, "
                     f"{result.rows_per_second:,.0f} rows/s; {result.total_seconds:.2f} s in all -> "
                     f"{result.path}"))
    if result.unknown:
        shown = ", ".join(f"{v!r}: {n}" for v, n in sorted(result.unknown.items())[:20])
        err.print(escape(f"warning: {sum(result.unknown.values())} row(s) of {len(result.unknown)} "
                         f"{segment_by} value(s) with no model at {ref}, left without a prediction "
                         f"(rows per value: {shown}{' ...' if len(result.unknown) > 20 else ''})"))


COMMANDS = [predict, score]
