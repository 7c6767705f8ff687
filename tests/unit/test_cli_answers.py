"""Issue 19's command-line cases that need no service: bad numbers, bad MODELFLEET_* values and
an unreachable broker each get exit 1 or 2 and one line naming the option or the variable.

Every command here is pointed at a broker nobody listens on, so none can start an embedded
Redis; a number is refused before any connection is tried.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.cli.report import PARALLEL_FROM, pool_size
from tests.support.cli_answers import UNREACHABLE, assert_clean, invoke

ENV = {"MODELFLEET_BROKER_URL": UNREACHABLE}
HUGE = "99999999999999999999"


def refused(args: list[str], names: str, env: dict[str, str] | None = None, code: int = 2) -> str:
    """Run; assert a clean exit `code` whose error line names `names`; the error line."""
    result = invoke(args, {**ENV, **(env or {})})
    assert_clean(result, args, env)
    assert result.exit_code == code, result.output
    line = next(line for line in result.stderr.splitlines() if line.lower().startswith("error:"))
    assert names in line, line
    return line


@pytest.mark.parametrize("args", [
    ["runs", "--limit", HUGE], ["runs", "--offset", HUGE], ["runs", "--page", HUGE],
    ["runs", "--limit", "-5"], ["runs", "--offset", "-1"], ["runs", "--page", "0"],
    ["batches", "--limit", HUGE], ["batches", "--limit", "-5"], ["batches", "--limit", "0"],
    ["leaderboard", "b", "--top", HUGE], ["leaderboard", "b", "--top", "-1"],
    ["report", "--batch", "b", "--top", HUGE], ["report", "--batch", "b", "--jobs", HUGE],
    ["report", "--batch", "b", "--jobs", "1e20"], ["report", "--batch", "b", "--jobs", "0"],
    ["promote", "--alias", "a", "m", HUGE], ["promote", "--alias", "a", "--", "m", "-1"],
    ["run", "spec.yaml", "--workers", "0"], ["run", "spec.yaml", "--workers", HUGE],
    ["run", "spec.yaml", "--timeout", "nan"], ["run", "spec.yaml", "--timeout", "-1"],
    ["submit", "spec.yaml", "--timeout", "inf"], ["retry", "b", "--workers", "0"],
    ["retry", "b", "--timeout", "1e999"], ["up", "--workers", HUGE], ["up", "--flower-port", "70000"],
    ["up", "--page-port", "-1"], ["worker", "--concurrency", HUGE], ["worker", "--concurrency", "0"],
    ["score", "m/1", "in.csv", "--out", "o", "--chunk-rows", HUGE],
    ["score", "m/1", "in.csv", "--out", "o", "--workers", "-1"],
    ["score", "m/1", "in.csv", "--out", "o", "--timeout", "nan"],
    ["evaluate", "m@production", "new.csv", "--tolerance", "nan"],
    ["evaluate", "m@production", "new.csv", "--tolerance", "inf"],
    ["evaluate", "m@production", "new.csv", "--workers", HUGE],
])
def test_every_numeric_option_is_bounded_before_anything_runs(args: list[str]) -> None:
    # The option's name is in the error line (click's usage error), and nothing reached Redis
    # (nobody listens on the broker: a connection would be exit 1).
    refused(args, args[-2] if args[-2].startswith("--") else "VERSION")


def test_report_starts_no_more_processes_than_pages() -> None:
    assert pool_size(256, 2) == 2 and pool_size(256, 0) == 1 and pool_size(3, 100) == 3
    assert pool_size(None, PARALLEL_FROM - 1) == 1 and 1 <= pool_size(None, 1000) <= 8


@pytest.mark.parametrize("age", ["-1d", "-5", "nan", "inf", "1e400d"])
def test_cache_prune_refuses_a_negative_or_endless_age(age: str) -> None:
    # A negative age would have dropped every cache entry.
    refused(["cache", "prune", "--older-than", age], "--older-than")


@pytest.mark.parametrize(("value", "says"), [
    ("notaurl", "no scheme"), ("", "empty"), ("   ", "empty"), ("memory://", "memory://"),
    ("redis://h:99999/0", "Port out of range"), ("redis://h:port/0", "Port could not be cast"),
    ("redis://h:6379/abc", "database 'abc'"), ("redis://[::1", "Invalid IPv6 URL"),
    ("rediss://h:6379/0?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
    ("sentinel://h:26379;redis://h2:6379", "sentinel://"),
])
@pytest.mark.parametrize("command", [["status", "b"], ["runs"], ["lineage", "m/1"], ["cache", "stats"]])
def test_a_bad_broker_url_is_refused_at_start_naming_the_variable(value: str, says: str,
                                                                   command: list[str]) -> None:
    line = refused(command, "MODELFLEET_BROKER_URL", {"MODELFLEET_BROKER_URL": value,
                                                      "MODELFLEET_SENTINEL_MASTER": "mymaster"})
    assert says in line


def test_a_bad_result_backend_is_refused_naming_it() -> None:
    refused(["runs"], "MODELFLEET_RESULT_BACKEND", {"MODELFLEET_RESULT_BACKEND": "notaurl"})


def test_a_password_in_a_refused_url_is_not_shown() -> None:
    line = refused(["runs"], "MODELFLEET_BROKER_URL", {"MODELFLEET_BROKER_URL": "redis://:s3cret@h:x/0"})
    assert "s3cret" not in line


@pytest.mark.parametrize("variable", ["MODELFLEET_ARTIFACT_ROOT", "MODELFLEET_LOCAL_REDIS_DIR",
                                      "MODELFLEET_DATA_ROOT"])
@pytest.mark.parametrize("command", [["report", "m/1"], ["predict", "m/1", "in.csv"], ["runs"]])
def test_a_file_where_a_directory_goes_is_refused_naming_the_variable(
        tmp_path: Path, variable: str, command: list[str]) -> None:
    a_file = tmp_path / "afile"
    a_file.write_text("the user's data\n")
    line = refused(command, variable, {variable: str(a_file)})
    assert "not a directory" in line
    assert a_file.read_text() == "the user's data\n"


@pytest.mark.parametrize(("value", "says"), [("notjson", "cannot parse"), ("[1,", "cannot parse"),
                                             ('{"a": 1}', "valid list")])
def test_allowed_estimator_prefixes_that_are_not_a_json_list_are_refused(value: str, says: str) -> None:
    line = refused(["runs"], "MODELFLEET_ALLOWED_ESTIMATOR_PREFIXES",
                   {"MODELFLEET_ALLOWED_ESTIMATOR_PREFIXES": value})
    assert says in line


@pytest.mark.parametrize(("variable", "value"), [
    ("MODELFLEET_BROKER_CONNECT_TIMEOUT", "-1"), ("MODELFLEET_BROKER_CONNECT_TIMEOUT", "nan"),
    ("MODELFLEET_LEASE_TTL", "inf"), ("MODELFLEET_LEASE_TTL", "0"), ("MODELFLEET_VISIBILITY_TIMEOUT", HUGE),
    ("MODELFLEET_WORKER_CONCURRENCY", "0"), ("MODELFLEET_PAGE_PORT", "70000"),
    ("MODELFLEET_MAX_MODELS_PER_BATCH", "-1"), ("MODELFLEET_FAILOVER_WAIT", "-1"),
    ("MODELFLEET_STAGE_TIME_LIMIT", "0"), ("MODELFLEET_JOURNAL_FLUSH_INTERVAL", "1e999"),
])
def test_an_out_of_range_number_setting_is_refused_at_start(variable: str, value: str) -> None:
    refused(["runs"], variable, {variable: value})


def test_an_unreachable_broker_is_exit_1_naming_the_variable() -> None:
    line = refused(["runs"], "MODELFLEET_BROKER_URL", code=1)
    assert "cannot reach Redis" in line and "127.0.0.1:1" in line


def test_an_unreachable_sentinel_is_one_line_without_client_reprs() -> None:
    line = refused(["runs"], "MODELFLEET_BROKER_URL", {"MODELFLEET_BROKER_URL": "sentinel://127.0.0.1:1",
                                                       "MODELFLEET_SENTINEL_MASTER": "mymaster"}, code=1)
    assert "mymaster" in line and "<redis" not in line


def test_a_bad_s3_endpoint_is_refused_naming_the_variable() -> None:
    refused(["runs"], "MODELFLEET_S3_ENDPOINT_URL", {"MODELFLEET_S3_ENDPOINT_URL": "notaurl"})


@pytest.mark.parametrize("command", [
    ["predict", "m@production"], ["predict", "m@production", "--segment-by", "a"],
    ["score", "m/1", "--out", "o"], ["evaluate", "m@production"]])
@pytest.mark.parametrize("name", ["header.csv", "header.parquet"])
def test_a_header_only_input_is_refused_as_having_no_rows(tmp_path: Path, command: list[str],
                                                          name: str) -> None:
    # Issue 19, case 9: scikit-learn's "0 samples" error; now the file is named before any
    # connection (nobody listens on the broker: that would be exit 1).
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_text("a,b\n")
    else:
        import pandas as pd

        pd.DataFrame({"a": [], "b": []}).to_parquet(path)
    line = refused([*command[:2], str(path), *command[2:]], str(path))
    assert line.endswith(f"{path} has no rows"), line
