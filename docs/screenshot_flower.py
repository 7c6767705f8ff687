"""Take docs/flower-dashboard.png (and docs/flower-tasks.png) during a real batch.

Starts an embedded Redis, K workers and Flower (basic auth, a throwaway password),
submits one RandomForestRegressor per Walmart store (45 models, 180 tasks), and
while the batch runs points headless Chromium (Debian's `chromium` package) at
Flower's dashboard and tasks page. Everything it starts is stopped at the end.

    apt-get install -y chromium
    .venv/bin/python docs/screenshot_flower.py [--workers 2] [--data-root ../shared/data]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from producer.local import LocalFlower, LocalWorkers, RedisServer, wait_for
from producer.spec import load_batch
from producer.submit import submit
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import Settings

DOCS = Path(__file__).resolve().parent
SPEC = {"name": "flower-screenshot", "models": [{
    "name": "store", "task": "regression",
    "dataset": {"kind": "csv", "path": "walmart_weekly_sales.csv", "target": "Weekly_Sales",
                "segment_by": "Store"},
    "estimator": {"class_path": "sklearn.ensemble.RandomForestRegressor",
                  "params": {"n_estimators": 150, "random_state": 0}},
    "evaluation": {"metrics": ["r2", "mae"], "primary": "mae"}}]}


def screenshot(url: str, out: Path, chromium: str) -> None:
    """One headless Chromium screenshot; the credentials ride in the URL (loopback only)."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                        "--window-size=1400,900", "--hide-scrollbars",
                        # Let the page's own API calls (tables, counters) finish first.
                        "--virtual-time-budget=8000", f"--screenshot={out}", url],
                       check=True, capture_output=True, timeout=120)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-root", type=Path, default=DOCS.parents[1] / "shared" / "data")
    parser.add_argument("--out-dir", type=Path, default=DOCS)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH: apt-get install -y chromium")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec_path = root / "walmart.yaml"
        spec_path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
        with RedisServer(root / "redis") as redis:
            settings = Settings(broker_url=redis.url,  # type: ignore[arg-type]
                                artifact_root=root / "artifacts", data_root=args.data_root.resolve())
            with LocalFlower(settings, root / "logs") as flower, \
                    LocalWorkers(settings, args.workers, root / "logs"):
                app = create_app(settings)
                handle = submit(load_batch(spec_path, settings), app, Runtime.from_settings(settings))
                # Mid-batch: some models through every stage, most still queued.
                wait_for(lambda: handle.status().stages_done["deploy"] >= 4, 600,
                         "the first models to deploy", interval=0.5)
                base = f"http://{flower.user}:{flower.password}@127.0.0.1:{flower.port}"
                screenshot(f"{base}/", args.out_dir / "flower-dashboard.png", chromium)
                screenshot(f"{base}/tasks", args.out_dir / "flower-tasks.png", chromium)
                print(f"batch {handle.batch_id} at the time: {handle.status().counts}")
                app.control.purge()  # the rest of the batch is not needed


if __name__ == "__main__":
    main()
