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

import atexit
import functools
import gc
from typing import Any

import click
from pydantic import ValidationError
from pydantic_settings import SettingsError

from producer.cli import batches, cache, leaderboard, monitor, platform, predict, registry, report, runs
from producer.cli.common import failure, settings_error
from workers.settings import Settings

# What click itself answers (usage errors, --help, Ctrl-C, sys.exit): passed on as they are.
_CLICK_OWN = (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort,
              KeyboardInterrupt, EOFError, SystemExit)


class _Main(click.Group):
    """The group; any error a command did not answer becomes one line and exit 1, not a traceback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Bytes that are not UTF-8 come in as lone surrogates (Python's surrogateescape): no
        # Redis key, file of ours or line of output can hold them, so refuse them here, once.
        for arg in args:
            try:
                arg.encode()
            except UnicodeEncodeError:
                raise click.UsageError(f"argument {ascii(arg)[:80]} is not valid UTF-8 text", ctx) from None
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _CLICK_OWN:
            raise
        except Exception as exc:
            if ctx.meta.get("modelfleet.traceback"):
                raise
            raise failure(exc, ctx.obj if isinstance(ctx.obj, Settings) else None) from exc


@click.group(cls=_Main)
@click.option("--traceback", "show_traceback", is_flag=True,
              help="Show the Python traceback of an unexpected error (for a bug report).")
@click.pass_context
def main(ctx: click.Context, show_traceback: bool) -> None:
    """Train, evaluate and deploy many models at once on Celery workers over Redis."""
    ctx.meta["modelfleet.traceback"] = show_traceback
    _quick_exit()
    # Built once, from MODELFLEET_* in the environment; commands take it with @pass_settings.
    try:
        ctx.obj = Settings()
    except (ValidationError, SettingsError) as exc:
        raise settings_error(exc) from exc


@functools.cache
def _quick_exit() -> None:
    # Python's finalization ends in garbage collections over every object the command made:
    # 0.11-0.13 s of `modelfleet status`'s ~0.9 s. Frozen at exit, they are left to the OS;
    # the atexit handlers (journals, logging) still run, and files still close.
    atexit.register(gc.freeze)


for family in (batches, runs, leaderboard, report, registry, predict, monitor, platform, cache):
    for command in family.COMMANDS:
        main.add_command(command)

if __name__ == "__main__":
    main()
