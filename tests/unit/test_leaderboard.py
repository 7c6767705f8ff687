"""Leaderboard ranking as pure data: sections per task and metric, direction, best-per, top, sort."""

from __future__ import annotations

from typing import Any

from producer.leaderboard import Entry, lower_is_better, sections


def entry(name: str, task: str, metric: str, value: float | None, **over: Any) -> Entry:
    fields: dict[str, Any] = {
        "name": name, "task": task, "metric": metric, "value": value, "status": "promoted",
        "version": 1, "promoted": True, "error": "", "worker": "w", "tags": {}, "metrics": {},
        "compute_seconds": 1.0, "done_seconds": 5.0, "queue_seconds": 4.0}
    return Entry(**{**fields, **over})


def names(found: list[Entry], **kwargs: Any) -> dict[tuple[str, str], list[str]]:
    return {(s.task, s.metric): [e.name for e in s.rows] for s in sections(found, **kwargs)}


def test_each_task_is_ranked_in_its_own_metric_direction_failures_last() -> None:
    found = [entry("c-low", "classification", "f1_macro", 0.5), entry("r-big", "regression", "mae", 9.0),
             entry("c-high", "classification", "f1_macro", 0.9), entry("r-small", "regression", "mae", 1.0),
             entry("c-failed", "classification", "f1_macro", None, status="failed")]
    assert names(found) == {("classification", "f1_macro"): ["c-high", "c-low", "c-failed"],
                            ("regression", "mae"): ["r-small", "r-big"]}
    assert [s.lower_is_better for s in sections(found)] == [False, True]


def test_best_per_tag_keeps_each_values_best_and_top_cuts_each_section() -> None:
    found = [entry(f"m{i}", "regression", "rmse", float(i), tags={"store": f"s{i % 3}"}) for i in range(9)]
    assert names(found, best_per="store") == {("regression", "rmse"): ["m0", "m1", "m2"]}
    assert names(found, top=2) == {("regression", "rmse"): ["m0", "m1"]}
    [section] = sections(found, top=2)
    assert section.total == 9


def test_group_by_orders_by_group_then_rank_and_top_applies_per_group() -> None:
    found = [entry(f"m{i}", "classification", "accuracy", i / 10, tags={"store": f"s{i % 2}"})
             for i in range(6)]
    assert names(found, group_by="store", top=2) == {
        ("classification", "accuracy"): ["m4", "m2", "m5", "m3"]}


def test_sort_by_compute_puts_the_costliest_first() -> None:
    found = [entry("cheap", "regression", "r2", 0.9, compute_seconds=0.1),
             entry("dear", "regression", "r2", 0.1, compute_seconds=7.0)]
    assert names(found, sort="compute") == {("regression", "r2"): ["dear", "cheap"]}


def test_cross_validated_and_spread_metrics_are_lower_is_better_where_they_should_be() -> None:
    assert lower_is_better("mae") and lower_is_better("cv_rmse_mean") and lower_is_better("cv_r2_std")
    assert not lower_is_better("r2") and not lower_is_better("cv_accuracy_mean")


def test_the_run_leaderboard_shows_why_a_registered_model_was_not_promoted() -> None:
    from rich.console import Console

    from producer.cli.common import section_table

    found = [entry("store-1", "regression", "mae", 1.0),
             entry("store-18", "regression", "mae", 2.0, status="registered", promoted=False,
                   reason="gate failed: mape=0.104 > 0.1")]
    console = Console(width=250, record=True)
    console.print(section_table("b", "1 promoted, 1 registered", sections(found)[0], None))
    line = next(x for x in console.export_text().splitlines() if "store-18" in x)
    assert "registered: gate failed: mape=0.104 > 0.1" in line
