"""Batch commands: run, submit, status, cancel, retry."""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.text import Text

from producer.cancel import cancel_batch
from producer.cli.common import (
    FAIL_ON_GATE,
    MAX_PROCESSES,
    SECONDS,
    Unavailable,
    UserError,
    broker,
    console,
    err,
    exit_for,
    leaderboard_table,
    local_platform,
    pass_settings,
    watch,
)
from producer.handle import BatchHandle
from producer.local import LocalWorkers, WorkersGone, running_embedded_redis
from producer.nextsteps import Step, next_steps
from producer.provenance import describe
from producer.retry import NothingToRetry, models_to_retry, retry
from producer.spec import Batch, Priority, SpecError, load_batch
from producer.status import batch_status
from producer.submit import BrokerUnavailable, RedisFull, submit
from workers.app import PRIORITIES, create_app
from workers.backpressure import full_reason
from workers.runtime import Runtime
from workers.settings import Settings
from workers.slots import live_workers

NO_CACHE_HELP = ("Reuse nothing an earlier batch computed (a step that this batch's models "
                 "share is computed once).")


def load(spec: Path, settings: Settings, priority: Priority | None = None) -> Batch:
    """The validated batch, or a UserError listing every problem (nothing is submitted).

    `priority` (the --priority option) overrides the spec's."""
    try:
        batch = load_batch(spec, settings)
    except SpecError as exc:
        raise UserError(f"invalid batch spec ({exc.total} problem(s)); nothing was "
                        f"submitted:\n" + "\n".join(f"  {p}" for p in exc.problems)) from exc
    return dataclasses.replace(batch, priority=priority) if priority else batch


# An urgent rerun of a normal batch without editing its spec.
_priority_option = click.option("--priority", type=click.Choice(list(PRIORITIES)), default=None,
                                help="Queue priority of this batch (overrides the spec's).")


def _submit(batch: Batch, settings: Settings, no_cache: bool) -> BatchHandle:
    app = create_app(settings)
    try:
        return submit(batch, app, Runtime.from_settings(settings), no_cache=no_cache)
    except BrokerUnavailable as exc:
        raise UserError(f"{exc}; nothing was submitted") from exc
    except RedisFull as exc:
        raise Unavailable(f"{exc}; nothing was submitted") from exc


@click.command()
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--workers", "-w", default=2, show_default=True, type=click.IntRange(1, MAX_PROCESSES),
              help="Local worker processes.")
@click.option("--no-cache", is_flag=True, help=NO_CACHE_HELP)
@click.option("--timeout", type=SECONDS, default=None, help="Give up after this many seconds.")
@_priority_option
@FAIL_ON_GATE
@pass_settings
def run(settings: Settings, spec: Path, workers: int, no_cache: bool, timeout: float | None,
        priority: Priority | None, fail_on_gate: bool) -> None:
    """Run a batch end to end on local workers (and an embedded Redis if none is configured)."""
    batch = load(spec, settings, priority)
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
            handle = _submit(batch, live, no_cache)
            status = watch(handle, timeout, local)
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
    show_next_steps(next_steps(batch, status, settings.data_root, workers))
    exit_for(status, fail_on_gate or batch.fail_on_gate)


def show_next_steps(steps: list[Step]) -> None:
    # Plain echo, not rich: no wrapping or markup, so a line can be copied as it is.
    click.echo("\nnext:")
    width = max(len(s.command) for s in steps)
    for step in steps:
        click.echo(f"  {step.command:<{width}}  # {step.why}")


