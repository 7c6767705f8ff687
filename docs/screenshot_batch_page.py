"""Take docs/batch-page.png: the batch page `modelfleet up` serves, during a real batch.

Starts a Redis, K workers, Flower and the batch page (the same parts `up` starts, the
same basic auth), submits 9 models and one that fails at train (LinearSVC with a
penalty and loss it refuses). Once a few models have deployed, the broken one has
failed and some run, it freezes the workers (SIGSTOP, so the picture holds still while
Chromium starts) and points headless Chromium (Debian's `chromium`) at the batch's page.

    apt-get install -y chromium
    .venv/bin/python docs/screenshot_batch_page.py [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import yaml

from producer.cli.page import BatchPage
from producer.local import LocalFlower, LocalWorkers, RedisServer, wait_for
from producer.spec import load_batch
from producer.submit import submit
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import Settings

DOCS = Path(__file__).resolve().parent
SPEC = {
    "name": "quickstart", "pack": 1,
    "defaults": {"task": "classification",
                 "evaluation": {"metrics": ["accuracy", "f1_macro"], "primary": "accuracy"}},
    "matrix": {"name": "{dataset}-{estimator}", "axes": {
        "dataset": {d: {"kind": "sklearn", "name": n}
                    for d, n in (("iris", "iris"), ("wine", "wine"), ("cancer", "breast_cancer"))},
        "estimator": {
            "forest": {"class_path": "sklearn.ensemble.RandomForestClassifier",
                       "params": {"n_estimators": 800, "random_state": 0}},
            "logreg": {"class_path": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 1000}},
            "knn": {"class_path": "sklearn.neighbors.KNeighborsClassifier"}}}},
    "models": [{"name": "iris-svc-l1-hinge", "dataset": {"kind": "sklearn", "name": "iris"},
                "estimator": {"class_path": "sklearn.svm.LinearSVC",
                              "params": {"penalty": "l1", "loss": "hinge"}}}],
}


def screenshot(url: str, out: Path, chromium: str) -> None:
    """As docs/screenshot_flower.py takes Flower's, less --virtual-time-budget: the page has
    no script to wait for, and with a budget headless Chromium follows its meta refresh
    for ever. The credentials ride in the URL (loopback only)."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--window-size=1400,900", "--hide-scrollbars",
                        f"--screenshot={out}", url], check=True, capture_output=True, timeout=120)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DOCS / "batch-page.png")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH: apt-get install -y chromium")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec_path = root / "quickstart.yaml"
        spec_path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
        with RedisServer(root / "redis") as redis:
            settings = Settings(broker_url=redis.url, artifact_root=root / "artifacts")  # type: ignore[arg-type]
            runtime = Runtime.from_settings(settings)
            with LocalFlower(settings, root / "logs") as flower, \
                    LocalWorkers(settings, args.workers, root / "logs") as workers, \
                    BatchPage(runtime, flower.url, flower.user, flower.password) as page:
                handle = submit(load_batch(spec_path, settings), create_app(settings), runtime)

                def mid_batch() -> bool:
                    counts = handle.status().counts
                    return (counts.get("deployed", 0) >= 3 and counts.get("failed", 0) >= 1
                            and counts.get("running", 0) >= 1)

                wait_for(mid_batch, 600, "a few models to deploy", interval=0.1)
                for proc in workers.procs:
                    os.killpg(proc.pid, signal.SIGSTOP)
                try:
                    print(f"batch {handle.batch_id} at the time: {handle.status().counts}")
                    url = page.url.replace("http://", f"http://{flower.user}:{flower.password}@", 1)
                    screenshot(f"{url}/batch/{handle.batch_id}?top=3", args.out, chromium)
                finally:
                    for proc in workers.procs:
                        os.killpg(proc.pid, signal.SIGCONT)


if __name__ == "__main__":
    main()
