"""What every `modelfleet` command shares: consoles, user errors, the broker, the
progress view and the rich tables (the library returns data; rendering lives here)."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import redis
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from producer import history, leaderboard
from producer.handle import BatchHandle
from producer.local import LocalWorkers, local_platform
from producer.status import BatchStatus, ranked
from workers.runtime import Runtime
from workers.settings import STAGES, Settings, settings_problem
from workers.tracking import DEPLOYED

# Piped or captured output has no terminal width; rich would assume 80 columns
# and cut model names, so give tables room there. soft_wrap: a message line is
# never broken in the middle (scripts and logs grep for it).
# No emoji codes: `:fire:` in a model name prints as itself. User text goes into tables as
# Text (never markup) and into message lines through rich's escape().
console = Console(width=None if sys.stdout.isatty() else 140, soft_wrap=True, emoji=False)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140, soft_wrap=True, emoji=False)

TAG = click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Filter by tag (repeatable).")
JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")

# The Settings the `modelfleet` group built (from MODELFLEET_* in the environment), once per call.
pass_settings = click.make_pass_decorator(Settings)


class UserError(click.ClickException):
    """A mistake the user can fix: message, exit code 2, no traceback."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        # The message is plain text, never markup: it echoes user text (spec names, fields,
        # YAML errors), and `[/red]` in a model name must print as itself, not raise.
        err.print(Text.assemble(("error:", "bold red"), " ", self.message), highlight=False)


class Unavailable(UserError):
    """A service cannot do what was asked now (e.g. Redis is full): exit 1, one line."""

    exit_code = 1


class Failure(UserError):
    """Something around the command failed (Redis unreachable, a file system error): exit 1."""

    exit_code = 1


# Bounds of the numeric options. Beyond them a number is a mistake, and unchecked it would
# reach Redis (64-bit integers: a ResponseError), a process pool (one process each) or the OS.
MAX_PROCESSES = 256      # local workers, worker concurrency, report --jobs
MAX_PAGE = 1_000_000     # rows of one page (runs, batches)
MAX_COUNT = 10**9        # an offset, a page number, a top N, a version, a chunk's rows
PORT = click.IntRange(0, 65535)


class Finite(click.FloatRange):
    """A number from `low` to `high`: `nan` is refused too (click's range lets it by)."""

    def __init__(self, low: float, high: float, name: str = "float") -> None:
        super().__init__(min=low, max=high)
        self.name = name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number.", param, ctx)
        return number


SECONDS = Finite(0, 366 * 86400.0, "seconds")  # a duration: up to a year


def settings_error(exc: ValidationError | SettingsError) -> UserError:
    """One line naming every MODELFLEET_* variable that did not parse or validate."""
    return UserError(settings_problem(exc))


def failure(exc: Exception, settings: Settings | None) -> Failure:
    """The one-line answer to an error no command handled itself (exit 1, no traceback)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | OperationalError):
        where = ("the embedded Redis" if settings is None or settings.broker_url is None
                 else "MODELFLEET_RESULT_BACKEND" if settings.result_backend is not None
                 else "MODELFLEET_BROKER_URL")
        # A sentinel's "no master" error carries the repr of every client it tried.
        return Failure(f"cannot reach Redis ({where}): {text.split(' : <')[0]}")
    if isinstance(exc, redis.exceptions.RedisError):
        return Failure(f"Redis refused a command: {text}")
    if isinstance(exc, TimeoutError):  # before OSError: it is one
        return Failure(text or "timed out")
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return Failure(f"{where}{exc.strerror or text}")
    return Failure(f"unexpected {type(exc).__name__}: {text} (a bug: please report it; "
                   "`modelfleet --traceback ...` shows where)")


@contextmanager
def broker(settings: Settings, workers: int = 0) -> Iterator[Settings]:
    """The configured broker, or the embedded Redis, plus k local workers if asked for."""
    with local_platform(settings, workers) as (live, _):
        yield live


@contextmanager
def runtime(settings: Settings) -> Iterator[Runtime]:
    """The configured broker's runtime (or the embedded Redis); user errors for unknown names."""
    with broker(settings) as live:
        try:
            yield Runtime.from_settings(live)
        except KeyError as exc:
            raise UserError(str(exc.args[0])) from exc


def parse_tags(pairs: tuple[str, ...]) -> dict[str, str]:
    try:
        return history.parse_tags(pairs)
    except ValueError as exc:
        raise UserError(f"--tag: {exc}") from exc


WATCH_ALL, WATCH_TOP = 100, 50


def watch(handle: BatchHandle, timeout: float | None, local: LocalWorkers | None = None) -> BatchStatus:
    """Progress bar per stage until the batch is done, then the leaderboard.

    With `local` workers, raises WorkersGone once all of them have exited."""
    total = len(handle.progress().rows)  # a few fields a model: the bars need only the count
    with Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        bars = {s: progress.add_task(s, total=total) for s in STAGES}

        def update(status: BatchStatus) -> None:
            for stage, bar in bars.items():
                progress.update(bar, completed=status.stages_done[stage])
            if local is not None and not status.done:
                local.check_alive()

        status = handle.wait(timeout=timeout, on_progress=update)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(status.counts.items()))
    # A big batch shows its best WATCH_TOP a task (a 450-row table took the CLI 0.4 s to
    # draw, on a machine its workers share); `leaderboard` shows them all.
    top = WATCH_TOP if len(status.rows) > WATCH_ALL else None
    entries = leaderboard.entries(handle.runtime, handle.batch_id, status=status)[1]
    for part in leaderboard.sections(entries, top=top):
        console.print(section_table(handle.batch_id, summary, part, None))
    if top is not None:
        console.print(f"every model: modelfleet leaderboard {handle.batch_id}", markup=False)
    return status


