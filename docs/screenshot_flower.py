"""Take docs/flower-dashboard.png, flower-tasks.png and flower-search.png during a real batch.

Starts an embedded Redis, K workers and Flower (basic auth, a throwaway password),
submits one RandomForestRegressor per Walmart store (45 models, 180 tasks), and
while the batch runs points headless Chromium (Debian's `chromium` package) at
Flower's dashboard and tasks page, then searches one store's four tasks by its
name. Everything it starts is stopped at the end.

    apt-get install -y chromium
    .venv/bin/python docs/screenshot_flower.py [--workers 2] [--data-root examples/data]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from producer.local import LocalFlower, LocalWorkers, RedisServer, free_port, wait_for
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


def search_screenshot(url: str, auth: str, query: str, rows: int, out: Path, chromium: str) -> None:
    """The tasks page with `query` typed into its search box, once it lists `rows` tasks.

    Flower takes no free-text search from the URL, so this drives headless Chromium
    over its DevTools protocol (with tornado's websocket client, which Flower ships).
    """
    from tornado.ioloop import IOLoop
    from tornado.websocket import websocket_connect

    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                 "--disable-background-networking", "--disable-component-update",
                                 "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,900",
                                 "--hide-scrollbars", f"--remote-debugging-port={port}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            pages: list[dict[str, str]] = []

            def page_listed() -> bool:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as resp:
                        pages[:] = [t for t in json.load(resp) if t["type"] == "page"]
                except OSError:
                    return False
                return bool(pages)

            wait_for(page_listed, 60, "headless Chromium's DevTools endpoint", interval=0.2)

            async def drive() -> bytes:
                ws = await websocket_connect(pages[0]["webSocketDebuggerUrl"], max_message_size=64 << 20)
                ids = iter(range(1, 10**6))

                async def call(method: str, **params: object) -> dict[str, object]:
                    msg_id = next(ids)
                    ws.write_message(json.dumps({"id": msg_id, "method": method, "params": params}))
                    while True:
                        reply = json.loads(await ws.read_message())
                        if reply.get("id") == msg_id:
                            return dict(reply.get("result", {}))

                async def evaluate(expression: str) -> object:
                    result = await call("Runtime.evaluate", expression=expression, returnByValue=True)
                    return dict(result.get("result", {})).get("value")  # type: ignore[arg-type]

                await call("Network.enable")
                await call("Network.setExtraHTTPHeaders", headers={"Authorization": f"Basic {auth}"})
                await call("Page.navigate", url=url)
                # [rows listed, rows naming the model]: both `rows` once the search has run.
                term = json.dumps(query.strip('"'))
                listed = (f"[$('#tasks-table tbody tr').length, $('#tasks-table tbody tr')"
                          f".filter((i, r) => r.innerText.includes({term})).length]")
                table_ready = "typeof $ !== 'undefined' && $.fn.dataTable.isDataTable('#tasks-table')"
                deadline = time.monotonic() + 60
                while await evaluate(table_ready) is not True:
                    if time.monotonic() > deadline:
                        raise TimeoutError("Flower's tasks table never loaded")
                    await asyncio.sleep(0.2)
                await evaluate(f"$('#tasks-table').DataTable().search({json.dumps(query)}).draw()")
                await evaluate(f"$('#tasks-table_filter input').val({json.dumps(query)})")
                while await evaluate(listed) != [rows, rows]:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the search {query!r} never listed {rows} tasks")
                    await asyncio.sleep(0.2)
                shot = await call("Page.captureScreenshot", format="png")
                ws.close()
                return base64.b64decode(str(shot["data"]))

            out.write_bytes(IOLoop.current().run_sync(drive, timeout=120))
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-root", type=Path, default=DOCS.parent / "examples" / "data")
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
                # One store's four tasks, found by its name (the quoted form matches it alone).
                store = next(row.name for row in handle.status().rows if row.status == "deployed")
                auth = base64.b64encode(f"{flower.user}:{flower.password}".encode()).decode()
                search_screenshot(f"http://127.0.0.1:{flower.port}/tasks", auth, f'"model={store} "', 4,
                                  args.out_dir / "flower-search.png", chromium)
                print(f"batch {handle.batch_id} at the time: {handle.status().counts}")
                app.control.purge()  # the rest of the batch is not needed


if __name__ == "__main__":
    main()
