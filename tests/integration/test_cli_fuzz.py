"""The commands against a real Redis holding a real batch: user text is looked up and printed.

A module-scoped Redis and artifact root of our own, one real batch of two iris models (tags
with markup in them) run by one real worker that is stopped before the tests: what follows
only reads, promotes and rolls back, so no worker is needed. Then issue 19's cases that need
data (2, 3, 9), and a hypothesis fuzz of the commands with names that exist, names that nearly
do and hostile text: every answer is exit 0, 1 or 2 with a one-line message, no traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_iris

from producer.local import LocalWorkers, RedisServer
from tests.conftest import EXAMPLE_DATA, load, run_batch
from tests.support.cli_answers import assert_clean, invoke, numbers, texts
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import Settings

pytestmark = pytest.mark.integration

TREE = "sklearn.tree.DecisionTreeClassifier"
MARKUP_TAG = "[/red]x"  # rich raised MarkupError on it (issue 19, case 3)


@dataclass
class Fleet:
    env: dict[str, str]
    batch_id: str
    models: list[str]
    iris_csv: Path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("cli-fuzz")
    with RedisServer(base / "redis") as server:
        s = Settings(broker_url=server.url, artifact_root=base / "artifacts",  # type: ignore[arg-type]
                     data_root=EXAMPLE_DATA, lease_ttl=3.0)
        spec = {"name": "fuzz", "models": [
            {"name": f"fz-{depth}", "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
             "estimator": {"class_path": TREE, "params": {"max_depth": depth, "random_state": 0}},
             "tags": {"region": region, "[k]": ":fire:"}}
            for depth, region in ((1, MARKUP_TAG), (3, "[bold]eu"))]}
        app = create_app(s)
        try:
            with LocalWorkers(s, 1, base / "logs"):
                handle, status = run_batch(load(base, spec, s), app, Runtime.from_settings(s))
        finally:
            app.close()
        assert sum(status.counts.values()) == 2 and not status.counts.get("failed"), status.counts
        iris = load_iris(as_frame=True).frame.drop(columns="target")
        iris_csv = base / "iris.csv"
        iris.head(10).to_csv(iris_csv, index=False)
        yield Fleet(s.to_env(), handle.batch_id, ["fz-1", "fz-3"], iris_csv)


def ok(fleet: Fleet, args: list[str], code: int = 0) -> str:
    result = invoke(args, fleet.env)
    assert_clean(result, args)
    assert result.exit_code == code, result.output
    return result.stdout if code == 0 else result.stderr


@pytest.mark.parametrize("ref", ["[red]x[/red]", "; rm -rf /", "fz-1/one", "fz-1/", "fz-1/\u0663",
                                 "fz-1/" + "9" * 5000])
@pytest.mark.parametrize("command", [["lineage"], ["report", "--out", "OUT"], ["show"], ["compare", "fz-1"],
                                     ["predict", "--", "IRIS"], ["models", "versions"]])
def test_a_ref_that_is_no_version_is_exit_2_in_every_command(fleet: Fleet, tmp_path: Path, ref: str,
                                                             command: list[str]) -> None:
    # Issue 19, case 2: lineage raised ValueError from int() where report, compare and predict
    # caught it. Now the registry's resolve refuses it like any unknown ref, for every command.
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    args = [*[a for a in args if a != "IRIS"], ref, *([str(fleet.iris_csv)] if "IRIS" in args else [])]
    line = ok(fleet, args, code=2)
    assert line.startswith("error:")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_non_numeric_version_says_what_a_version_is(fleet: Fleet) -> None:
    assert "a version is a whole number, as in NAME/2" in ok(fleet, ["lineage", "[red]x[/red]"], code=2)
    assert "'[red]x[/red]'" in ok(fleet, ["lineage", "[red]x[/red]"], code=2)  # as typed, not as markup


@pytest.mark.parametrize("option", ["--group-by", "--best-per"])
@pytest.mark.parametrize("tag", ["[/red]x", "region", "[k]"])
def test_leaderboard_prints_tags_and_their_values_as_themselves(fleet: Fleet, option: str, tag: str) -> None:
    # Issue 19, case 3: `--group-by '[/red]x'` raised rich.errors.MarkupError.
    out = ok(fleet, ["leaderboard", fleet.batch_id, option, tag])
    assert tag in out and "fz-" in out  # the column is named by the tag, as typed
    if tag == "region":
        assert MARKUP_TAG in out and "[bold]eu" in out
    if tag == "[k]":
        assert ":fire:" in out  # no emoji either


def test_tables_print_user_text_as_itself(fleet: Fleet) -> None:
    out = ok(fleet, ["models", "--group-by", "region"])
    assert "region=[/red]x" in out and "region=[bold]eu" in out and "[k]=:fire:" in out
    out = ok(fleet, ["runs", "--tag", f"region={MARKUP_TAG}", "--limit", "4"])
    assert "fz-1" in out and "fz-3" not in out
    out = ok(fleet, ["lineage", "fz-1/1"])
    assert MARKUP_TAG in out and ":fire:" in out


def test_bounded_numbers_at_their_bounds_work(fleet: Fleet) -> None:
    # Issue 19, case 4: the largest values the options take reach Redis without an error.
    assert json.loads(ok(fleet, ["runs", "--limit", "1000000", "--offset", "1000000000", "--json"])) == []
    assert json.loads(ok(fleet, ["runs", "--limit", "1000000", "--page", "1000000000", "--json"])) == []
    assert len(json.loads(ok(fleet, ["batches", "--limit", "1000000", "--json"]))) == 1
    assert len(json.loads(ok(fleet, ["batches", "--limit", "1", "--json"]))) == 1


def test_report_jobs_and_top_at_their_bounds_draw_every_page(fleet: Fleet, tmp_path: Path) -> None:
    # Issue 19, case 9: --jobs (and --top) reached the process pool unbounded; now at most 256
    # (tests/unit/test_cli_answers.py), and never more processes than pages (pool_size).
    ok(fleet, ["report", "--batch", fleet.batch_id, "--jobs", "256", "--top", "1000000000",
               "--out", str(tmp_path / "r")])
    assert len(list((tmp_path / "r" / "models").glob("*.html"))) == 2


FUZZ = settings(max_examples=200, deadline=timedelta(seconds=30), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@st.composite
def command_lines(draw: st.DrawFn, fleet: Fleet, out: Path) -> list[str]:
    """Commands with names that exist, names close to them and hostile text."""
    real = [fleet.batch_id, *fleet.models, "fz-1/1", "fz-3/1", "fz-1@production", "fz-3@production",
            "region", f"region={MARKUP_TAG}", "[k]=:fire:", "accuracy", "production", "preprocess"]
    name = st.one_of(st.sampled_from(real), texts, st.sampled_from(real).map(lambda r: r + draw(texts)))
    t, n = (lambda: draw(name)), (lambda: draw(numbers))
    shapes = [
        lambda: ["status", t(), *draw(st.sampled_from([[], ["--json"]]))],
        lambda: ["batches", "--limit", n(), *draw(st.sampled_from([[], ["--user", t()]]))],
        lambda: ["runs", "--batch", t(), "--model", t(), "--stage", t(), "--tag", t(), "--limit", n(),
                 "--offset", n()],
        lambda: ["runs", "--model", t(), "--page", n(), "--limit", n()],
        lambda: ["show", t()],
        lambda: ["compare", t(), t(), *draw(st.sampled_from([[], ["--tag", t()]]))],
        lambda: ["leaderboard", t(), "--metric", t(), "--sort", draw(st.sampled_from(["metric", "name"])),
                 "--top", n(), draw(st.sampled_from(["--best-per", "--group-by"])), t(),
                 "--format", draw(st.sampled_from(["table", "csv", "json"]))],
        lambda: ["leaderboard", fleet.batch_id, "--group-by", t(), "--best-per", t(), "--tag", t()],
        lambda: ["lineage", t(), *draw(st.sampled_from([[], ["--json"]]))],
        lambda: ["models", "--tag", t(), "--group-by", t()],
        lambda: ["models", "versions", t()],
        lambda: ["promote", "--alias", t(), "--", t(), n()],
        lambda: ["rollback", "--alias", t(), "--", t()],
        lambda: ["rollback", "--alias", t(), "--batch", t()],
        lambda: ["report", "--out", str(out / "report"), "--", t()],
        lambda: ["report", "--batch", t(), "--top", n(), "--jobs", n(), "--out", str(out / "batch")],
        lambda: ["cancel", t()],
        lambda: ["retry", "--no-wait", "--", t()],
        lambda: ["predict", "--segment-by", t(), *draw(st.sampled_from([[], ["--fallback", "latest"]])), "--",
                 t(), str(fleet.iris_csv)],
        lambda: ["cache", "stats", "--json"],
    ]
    return draw(st.sampled_from(shapes))()


@FUZZ
@given(data=st.data())
def test_any_arguments_on_real_data_get_a_clean_answer(fleet: Fleet, data: st.DataObject,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    args = data.draw(command_lines(fleet, tmp_path_factory.mktemp("out")))
    result = invoke(args, fleet.env)
    assert_clean(result, args)
