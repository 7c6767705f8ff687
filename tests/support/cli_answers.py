"""Running `modelfleet` in-process (click's CliRunner) and judging its answer by the CLI's rule:
exit 0, 1 or 2; no traceback; a failure says why in one line on stderr."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from click.testing import CliRunner, Result
from hypothesis import strategies as st

from producer.cli import main

# A broker nobody listens on (port 1 is privileged): a command that reaches Redis fails fast.
UNREACHABLE = "redis://127.0.0.1:1/0"

# What a user (or an attacker) types where a name, a ref, a path or a tag goes.
HOSTILE_TEXT = [
    "[/red]x", "[red]x[/red]", "[bold]", "[link=file:///etc/passwd]x[/link]", "; rm -rf /", "$(id)", "`id`",
    "x/1", "x@production", "@", "/", "x/", "x/-1", "x/99999999999999999999", "x/" + "9" * 5000, "x/\u0663",
    "x/ 1", "../../etc/passwd", "-", "--", "", " ", "\t", "\n", "é", "\u202e", ":fire:", "a" * 300,
    "\udcff", "%s", "{}", "{0}", "\\", "'", '"', "*", "?", "k=v", "=v", "k=", "[/red]=[/red]", "a\\[b",
]
HOSTILE_NUMBERS = [
    "99999999999999999999", "-99999999999999999999", "-5", "-1", "0", "1", "3", "1e20", "1e999", "nan",
    "inf", "-inf", "0x10", "1_000", " 5", "", "-0", "9223372036854775807", "9223372036854775808", "2.5",
]

# Real argv and environ hold no NUL, and no surrogate but the undecodable bytes of
# surrogateescape (as \udcff); hypothesis adds the unforeseen.
_typed = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
texts = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(_typed, max_size=12))
numbers = st.one_of(st.sampled_from(HOSTILE_NUMBERS), st.integers(-(10**25), 10**25).map(str))


def invoke(args: Sequence[str], env: Mapping[str, str | None]) -> Result:
    return CliRunner().invoke(main, list(args), env=dict(env))


def assert_clean(result: Result, args: Sequence[str], env: Mapping[str, str | None] | None = None) -> None:
    """The rule: exit 0, 1 or 2; no traceback; a failure explains itself on stderr in one line."""
    where = f"modelfleet {list(args)!r} with {dict(env or {})!r}"
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), f"{where}: raised {exc!r}\n{result.output}"
    assert result.exit_code in (0, 1, 2), f"{where}: exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output, f"{where}: a traceback\n{result.output}"
    # The catch-all's answer is clean, but it means a command met an error it does not know.
    assert "a bug: please report it" not in result.output, f"{where}:\n{result.output}"
    if result.exit_code != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines, f"{where}: exit {result.exit_code} without a word on stderr"
        errors = [line for line in lines if line.lower().startswith("error:")]
        assert len(errors) <= 1, f"{where}: more than one error line\n{result.stderr}"
