"""The `modelfleet` group builds Settings once; a bad MODELFLEET_* value is a user error."""

from __future__ import annotations

from click.testing import CliRunner

from producer.cli import main


def test_a_bad_environment_value_is_a_clean_user_error() -> None:
    result = CliRunner().invoke(main, ["status", "some-batch"], env={"MODELFLEET_LEASE_TTL": "abc"})
    assert result.exit_code == 2
    assert "MODELFLEET_LEASE_TTL" in result.output and "valid number" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