def exit_for(status: BatchStatus, fail_on_gate: bool = False) -> None:
    """Exit 1 when some model did not deploy (failed or cancelled) or, with `fail_on_gate`,
    was registered without passing its gate."""
    failed = status.counts.get("failed", 0) + status.counts.get("cancelled", 0)
    unpromoted = status.counts.get("registered", 0) + status.counts.get("deployed", 0)
    if failed:
        err.print(f"{failed} of {len(status.rows)} models did not deploy")
    if unpromoted and fail_on_gate:
        err.print(f"{unpromoted} of {len(status.rows)} models were registered but not promoted "
                  "(their gate did not pass)")
    if failed or (unpromoted and fail_on_gate):
        sys.exit(1)


FAIL_ON_GATE = click.option("--fail-on-gate", is_flag=True,
                            help="Exit 1 if a model's gate did not pass (also: `fail_on_gate: true`).")


# ---- rendering -----------------------------------------------------------------------

def emit(data: Any, as_json: bool, table: Callable[[], Table]) -> None:
    """`--json`: the data; otherwise the rich table."""
    if as_json:
        click.echo(json.dumps(data, indent=1, default=str))
    else:
        console.print(table())


def when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))


def metrics_text(m: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in m.items())


def plain(value: Any) -> Text:
    """A table cell, title or header as itself: rich would read a plain str as markup."""
    return Text(value if isinstance(value, str) else num(value))


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    out = Table(title=plain(title))
    for col in columns:
        out.add_column(plain(col))
    for row in rows:
        out.add_row(*(plain(c) for c in row))
    return out


def versions_table(name: str, versions: list[dict[str, Any]], aliases: dict[str, int]) -> Table:
    by_version: dict[int, list[str]] = {}
    for alias, v in aliases.items():
        by_version.setdefault(v, []).append(alias)
    return table(f"{name}: {len(versions)} version(s)", [
        "version", "aliases", "created", "batch", "metrics", "decision", "artifact"],
        [[v["version"], ",".join(sorted(by_version.get(v["version"], []))), when(v["created"]),
          v.get("batch_id"), metrics_text(v.get("metrics", {})), (v.get("decision") or {}).get("reason", ""),
          v["artifact"][:12]] for v in versions])


def leaderboard_table(status: BatchStatus) -> Table:
    """Models best-first by their primary metric; failures last with their error."""
    summary = ", ".join(f"{n} {s}" for s, n in sorted(status.counts.items()))
    out = Table(title=plain(f"batch {status.batch_id}: {summary}"))
    for col in ("model", "metric", "value", "version", "promoted", "status", "worker", "time"):
        out.add_column(col, justify="right" if col in ("value", "version", "time") else "left")
    for r in ranked(status.rows):
        detail = (f"{r.status}: {r.error[:80]}" if r.error and r.status not in DEPLOYED else
                  f"{r.status}: {r.reason[:80]}" if r.status == "registered" and r.reason else r.status)
        out.add_row(*map(plain, (r.name, r.metric or "", f"{r.value:.4f}" if r.value is not None else "",
                                 str(r.version or ""), "yes" if r.promoted else ("no" if r.version else ""),
                                 detail, r.worker, f"{r.seconds:.1f}s" if r.seconds is not None else "")))
    return out


def secs(value: float | None, fmt: str = "{:.2f}s") -> str:
    return "" if value is None else fmt.format(value)


def section_table(batch_id: str, summary: str, part: leaderboard.Section, tag: str | None) -> Table:
    direction = "lower" if part.lower_is_better else "higher"
    out = Table(title=plain(f"{batch_id}: {part.task} by {part.metric or '-'} ({direction} is better), "
                            f"{len(part.rows)} of {part.total} models"), caption=plain(summary))
    columns = ["#", *([tag] if tag else []), "model", part.metric or "value", "version", "promoted",
               "status", "compute", "queue", "done after", "worker"]
    for col in columns:
        right = col in ("#", "version", "compute", "queue", "done after") or col == part.metric
        out.add_column(plain(col), justify="right" if right else "left")
    previous: Any = object()
    for rank, e in enumerate(part.rows, 1):
        group = e.tags.get(tag, "-") if tag else None
        if tag and rank > 1 and group != previous:
            out.add_section()
        previous = group
        detail = (f"{e.status}: {e.error[:60]}" if e.error and e.status not in DEPLOYED else
                  f"{e.status}: {e.reason[:60]}" if e.status == "registered" and e.reason else e.status)
        out.add_row(*map(plain, (str(rank), *([group] if tag else []), e.name,
                                 f"{e.value:.4f}" if e.value is not None else "", str(e.version or ""),
                                 "yes" if e.promoted else ("no" if e.version else ""), detail,
                                 secs(e.compute_seconds), secs(e.queue_seconds), secs(e.done_seconds),
                                 e.worker)))
    return out
