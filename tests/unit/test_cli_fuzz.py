"""Fuzz every `modelfleet` command's arguments and the MODELFLEET_* settings, with no service.

Whatever the user types and whatever the environment holds, the answer is exit 0, 1 or 2 with
a one-line message and no traceback (tests/support/cli_answers.py). The broker is one nobody
listens on, so a command that gets past its arguments ends at "cannot reach Redis" (exit 1):
that covers parsing, bounds and settings. tests/integration/test_cli_fuzz.py fuzzes the same
commands against a real Redis holding a real batch, where user text is looked up and printed.

Fixed seed (derandomize) and bounded size, so CI runs the same examples in the same time.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.cli_answers import (
    HOSTILE_NUMBERS,
    HOSTILE_TEXT,
    UNREACHABLE,
    assert_clean,
    invoke,
    numbers,
    texts,
)
from workers.settings import Settings

FUZZ = settings(max_examples=300, deadline=timedelta(seconds=20), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """A command with hostile values where the user types text or numbers; `up` and `worker`
    only with numbers out of range (in range, they would start and serve until stopped)."""
    t, n = (lambda: draw(texts)), (lambda: draw(numbers))
    flag = lambda *options: [o for o in options if draw(st.booleans())]  # noqa: E731
    shapes = [
        lambda: ["status", t(), *flag("--json")],
        lambda: ["batches", "--limit", n(), *flag("--json")],
        lambda: ["runs", "--batch", t(), "--model", t(), "--stage", t(), "--tag", t(), "--limit", n(),
                 "--offset", n(), *draw(st.sampled_from([[], ["--page", n()]]))],
        lambda: ["show", t()],
        lambda: ["compare", t(), t(), "--tag", t()],
        lambda: ["leaderboard", t(), "--metric", t(), "--top", n(), "--best-per", t(), "--group-by", t(),
                 "--format", draw(st.sampled_from(["table", "csv", "json", t()]))],
        lambda: ["lineage", t(), *flag("--json")],
        lambda: ["models", "--tag", t(), "--group-by", t()],
        lambda: ["models", "versions", t()],
        lambda: ["promote", "--alias", t(), "--", t(), n()],
        lambda: ["promote", "--alias", t(), "--batch", t()],
        lambda: ["rollback", "--alias", t(), "--", t()],
        lambda: ["report", "--", t()],
        lambda: ["report", "--batch", t(), "--top", n(), "--jobs", n(), "--out", t()],
        lambda: ["cache", "stats"],
        lambda: ["cache", "prune", "--older-than", t()],
        lambda: ["cancel", t()],
        lambda: ["retry", t(), "--no-wait", "--workers", n(), "--timeout", n()],
        lambda: ["submit", "--timeout", n(), "--", t()],
        lambda: ["run", "--workers", n(), "--timeout", n(), "--", t()],
        lambda: ["predict", "--", t(), t()],
        lambda: ["evaluate", "--tolerance", n(), "--workers", n(), "--segment-by", t(), "--metric", t(),
                 *flag("--retrain"), "--", t(), t()],
        lambda: ["batches", "--user", t(), "--limit", n()],
        lambda: ["reindex", *flag("--compact")],
        lambda: ["score", "--out", t(), "--chunk-rows", n(), "--timeout", n(), "--", t(), t()],
        lambda: ["up", draw(st.sampled_from(["--workers", "--flower-port", "--page-port"])),
                 draw(st.sampled_from(["-1", "70000", "99999999999999999999", "x", "1e3", ""]))],
        lambda: ["worker", "--concurrency", draw(st.sampled_from(["0", "-1", "99999999999999999999", "x"]))],
    ]
    return draw(st.sampled_from(shapes))()


@FUZZ
@given(args=command_lines())
def test_any_arguments_get_a_clean_answer(args: list[str], tmp_path_factory: pytest.TempPathFactory) -> None:
    env = {"MODELFLEET_BROKER_URL": UNREACHABLE,
           "MODELFLEET_ARTIFACT_ROOT": str(tmp_path_factory.mktemp("artifacts"))}
    result = invoke(args, env)
    assert_clean(result, args, env)


# Every field of Settings, as its variable; values a typo, a paste or an attacker could leave there.
VARIABLES = [f"MODELFLEET_{name.upper()}" for name in Settings.model_fields]
SETTING_VALUES = [*HOSTILE_TEXT, *HOSTILE_NUMBERS, "true", "false", "[]", '["x."]', "[1,", "{", "null",
                  "/dev/null", "/", "/nonexistent/dir", "redis://127.0.0.1:1/0", "unix:///nonexistent.sock",
                  "sentinel://127.0.0.1:1", "rediss://127.0.0.1:1/0?ssl_cert_reqs=none",
                  "redis://:pw@127.0.0.1:1/0", "http://127.0.0.1:1", "notaurl"]


@FUZZ
@given(values=st.dictionaries(st.sampled_from(VARIABLES),
                              st.one_of(st.sampled_from(SETTING_VALUES), texts), min_size=1, max_size=3),
       args=st.sampled_from([["runs"], ["status", "b"], ["lineage", "m/1"], ["cache", "stats"],
                             ["leaderboard", "b"], ["batches"], ["models"]]))
def test_any_settings_get_a_clean_answer(values: dict[str, str], args: list[str],
                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    # Never an embedded Redis (a broker URL is always set, maybe to something bad), never S3
    # (no network here), never a file of the user's where a directory goes (its own test).
    env = {"MODELFLEET_BROKER_URL": UNREACHABLE,
           "MODELFLEET_ARTIFACT_ROOT": str(tmp_path_factory.mktemp("artifacts")), **values}
    if env["MODELFLEET_ARTIFACT_ROOT"].startswith("s3:"):
        env["MODELFLEET_ARTIFACT_ROOT"] = str(tmp_path_factory.mktemp("artifacts"))
    result = invoke(args, env)
    assert_clean(result, args, env)
    if result.exit_code == 2 and "MODELFLEET_" in result.stderr:
        assert any(name in result.stderr for name in values), result.stderr
