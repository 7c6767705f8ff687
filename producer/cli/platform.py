"""Platform commands: `up` (the local platform: Redis, K workers, Flower, until Ctrl-C) and
`worker` (one Celery worker for the configured broker)."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
from types import FrameType

import click
from rich.markup import escape

from producer.cli.common import MAX_PROCESSES, PORT, UserError, broker, console, err, pass_settings
from producer.cli.page import BatchPage
from producer.local import LocalFlower, running_embedded_redis, worker_command, worker_env
from producer.submit import masked_url
from workers.runtime import Runtime, open_root
from workers.settings import STAGES, WORKER_ARGS, Settings


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Unwind like Ctrl-C, so every context manager stops what it started. Set for
    # SIGINT too: a shell starts background jobs with SIGINT ignored. Further signals
    # are ignored while stopping, so a second Ctrl-C cannot abandon a half-stopped
    # child (each stop is bounded: SIGTERM, then SIGKILL after a grace period).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def _wait_until_interrupted(flower: LocalFlower) -> int:
    """Block until Ctrl-C / SIGTERM (0), or until Flower dies (1)."""
    try:
        while flower.proc is not None and flower.proc.poll() is None:
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
    err.print(f"flower exited unexpectedly; see {flower.log_path()}", markup=False)
    return 1


def _batch_page(live: Settings, flower: LocalFlower, port: int | None
                ) -> contextlib.AbstractContextManager[BatchPage | None]:
    """The batch page beside Flower, with Flower's credentials; none for port 0."""
    if port == 0:
        return contextlib.nullcontext()
    return BatchPage(Runtime.from_settings(live), flower.url, flower.user, flower.password,
                     port=port or 0)


@click.command()
@click.option("--workers", "-w", default=2, show_default=True, type=click.IntRange(0, MAX_PROCESSES),
              help="Local worker processes (0: none; start `modelfleet worker`s yourself).")
@click.option("--flower-port", type=PORT, default=None, help="Flower's port (default: a free one).")
@click.option("--page-port", type=PORT, default=None,
              help="The batch page's port (default: MODELFLEET_PAGE_PORT, else a free one; 0: none).")
@pass_settings
def up(settings: Settings, workers: int, flower_port: int | None, page_port: int | None) -> None:
    """Start the local platform: embedded Redis, K workers, Flower and the batch page, until Ctrl-C."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    console.print(f"starting {workers} workers and Flower ...")
    code = 0
    try:
        with broker(settings, workers=workers) as live:
            log_dir = live.local_redis_dir.parent / "logs"
            with LocalFlower(live, log_dir, port=flower_port) as flower, \
                    _batch_page(live, flower, settings.page_port if page_port is None else page_port) as page:
                # Plain echo, not rich: no wrapping, so the lines can be copied and parsed.
                if settings.broker_url is None:
                    # The embedded Redis: loopback, with the generated password of
                    # local_redis_dir's .password file (other local commands read it there).
                    url = live.broker()
                    click.echo(f"broker    {url}")
                    click.echo(f"          export MODELFLEET_BROKER_URL={shlex.quote(url)}"
                               "  # then `modelfleet submit SPEC` from another shell")
                else:
                    # Configured by the user: never echo its password.
                    click.echo(f"broker    {masked_url(live.broker())}  "
                               "(from MODELFLEET_BROKER_URL)")
                click.echo(f"artifacts {open_root(live).describe()}")
                click.echo(f"flower    {flower.url}/  user {flower.user}")
                if flower.generated:
                    click.echo(f"          password {flower.password}  (generated; set "
                               "MODELFLEET_FLOWER_PASSWORD to choose one)")
                if page is not None:
                    click.echo(f"batches   {page.url}/  (the same user and password)")
                click.echo(f"up (pid {os.getpid()}); Ctrl-C stops everything")
                code = _wait_until_interrupted(flower)
    except KeyboardInterrupt:
        code = 0
    except (RuntimeError, TimeoutError) as exc:
        # A process that would not start (e.g. Flower's port taken): say which, no traceback.
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        code = 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print("stopped")
    raise SystemExit(code)


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--queues", "-Q", default=",".join(STAGES), show_default=True)
@click.option("--concurrency", "-c", type=click.IntRange(1, MAX_PROCESSES), default=None,
              help="Processes of this worker (default: MODELFLEET_WORKER_CONCURRENCY).")
@click.pass_context
def worker(ctx: click.Context, queues: str, concurrency: int | None) -> None:
    """Run a Celery worker for the configured broker (extra args go to `celery worker`)."""
    settings: Settings = ctx.obj
    if settings.broker_url is None:
        running = running_embedded_redis(settings.local_redis_dir)  # e.g. `modelfleet up`'s
        if running is None:
            raise UserError("no broker configured: set MODELFLEET_BROKER_URL (or start `modelfleet up`)")
        settings = settings.with_broker(running)
    argv = ["worker", "-Q", queues, "-c", str(concurrency or settings.worker_concurrency),
            *WORKER_ARGS, *ctx.args]
    # This process becomes `python -m workers` (the same PID: a container's signals reach the
    # worker), which imports scipy.special before Celery and the task modules: ~1 s less CPU
    # at the start than a worker in this process, whose CLI modules come first (workers/__main__.py).
    os.execve(sys.executable, worker_command(argv), worker_env(settings))


COMMANDS = [up, worker]
