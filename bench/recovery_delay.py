"""How soon a SIGKILLed worker's model is finished, at the compose defaults.

    python -m bench.recovery_delay                       # lease 15 s, sweep 5 s, visibility 3600 s
    python -m bench.recovery_delay --lease-ttl 2 --sweep-interval 0.5

Starts its own redis-server and --workers `celery worker` processes (each in its own
process group, as a container is) with the visibility timeout at 3600 s, submits
--models random forests big enough that a fit takes seconds, waits until one is in
its train stage, SIGKILLs that worker's whole process group and measures, from the
kill: when the sweeper handed the model's message back (its state's `recovered`
note appears), when the model was promoted, and when the batch was done. Checks that
every model was promoted with exactly one registry version. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.teardown import close_app
from producer.local import LocalWorkers, RedisServer, wait_for
from producer.spec import load_batch
from producer.submit import submit
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import Settings


def _model(name: str, seed: int, trees: int) -> dict[str, Any]:
    return {"name": name, "task": "classification",
            "dataset": {"kind": "synthetic", "n_samples": 20_000, "n_features": 20, "seed": seed},
            "estimator": {"class_path": "sklearn.ensemble.RandomForestClassifier",
                          "params": {"n_estimators": trees, "random_state": seed}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--trees", type=int, default=150, help="per forest: sets a fit's length")
    parser.add_argument("--lease-ttl", type=float, default=Settings().lease_ttl)
    parser.add_argument("--sweep-interval", type=float, default=Settings().sweep_interval)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        settings = Settings(broker_url=server.url, artifact_root=Path(tmp) / "artifacts",  # type: ignore[arg-type]
                            visibility_timeout=3600, lease_ttl=args.lease_ttl,
                            sweep_interval=args.sweep_interval)
        with LocalWorkers(settings, args.workers, Path(tmp) / "logs") as pool:
            app, runtime = create_app(settings), Runtime.from_settings(settings)
            try:
                names = [f"forest-{i}" for i in range(args.models)]
                spec = Path(tmp) / "batch.yaml"
                spec.write_text(yaml.safe_dump({"name": "recovery", "pack": 1, "models": [
                    _model(n, i, args.trees) for i, n in enumerate(names)]}))
                handle = submit(load_batch(spec, settings), app, runtime)
                victim: dict[str, str] = {}

                def one_training() -> bool:
                    for name, st in runtime.tracker.model_states(handle.batch_id, names).items():
                        if st.get("status") == "running" and st.get("stage") == "train":
                            victim.update(st, name=name)
                            return True
                    return False

                wait_for(one_training, 120, "a model in its train stage", interval=0.05)
                index = pool.names.index(victim["worker"])
                os.killpg(pool.procs[index].pid, signal.SIGKILL)
                killed = time.time()
                pool.procs[index].wait(10)

                def state() -> dict[str, str]:
                    return runtime.tracker.model_states(handle.batch_id, [victim["name"]])[victim["name"]]

                wait_for(lambda: bool(state().get("recovered")), 300, "the model handed back", interval=0.1)
                handed_back = time.time() - killed
                status = handle.wait(timeout=600)
                versions = {n: [v["version"] for v in runtime.registry.versions(n)] for n in names}
                print(json.dumps({
                    "models": args.models, "workers": args.workers, "lease_ttl": settings.lease_ttl,
                    "sweep_interval": settings.sweep_interval,
                    "visibility_timeout": settings.visibility_timeout,
                    "kill_to_handed_back_s": round(handed_back, 1),
                    "kill_to_promoted_s": round(float(state()["done_deploy"]) - killed, 1),
                    "kill_to_batch_done_s": round(time.time() - killed, 1),
                    "counts": status.counts, "one_version_each": all(v == [1] for v in versions.values()),
                    "recovered": state().get("recovered"), "load": os.getloadavg()[0]}))
            finally:
                runtime.redis.close()
                close_app(app)


if __name__ == "__main__":
    main()
