"""`modelfleet report` for one model and for a batch, after a real batch on real workers:
the files exist, the PNGs are real images of a sensible size, every link resolves, and the
numbers on the pages are the run records' metrics."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import load, run_batch
from tests.support.processes import run_cli
from workers.runtime import Runtime
from workers.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Page(HTMLParser):
    """The links, images and `data-value` cells of a page."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.values: list[tuple[str | None, str | None, float]] = []  # (model row, metric, value)
        self.cv: dict[str, float] = {}  # "metric mean" / "metric std" -> value
        self._row: str | None = None
        self.feed(path.read_text())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr":
            self._row = a.get("data-model")
        if tag == "a" and a.get("href"):
            self.links.append(str(a["href"]))
        if tag == "img":
            self.images.append(str(a["src"]))
        if tag == "td" and "data-value" in a:
            self.values.append((self._row, a.get("data-metric"), float(str(a["data-value"]))))
            if a.get("data-cv"):
                self.cv[str(a["data-cv"])] = float(str(a["data-value"]))


def spec(uniq: str) -> dict[str, Any]:
    seed = int(uniq, 16)
    return {"name": f"report-{uniq}", "models": [
        {"name": f"iris-forest-{uniq}", "task": "classification",
         "dataset": {"kind": "sklearn", "name": "iris"},
         "estimator": {"class_path": "sklearn.ensemble.RandomForestClassifier",
                       "params": {"n_estimators": 20, "random_state": seed % 1000}},
         "evaluation": {"metrics": ["accuracy", "f1_macro"]}},
        {"name": f"diabetes-ridge-{uniq}", "task": "regression",
         "dataset": {"kind": "sklearn", "name": "diabetes"},
         "estimator": {"class_path": "sklearn.linear_model.Ridge", "params": {"alpha": 1 + seed % 7}},
         "evaluation": {"metrics": ["mae", "r2"], "primary": "mae"}},
        {"name": f"wine-searched-{uniq}", "task": "classification",
         "dataset": {"kind": "sklearn", "name": "wine"},
         "estimator": {"class_path": "sklearn.pipeline.Pipeline", "params": {"steps": [
             ["scale", {"class_path": "sklearn.preprocessing.StandardScaler"}],
             ["model", {"class_path": "sklearn.linear_model.LogisticRegression",
                        "params": {"max_iter": 500}}]]}},
         "search": {"space": {"model__C": [0.1, 1.0 + seed % 5]}, "cv": 3},
         "evaluation": {"metrics": ["accuracy"]}}]}


def evaluated_metrics(runtime: Runtime, batch_id: str) -> dict[str, dict[str, float]]:
    return {r["model"]: r["metrics"] for r in runtime.tracker.runs(batch_id=batch_id)
            if r["stage"] == "evaluate"}


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG", image.format
        assert 300 <= image.width <= 2000 and 200 <= image.height <= 2000, image.size


def assert_model_page(page_path: Path, expected: dict[str, float]) -> Page:
    page = Page(page_path)
    for target in page.links + page.images:
        assert (page_path.parent / target).is_file(), f"{page_path.name} links to missing {target}"
    for src in page.images:
        assert_png(page_path.parent / src)
    shown = {metric: value for _, metric, value in page.values if metric}
    assert shown == expected
    return page


def test_report_for_one_model_and_for_a_batch(tmp_path: Path, settings: Settings, workers: Any, app: Any,
                                              runtime: Runtime, uniq: str) -> None:
    handle, status = run_batch(load(tmp_path, spec(uniq), settings), app, runtime)
    assert status.counts == {"promoted": 3}
    metrics = evaluated_metrics(runtime, handle.batch_id)

    one = run_cli(["report", f"iris-forest-{uniq}@production", "--out", str(tmp_path / "one")], settings,
                  tmp_path)
    assert one.returncode == 0, one.stderr
    page = assert_model_page(tmp_path / "one" / f"iris-forest-{uniq}-v1.html", metrics[f"iris-forest-{uniq}"])
    assert {Path(i).name for i in page.images} == {"confusion.png", "importances.png"}
    assert "report.json" in {Path(link).name for link in page.links}

    # --jobs 2: the pages are drawn in a process pool, as for a batch of 16 models or more.
    batch = run_cli(["report", "--batch", handle.batch_id, "--out", str(tmp_path / "batch"), "--jobs", "2"],
                    settings, tmp_path)
    assert batch.returncode == 0, batch.stderr
    index = Page(tmp_path / "batch" / "index.html")
    assert sorted(index.links) == sorted(f"models/{n}-v1.html" for n in metrics)
    for link in index.links:
        model = re.sub(r"-v1\.html$", "", Path(link).name)
        sub = assert_model_page(tmp_path / "batch" / link, metrics[model])
        assert "../index.html" in sub.links
    on_index = {(row, metric): value for row, metric, value in index.values if metric}
    assert on_index == {(m, k): v for m, values in metrics.items() for k, v in values.items()}
    regression = Page(tmp_path / "batch" / "models" / f"diabetes-ridge-{uniq}-v1.html")
    assert {Path(i).name for i in regression.images} == {"residuals.png", "importances.png"}

    # A searched pipeline: its CV spread is the best trial's, importances are the final step's.
    searched = Page(tmp_path / "batch" / "models" / f"wine-searched-{uniq}-v1.html")
    train = next(r for r in runtime.tracker.runs(batch_id=handle.batch_id, model=f"wine-searched-{uniq}")
                 if r["stage"] == "train")
    best = train["result"]["search"]["trials"][0]
    assert searched.cv == {"accuracy mean": best["mean"], "accuracy std": best["std"]}
    assert {Path(i).name for i in searched.images} == {"confusion.png", "importances.png"}

    bad = run_cli(["report", f"nobody-{uniq}/1"], settings, tmp_path)
    assert bad.returncode == 2 and "nobody" in bad.stderr
