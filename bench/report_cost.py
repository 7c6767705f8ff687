"""What the report's plot data adds to a model's evaluate step, in ms (CPU time, median of runs).

    python -m bench.report_cost

Compares evaluate's artifact as it was (metrics only) with the one that carries the plot data
(confusion matrix or residual sample, top importances): computing it, encoding it and storing it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sklearn.datasets import load_diabetes, load_iris, make_classification
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge

from workers.pipeline.evaluate import plot_data, score
from workers.store import ArtifactStore

CASES: list[tuple[str, str, Callable[[], tuple[Any, Any]], Any]] = [
    ("iris logreg", "classification", lambda: load_iris(return_X_y=True), LogisticRegression(max_iter=500)),
    ("iris forest 100", "classification", lambda: load_iris(return_X_y=True),
     RandomForestClassifier(n_estimators=100, random_state=0)),
    ("diabetes ridge", "regression", lambda: load_diabetes(return_X_y=True), Ridge()),
    ("diabetes forest 100", "regression", lambda: load_diabetes(return_X_y=True),
     RandomForestRegressor(n_estimators=100, random_state=0)),
    ("synthetic 4000x20, 3 classes, forest 50", "classification",
     lambda: make_classification(4000, 20, n_informative=10, n_classes=3, random_state=0),
     RandomForestClassifier(n_estimators=50, random_state=0)),
]


def cpu_ms(step: Callable[[], Any], repeat: int = 30) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        step()
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def measure(store: ArtifactStore, task: str, fitted: Any, X_test: Any, y_test: Any) -> str:
    names = ["accuracy"] if task == "classification" else ["r2", "mae"]
    predictions = fitted.predict(X_test)
    base = {"metrics": score(y_test, predictions, names), "model_digest": "0" * 64,
            "data_digest": "1" * 64, "n_test": len(y_test)}

    def with_plots() -> str:
        return store.put_json({**base, "task": task, "salt": time.time_ns(),
                               "plots": plot_data(fitted, task, y_test, predictions)})

    predict = cpu_ms(lambda: score(y_test, fitted.predict(X_test), names))
    before = cpu_ms(lambda: store.put_json({**base, "salt": time.time_ns()}))
    after = cpu_ms(with_plots)
    size = len(store.get(with_plots())) / 1024
    return (f"predict+metrics {predict:.2f} ms; report artifact {before:.2f} -> {after:.2f} ms "
            f"(+{after - before:.2f} ms), {size:.1f} kB")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(Path(tmp))
        for label, task, data, estimator in CASES:
            X, y = data()
            n = len(y) * 3 // 4
            fitted = estimator.fit(X[:n], y[:n])
            print(f"{label}: {measure(store, task, fitted, X[n:], y[n:])}")


if __name__ == "__main__":
    main()
