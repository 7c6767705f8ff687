"""`leaderboard` and `runs` paging on a 1,000-model batch written through the real storage
classes into the session's real Redis (no workers needed to read)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from bench.synthetic_index import STORES, write_batch
from tests.support.processes import run_cli
from workers.runtime import Runtime
from workers.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(runtime: Runtime) -> tuple[str, dict[str, dict[str, Any]]]:
    batch_id = f"fleet-{id(runtime):x}"
    return batch_id, write_batch(runtime, batch_id, 1000)


def cli_json(args: list[str], settings: Settings, tmp_path: Path) -> Any:
    result = run_cli(args, settings, tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_leaderboard_ranks_each_task_in_its_direction_with_compute_time(
        fleet: tuple[str, dict[str, dict[str, Any]]], settings: Settings, tmp_path: Path) -> None:
    batch_id, models = fleet
    board = cli_json(["leaderboard", batch_id, "--format", "json"], settings, tmp_path)

    by_task = {s["task"]: s for s in board["sections"]}
    assert set(by_task) == {"classification", "regression"}
    accuracy, mae = by_task["classification"], by_task["regression"]
    assert (accuracy["metric"], accuracy["lower_is_better"]) == ("accuracy", False)
    assert (mae["metric"], mae["lower_is_better"]) == ("mae", True)
    values = [r["value"] for r in accuracy["rows"]]
    assert len(values) == 500 and values == sorted(values, reverse=True)
    assert [r["value"] for r in mae["rows"]] == sorted(r["value"] for r in mae["rows"])
    for row in accuracy["rows"][:20] + mae["rows"][:20]:
        assert row["value"] == models[row["name"]]["metrics"][row["metric"]]
        assert row["compute_seconds"] == pytest.approx(models[row["name"]]["compute"])
        assert row["queue_seconds"] == pytest.approx(row["done_seconds"] - row["compute_seconds"])


def test_a_batch_whose_states_lack_their_stages_times_takes_compute_from_its_runs(
        runtime: Runtime, settings: Settings, tmp_path: Path) -> None:
    batch_id = f"older-{id(runtime):x}"
    models = write_batch(runtime, batch_id, 20, seed=1, took=False)  # as workers before `took_` wrote
    board = cli_json(["leaderboard", batch_id, "--json"], settings, tmp_path)
    rows = [row for section in board["sections"] for row in section["rows"]]
    assert len(rows) == 20
    assert all(row["compute_seconds"] == pytest.approx(models[row["name"]]["compute"]) for row in rows)


@pytest.mark.slow
def test_best_per_top_group_by_and_csv(fleet: tuple[str, dict[str, dict[str, Any]]], settings: Settings,
                                       tmp_path: Path) -> None:
    batch_id, models = fleet
    best = cli_json(["leaderboard", batch_id, "--best-per", "store", "--json"], settings, tmp_path)
    for section in best["sections"]:
        stores = [r["tags"]["store"] for r in section["rows"]]
        assert len(stores) == STORES == len(set(stores)) and section["total"] == 500
        mine = [m for m in models.values() if m["spec"]["task"] == section["task"]
                and m["spec"]["tags"]["store"] == "s07"]
        pick = min if section["lower_is_better"] else max
        best_s07 = pick(m["metrics"][section["metric"]] for m in mine)
        assert next(r["value"] for r in section["rows"] if r["tags"]["store"] == "s07") == best_s07

    top = cli_json(["leaderboard", batch_id, "--top", "3", "--metric", "mae", "--json"], settings, tmp_path)
    assert [len(s["rows"]) for s in top["sections"]] == [3, 3]

    grouped = run_cli(["leaderboard", batch_id, "--group-by", "store", "--top", "1"], settings, tmp_path)
    assert grouped.returncode == 0, grouped.stderr
    # One table per task, not one per store.
    assert grouped.stdout.count("by accuracy") == 1 and grouped.stdout.count("by mae") == 1

    table = run_cli(["leaderboard", batch_id, "--format", "csv", "--tag", "store=s03"], settings, tmp_path)
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert {r["name"] for r in rows} == {n for n, m in models.items() if m["spec"]["tags"]["store"] == "s03"}
    assert all(float(r["compute_seconds"]) == pytest.approx(models[r["name"]]["compute"], abs=1e-4)
               for r in rows)

    bad = run_cli(["leaderboard", batch_id, "--metric", "nope"], settings, tmp_path)
    assert bad.returncode == 2 and "nope" in bad.stderr


@pytest.mark.slow
def test_runs_says_n_of_m_and_pages(fleet: tuple[str, dict[str, dict[str, Any]]], settings: Settings,
                                    tmp_path: Path) -> None:
    batch_id, _ = fleet
    first = run_cli(["runs", "--batch", batch_id, "--limit", "50"], settings, tmp_path)
    assert "50 of 4000 run(s)" in first.stdout and "--page 2" in first.stderr
    page1 = cli_json(["runs", "--batch", batch_id, "--limit", "50", "--json"], settings, tmp_path)
    page2 = cli_json(["runs", "--batch", batch_id, "--limit", "50", "--page", "2", "--json"], settings,
                     tmp_path)
    by_offset = cli_json(["runs", "--batch", batch_id, "--limit", "50", "--offset", "50", "--json"],
                         settings, tmp_path)
    assert page2 == by_offset and len(page2) == 50
    assert not {r["id"] for r in page1} & {r["id"] for r in page2}
    assert max(r["started"] for r in page2) <= min(r["started"] for r in page1)
    deploys = run_cli(["runs", "--batch", batch_id, "--stage", "deploy", "--limit", "10"], settings,
                      tmp_path)
    assert "10 of 1000 run(s)" in deploys.stdout
