"""What every `modelfleet` subcommand shares: consoles, user errors, the broker."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from producer.local import EmbeddedRedis, LocalWorkers
from workers.settings import Settings

# Piped or captured output has no terminal width; rich would assume 80 columns
# and cut model names, so give tables room there. soft_wrap: a message line is
# never broken in the middle (scripts and logs grep for it).
console = Console(width=None if sys.stdout.isatty() else 140, soft_wrap=True)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140, soft_wrap=True)


class UserError(click.ClickException):
    """A mistake the user can fix: message, exit code 2, no traceback."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        # The message is plain text, never markup: it echoes user text (spec names, fields,
        # YAML errors), and `[/red]` in a model name must print as itself, not raise.
        err.print(Text.assemble(("error:", "bold red"), " ", self.message), highlight=False)


@contextmanager
def local_platform(settings: Settings, workers: int = 0
                   ) -> Iterator[tuple[Settings, LocalWorkers | None]]:
    """The configured broker, or the embedded Redis of `local_redis_dir` (the one already
    running for it, else a new one), plus k local workers if asked for."""
    with ExitStack() as stack:
        if settings.broker_url is None:
            server = stack.enter_context(EmbeddedRedis(settings.local_redis_dir))
            settings = settings.with_broker(server.url)
        started = None
        if workers:
            log_dir = settings.local_redis_dir.parent / "logs"
            started = stack.enter_context(LocalWorkers(settings, workers, log_dir))
        yield settings, started


@contextmanager
def broker(settings: Settings, workers: int = 0) -> Iterator[Settings]:
    """The configured broker, or the embedded Redis, plus k local workers if asked for."""
    with local_platform(settings, workers) as (live, _):
        yield live
