"""Time `modelfleet leaderboard` on a 1,000-model batch (synthetic index, real Redis).

    python -m bench.leaderboard_scale [N]

Prints the library call (read + rank) and the whole command (a new process) in seconds.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.synthetic_index import write_batch
from producer import leaderboard
from producer.local import RedisServer
from workers.runtime import Runtime
from workers.settings import Settings


def main(n: int = 1000) -> None:
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        settings = Settings(broker_url=server.url, artifact_root=Path(tmp) / "artifacts")  # type: ignore[arg-type]
        rt = Runtime.from_settings(settings)
        write_batch(rt, "scale-1", n)
        for label, kwargs in (("all", {}), ("best-per store", {"best_per": "store"}),
                              ("group-by store, top 3", {"group_by": "store", "top": 3})):
            start, cpu = time.perf_counter(), time.process_time()
            _, found = leaderboard.entries(rt, "scale-1")
            parts = leaderboard.sections(found, **kwargs)  # type: ignore[arg-type]
            print(f"library, {label}: {time.perf_counter() - start:.3f} s wall, "
                  f"{time.process_time() - cpu:.3f} s CPU "
                  f"({sum(len(p.rows) for p in parts)} rows)")
        env = {**os.environ, **settings.to_env()}
        for args in (["leaderboard", "scale-1", "--format", "table"], ["leaderboard", "scale-1", "--format",
                     "csv"], ["leaderboard", "scale-1", "--format", "json"], ["batches"]):
            print(f"command `{' '.join(args)}`: {_timed(args, env)}")


def _timed(args: list[str], env: dict[str, str]) -> str:
    """Wall and CPU seconds of `modelfleet ARGS` in a new process (CPU: less noisy on a busy host)."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run([sys.executable, "-m", "producer", *args], env=env, check=True, stdout=subprocess.DEVNULL)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return f"{wall:.2f} s wall, {cpu:.2f} s CPU"


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
