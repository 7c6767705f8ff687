"""Take docs/report-batch.png and docs/report-model.png from a real batch's report.

Starts a Redis and two workers, runs six small models (four classifiers, two regressors on
scikit-learn's bundled datasets), writes `modelfleet report --batch`, and points headless
Chromium (Debian's `chromium` package) at the batch page and one model's page.

    apt-get install -y chromium
    .venv/bin/python docs/screenshot_report.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from producer.local import LocalWorkers, RedisServer
from producer.spec import load_batch
from producer.submit import submit
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import Settings

DOCS = Path(__file__).resolve().parent
FOREST, RIDGE = "sklearn.ensemble.RandomForestClassifier", "sklearn.linear_model.Ridge"


def model(name: str, dataset: str, class_path: str, params: dict[str, object], task: str = "classification"
          ) -> dict[str, object]:
    metrics = {"metrics": ["accuracy", "f1_macro"]} if task == "classification" else {
        "metrics": ["mae", "r2"], "primary": "mae"}
    return {"name": name, "task": task, "dataset": {"kind": "sklearn", "name": dataset},
            "estimator": {"class_path": class_path, "params": params}, "evaluation": metrics}


SPEC = {"name": "report-demo", "defaults": {"preprocess": {"seed": 7}, "tags": {"team": "demo"}}, "models": [
    model("iris-forest", "iris", FOREST, {"n_estimators": 100, "random_state": 0}),
    model("iris-logreg", "iris", "sklearn.linear_model.LogisticRegression", {"max_iter": 1000}),
    model("wine-forest", "wine", FOREST, {"n_estimators": 100, "random_state": 0}),
    model("digits-knn", "digits", "sklearn.neighbors.KNeighborsClassifier", {"n_neighbors": 5}),
    model("diabetes-ridge", "diabetes", RIDGE, {"alpha": 1.0}, "regression"),
    model("diabetes-forest", "diabetes", "sklearn.ensemble.RandomForestRegressor",
          {"n_estimators": 100, "random_state": 0}, "regression")]}


def screenshot(page: Path, out: Path, chromium: str, height: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--window-size=1200,{height}", "--hide-scrollbars",
                        f"--screenshot={out}", page.as_uri()], check=True, capture_output=True, timeout=120)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec_path = root / "report-demo.yaml"
        spec_path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
        with RedisServer(root / "redis") as redis:
            settings = Settings(broker_url=redis.url, artifact_root=root / "artifacts")  # type: ignore[arg-type]
            with LocalWorkers(settings, 2, root / "logs"):
                handle = submit(load_batch(spec_path, settings), create_app(settings),
                                Runtime.from_settings(settings))
                handle.wait(timeout=300)
            subprocess.run([sys.executable, "-m", "producer", "report", "--batch", handle.batch_id, "--out",
                            str(root / "report")], env={**os.environ, **settings.to_env()}, check=True)
        pages = root / "report"
        screenshot(pages / "index.html", DOCS / "report-batch.png", chromium, 560)
        screenshot(pages / "models" / "iris-forest-v1.html", DOCS / "report-model.png", chromium, 1500)


if __name__ == "__main__":
    main()
