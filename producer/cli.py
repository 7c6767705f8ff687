"""The `modelfleet` command: thin over spec, submit, status, local and the registry."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from producer import cli_history
from producer.cli_common import UserError, broker, console, err, local_platform
from producer.cli_ops import cancel
from producer.cli_platform import up
from producer.local import LocalWorkers, WorkersGone, running_embedded_redis
from producer.spec import SpecError, load_batch
from producer.status import BatchStatus, batch_status, leaderboard
from producer.submit import BatchHandle, BrokerUnavailable, submit
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import STAGES, Settings


def _load(spec: Path, settings: Settings) -> Any:
    try:
        return load_batch(spec, settings)
    except SpecError as exc:
        raise UserError(f"invalid batch spec ({exc.total} problem(s)); nothing was "
                        f"submitted:\n" + "\n".join(f"  {p}" for p in exc.problems)) from exc


def _submit(batch: Any, settings: Settings, no_cache: bool) -> tuple[BatchHandle, Any]:
    app = create_app(settings)
    try:
        return submit(batch, app, Runtime.from_settings(settings), no_cache=no_cache), app
    except BrokerUnavailable as exc:
        raise UserError(f"{exc}; nothing was submitted") from exc


def _watch(handle: BatchHandle, timeout: float | None,
           local: LocalWorkers | None = None) -> BatchStatus:
    """Progress bar per stage until the batch is done, then the leaderboard.

    With `local` workers, raises WorkersGone once all of them have exited."""
    total = len(handle.status().rows)
    with Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        bars = {s: progress.add_task(s, total=total) for s in STAGES}

        def update(status: BatchStatus) -> None:
            for stage, bar in bars.items():
                progress.update(bar, completed=status.stages_done[stage])
            if local is not None and not status.done:
                local.check_alive()

        status = handle.wait(timeout=timeout, on_progress=update)
    console.print(leaderboard(status))
    return status


def _exit_for(status: BatchStatus, fail_on_gate: bool = False) -> None:
    """Exit 1 if a model failed or was cancelled, or (fail_on_gate) was not promoted."""
    failed = status.counts.get("failed", 0) + status.counts.get("cancelled", 0)
    unpromoted = status.counts.get("registered", 0) + status.counts.get("deployed", 0)
    if failed:
        err.print(f"{failed} of {len(status.rows)} models did not deploy")
    if unpromoted and fail_on_gate:
        err.print(f"{unpromoted} of {len(status.rows)} models were registered but not promoted "
                  "(their gate did not pass)")
    if failed or (unpromoted and fail_on_gate):
        sys.exit(1)


_FAIL_ON_GATE = click.option("--fail-on-gate", is_flag=True,
                             help="Exit 1 if a model's gate did not pass (also: `fail_on_gate: true`).")


@click.group()
def main() -> None:
    """Train, evaluate and deploy many models at once on Celery workers over Redis."""


@main.command()
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--workers", "-w", default=2, show_default=True, help="Local worker processes.")
@click.option("--no-cache", is_flag=True, help="Recompute every stage.")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
@_FAIL_ON_GATE
def run(spec: Path, workers: int, no_cache: bool, timeout: float | None, fail_on_gate: bool) -> None:
    """Run a batch end to end on local workers (and an embedded Redis if none is configured)."""
    settings = Settings()
    batch = _load(spec, settings)
    console.print(f"batch [bold]{escape(batch.name)}[/]: {len(batch.models)} models, {workers} workers")
    received: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        # SIGTERM (timeout, CI cancellation, kill) unwinds like Ctrl-C, so the context
        # managers stop the workers and the Redis started here. Further signals are ignored
        # while stopping (each stop is bounded: SIGTERM, then SIGKILL after a grace period).
        received.append(signum)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with local_platform(settings, workers=workers) as (live, local):
            handle, _ = _submit(batch, live, no_cache)
            status = _watch(handle, timeout, local)
    except KeyboardInterrupt:
        signum = received[0] if received else signal.SIGINT
        err.print(f"interrupted ({signal.Signals(signum).name}): stopped the workers and Redis "
                  "started here; the batch's records stay in Redis")
        sys.exit(128 + signum)
    except WorkersGone as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}; stopped waiting for the batch", highlight=False)
        sys.exit(1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _exit_for(status, fail_on_gate or batch.fail_on_gate)


@main.command("submit")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--wait", is_flag=True, help="Watch progress until the batch is done.")
@click.option("--no-cache", is_flag=True, help="Recompute every stage.")
@click.option("--timeout", type=float, default=None)
@_FAIL_ON_GATE
def submit_cmd(spec: Path, wait: bool, no_cache: bool, timeout: float | None, fail_on_gate: bool) -> None:
    """Submit a batch to the configured broker (MODELFLEET_BROKER_URL)."""
    settings = Settings()
    batch = _load(spec, settings)
    if settings.broker_url is None:
        running = running_embedded_redis(settings.local_redis_dir)  # e.g. `modelfleet up`'s
        if running is None:
            raise UserError("no broker configured: set MODELFLEET_BROKER_URL, start `modelfleet up`, "
                            "or use `modelfleet run`")
        settings = settings.with_broker(running)
    handle, _ = _submit(batch, settings, no_cache)
    console.print(f"submitted batch [bold]{escape(handle.batch_id)}[/] ({len(batch.models)} models)")
    if wait:
        _exit_for(_watch(handle, timeout), fail_on_gate or batch.fail_on_gate)


@main.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True)
def status(batch_id: str, as_json: bool) -> None:
    """A batch's progress per state and stage, and its leaderboard."""
    with broker(Settings()) as live:
        try:
            st = batch_status(Runtime.from_settings(live), batch_id)
        except KeyError as exc:
            raise UserError(str(exc.args[0])) from exc
    if as_json:
        click.echo(json.dumps(st.to_json(), indent=1))
        return
    console.print(leaderboard(st))
    console.print("stages done: " + ", ".join(f"{s} {n}" for s, n in st.stages_done.items()))
    if st.eta is not None:
        console.print(f"ETA {st.eta:.0f}s")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--queues", "-Q", default=",".join(STAGES), show_default=True)
@click.option("--concurrency", "-c", type=int, default=None)
@click.pass_context
def worker(ctx: click.Context, queues: str, concurrency: int | None) -> None:
    """Run a Celery worker for the configured broker (extra args go to `celery worker`)."""
    settings = Settings()
    if settings.broker_url is None:
        running = running_embedded_redis(settings.local_redis_dir)  # e.g. `modelfleet up`'s
        if running is None:
            raise UserError("no broker configured: set MODELFLEET_BROKER_URL (or start `modelfleet up`)")
        settings = settings.with_broker(running)
    app = create_app(settings)
    argv = ["worker", "-Q", queues, "-c", str(concurrency or settings.worker_concurrency),
            *ctx.args]
    app.worker_main(argv)


main.add_command(cli_history.runs)
main.add_command(cli_history.show)
main.add_command(cli_history.compare)
main.add_command(cli_history.batches)
main.add_command(cli_history.leaderboard_cmd)
main.add_command(cli_history.models)
main.add_command(cli_history.promote)
main.add_command(cli_history.rollback)
main.add_command(cli_history.lineage)
main.add_command(cli_history.cache)
main.add_command(cli_history.retry_cmd)
main.add_command(cli_history.reindex_cmd)
main.add_command(up)
main.add_command(cancel)

if __name__ == "__main__":
    main()
