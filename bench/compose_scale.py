"""Batch wall time with K compose-style workers: docker-compose.yml's own services as
local processes (the path of tests/integration/test_compose_local.py), fresh Redis and
artifact volume per run, so nothing is served from the cache.

    .venv/bin/python -m bench.compose_scale --spec examples/fleet.yaml --workers 1 3

The time is the producer's `modelfleet submit SPEC --wait`, from start to exit, after
all K workers answer a ping.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.compose_local import ENV_EXAMPLE, LocalCompose, read_env_file, settings_from_env
from producer.local import RedisServer, wait_for
from workers.app import create_app
from workers.runtime import Runtime


def one_run(spec: str, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="compose-scale-") as tmp_dir:
        tmp = Path(tmp_dir)
        env = {**read_env_file(ENV_EXAMPLE), "MODELFLEET_REDIS_PASSWORD": secrets.token_hex(16)}
        with RedisServer(tmp / "redis", password=env["MODELFLEET_REDIS_PASSWORD"]) as server, \
                LocalCompose(env=env, redis_address=f"{server.host}:{server.port}",
                             volumes={"artifacts": tmp / "artifacts"}, log_dir=tmp / "logs") as compose:
            nodes = {compose.node_name(compose.start("worker", replica=i)[1])
                     for i in range(1, workers + 1)}
            settings = settings_from_env(compose.environment("producer", "bench"))
            app = create_app(settings)
            seen: set[str] = set()

            def ready() -> bool:
                for reply in app.control.ping(timeout=0.5) or []:
                    seen.update(reply)
                return nodes <= seen

            try:
                wait_for(ready, 180, f"{workers} workers", interval=0.5)
            finally:
                app.close()
            started = time.monotonic()
            done = compose.run("producer", timeout=3600,
                               override=["modelfleet", "submit", spec, "--wait"])
            elapsed = time.monotonic() - started
            runtime = Runtime.from_settings(settings)
            (batch_id,) = runtime.tracker.list_batches()
            runs = runtime.tracker.runs(batch_id=batch_id)
            return {"spec": spec, "workers": workers, "seconds": round(elapsed, 1),
                    "exit_code": done.returncode, "stage_runs": len(runs),
                    "workers_used": len({r["worker"] for r in runs}),
                    "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="examples/fleet.yaml")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()
    for k in args.workers:
        print(json.dumps(one_run(args.spec, k)), flush=True)


if __name__ == "__main__":
    main()