@click.command("submit")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--wait", is_flag=True, help="Watch progress until the batch is done.")
@click.option("--no-cache", is_flag=True, help=NO_CACHE_HELP)
@click.option("--timeout", type=SECONDS, default=None, help="With --wait: give up after this many seconds.")
@_priority_option
@FAIL_ON_GATE
@pass_settings
def submit_cmd(settings: Settings, spec: Path, wait: bool, no_cache: bool, timeout: float | None,
               priority: Priority | None, fail_on_gate: bool) -> None:
    """Submit a batch to the configured broker (MODELFLEET_BROKER_URL)."""
    batch = load(spec, settings, priority)
    if settings.broker_url is None:
        running = running_embedded_redis(settings.local_redis_dir)  # e.g. `modelfleet up`'s
        if running is None:
            raise UserError("no broker configured: set MODELFLEET_BROKER_URL, start `modelfleet up`, "
                            "or use `modelfleet run`")
        settings = settings.with_broker(running)
    handle = _submit(batch, settings, no_cache)
    console.print(f"submitted batch [bold]{escape(handle.batch_id)}[/] ({len(batch.models)} models)")
    if wait:
        exit_for(watch(handle, timeout), fail_on_gate or batch.fail_on_gate)


@click.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def status(settings: Settings, batch_id: str, as_json: bool) -> None:
    """A batch's progress per state and stage, and its leaderboard."""
    with broker(settings) as live:
        try:
            rt = Runtime.from_settings(live)
            st = batch_status(rt, batch_id)
        except KeyError as exc:
            raise UserError(str(exc.args[0])) from exc
        fleet = None if st.done else live_workers(rt.redis)  # who would run what is left
        if (full := full_reason(rt.redis)) is not None:  # why nothing moves
            err.print(Text.assemble(("warning:", "bold yellow"), " ", full), highlight=False)
    if as_json:
        click.echo(json.dumps(st.to_json(), indent=1))
        return
    console.print(leaderboard_table(st))
    for row in st.rows:  # the sweeper's note: why a model ran again, or resumed late
        if row.recovered:
            click.echo(f"recovered {row.name}: {row.recovered}")
    click.echo("submitted " + describe(st.origin))
    console.print("stages done: " + ", ".join(f"{s} {n}" for s, n in st.stages_done.items()))
    if st.eta is not None:
        console.print(f"ETA {st.eta:.0f}s")
    if fleet is not None:
        click.echo(workers_line(fleet))


def workers_line(fleet: list[dict[str, Any]]) -> str:
    """The live workers' registered slots (workers/slots.py), for a batch still running."""
    if not fleet:
        return "workers: none registered (queued models wait for a worker)"
    return f"workers: {sum(w['slots'] for w in fleet)} slots: " + "; ".join(
        f"{w['worker']} {w['slots']} ({', '.join(w['queues'])})" for w in fleet)


@click.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_settings
def cancel(settings: Settings, batch_id: str, as_json: bool) -> None:
    """Cancel a batch: revoke models not started yet; running ones stop after their stage."""
    with broker(settings) as live:
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
                  f"not started" + escape(f": {', '.join(report.revoked)}" if report.revoked else ""))
    if report.stopping:
        console.print(f"{len(report.stopping)} running model(s) stop after their current stage: "
                      + escape(", ".join(report.stopping)))
    if report.finished:
        counts = Counter(report.finished.values())
        console.print("left as they were: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


@click.command("retry")
@click.argument("batch_id")
@click.option("--workers", "-w", default=2, show_default=True, type=click.IntRange(1, MAX_PROCESSES),
              help="Local workers to start when no broker is configured.")
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--timeout", type=SECONDS, default=None, help="Give up waiting after this many seconds.")
@pass_settings
def retry_cmd(settings: Settings, batch_id: str, workers: int, wait: bool, timeout: float | None) -> None:
    """Rerun only the failed or cancelled models of a batch, under the same batch id."""
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
        except RedisFull as exc:
            raise Unavailable(f"{exc}; nothing was resent") from exc
        console.print(f"retrying {len(names)} model(s) of batch [bold]{escape(batch_id)}[/]: "
                      + escape(", ".join(names)))
        if not wait:
            return
        status = watch(handle, timeout)
    exit_for(status)


COMMANDS = [run, submit_cmd, status, cancel, retry_cmd]
