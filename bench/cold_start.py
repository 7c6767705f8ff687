"""Cold start: how soon `modelfleet submit` sends its first message (with and without
what its checks remembered), how soon a fresh worker answers a ping (modelfleet vs a bare
Celery worker started the same way), what each costs in CPU, and the first batch on
fresh workers against the second (the I/O-bound workload: the workers wait, so any
start-up cost shows).

    python bench/cold_start.py                      # 5 of each; k = 4 for the batches
    python bench/cold_start.py --repeats 3 --ks 16 --concurrency 2

Not part of the test suite: every figure is a wall time, given with the machine's load.
"""

from __future__ import annotations

import os

# Before numpy is imported anywhere: one BLAS/OpenMP thread per process, as in the workers.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

import redis  # noqa: E402
import yaml  # noqa: E402

from bench.fleet import cpu_seconds, fleet  # noqa: E402
from bench.machine import describe  # noqa: E402
from bench.workload_specs import TINY, Workload, workloads  # noqa: E402
from producer.local import LocalWorkers, RedisServer, find_redis_server, worker_env  # noqa: E402
from producer.spec import load_batch  # noqa: E402
from workers.app import queue_lists  # noqa: E402
from workers.settings import STAGES, Settings  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class TimedWorkers(LocalWorkers):
    """LocalWorkers pinged every ~0.1 s while they start, so the first ping is timed finely
    (the default cadence, 0.7 s, was as large as the difference measured)."""

    ping_timeout = 0.08
    ping_interval = 0.02
    forked = False  # target 3 is a worker started as compose and Kubernetes start it


class ForkedTimedWorkers(TimedWorkers):
    """TimedWorkers forked from the fork server, as `modelfleet run`, `up` and the tests start
    them (workers/forked.py)."""

    forked = True


class BareWorkers(TimedWorkers):
    """`celery -A bench.bare_celery worker`, with the same options as LocalWorkers' command."""

    def command(self, name: str) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "bench.bare_celery", "worker", "-Q", ",".join(STAGES),
                "-c", str(self.concurrency), "-n", name, "--loglevel", "INFO", *self.extra_args]


def launch(kind: str, settings: Settings, workdir: Path, concurrency: int) -> dict[str, float]:
    """One fresh worker (one process, `concurrency` pool children) until it answers a ping:
    the wall time from its launch and the CPU its process tree used by then."""
    cls = {"celery": BareWorkers, "forked": ForkedTimedWorkers, "forked-first": ForkedTimedWorkers
           }.get(kind, TimedWorkers)
    workers = cls(settings, 1, workdir / f"logs-{kind}", concurrency=concurrency,
                  name_prefix="bare" if kind == "celery" else "w")
    started = time.perf_counter()
    try:
        workers.start(wait=180)
        ready = time.perf_counter() - started
        cpu = cpu_seconds([p.pid for p in workers.procs])
    finally:
        workers.stop()
    return {"ping_s": ready, "cpu_s": cpu}


def launches(repeats: int, concurrency: int, workdir: Path) -> list[dict[str, Any]]:
    """Launch -> first ping, modelfleet and bare Celery alternately, on one Redis; and a worker
    forked from the fork server (the first one: with the server's start)."""
    rows: list[dict[str, Any]] = []
    with RedisServer(workdir / "redis-ping") as server:
        settings = Settings(artifact_root=workdir / "artifacts").with_broker(server.url)  # type: ignore[call-arg]
        for rep in range(repeats):
            for kind in (("forked-first",) if rep == 0 else ()) + ("modelfleet", "forked", "celery"):
                row = {"kind": kind, "repeat": rep, "concurrency": concurrency,
                       **launch(kind, settings, workdir, concurrency), "load": os.getloadavg()[0]}
                rows.append(row)
                log(f"{kind} -c {concurrency}: ping after {row['ping_s']:.2f} s, "
                    f"CPU {row['cpu_s']:.2f} s (load {row['load']:.1f})")
    return rows


def batches(k: int, n: int, seconds: float, workdir: Path, base: Settings) -> dict[str, Any]:
    """Two I/O-bound batches in a row on k fresh workers x 1: each one's efficiency is the
    ideal (n waits spread over k slots) over its wall time."""
    w = Workload("io", "I/O-bound", n, (k,), TINY,
                 {"class_path": "bench.workloads.WaitingClassifier", "params": {"seconds": seconds}})
    where = Path(tempfile.mkdtemp(prefix=f"io{k}-", dir=workdir))
    ideal = -(-n // k) * seconds
    out: dict[str, Any] = {"k": k, "n": n, "seconds": seconds, "ideal_s": ideal}
    with fleet(base, where, k, 1) as live:
        for label in ("first", "second"):
            path = where / f"{label}.yaml"
            path.write_text(yaml.safe_dump(w.spec(f"{label}-k{k}", 1), sort_keys=False))
            result = live.run(load_batch(path, live.settings), timeout=120 + 10 * n * seconds)
            out[label] = {"wall_s": result.wall, "efficiency": ideal / result.wall,
                          "cpu_workers_s": result.cpu_workers, "load": os.getloadavg()[0]}
            log(f"io k={k} {label} batch: {result.wall:.2f} s, efficiency {ideal / result.wall:.2f}, "
                f"worker CPU {result.cpu_workers:.2f} s")
    return out


def submit_once(spec: Path, settings: Settings, cache: str) -> dict[str, float]:
    """`modelfleet submit SPEC` (no --wait) in a fresh process: seconds until its first
    message is in a queue, until it exits, and its CPU; `cache` is MODELFLEET_CHECK_CACHE_DIR."""
    client = redis.Redis.from_url(settings.broker())
    lists = [name for stage in STAGES for name in queue_lists(stage)]
    env = {**worker_env(settings), "MODELFLEET_CHECK_CACHE_DIR": cache}
    script = Path(sys.executable).with_name("modelfleet")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen([str(script), "submit", str(spec)], env=env, stdout=subprocess.DEVNULL)
    first = None
    while proc.poll() is None and first is None:
        pipe = client.pipeline()
        for name in lists:
            pipe.llen(name)
        if any(pipe.execute()):
            first = time.perf_counter() - started
        else:
            time.sleep(0.005)  # polling the queues' lengths, not synchronisation
    proc.wait(timeout=600)
    done = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client.flushdb()
    client.close()
    if proc.returncode != 0:
        raise RuntimeError(f"submit exited {proc.returncode}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"first_message_s": first if first is not None else done, "exit_s": done, "cpu_s": cpu}


def submits(specs: dict[str, Path], repeats: int, workdir: Path) -> list[dict[str, Any]]:
    """Each spec submitted with an empty check cache (every check in full, as before the
    cache) and with a warm one, alternately, on a fresh Redis with no workers."""
    rows: list[dict[str, Any]] = []
    with RedisServer(workdir / "redis-submit") as server:
        settings = Settings(data_root=REPO).with_broker(server.url)  # type: ignore[call-arg]
        for name, spec in specs.items():
            warm = str(workdir / f"checks-{name}")
            submit_once(spec, settings, warm)  # fills the cache
            for rep in range(repeats):
                for cache, label in (("", "no cache"), (warm, "warm cache")):
                    row = {"spec": name, "cache": label, "repeat": rep, **submit_once(spec, settings, cache),
                           "load": os.getloadavg()[0]}
                    rows.append(row)
                    log(f"submit {name} ({label}): first message {row['first_message_s']:.2f} s, "
                        f"exit {row['exit_s']:.2f} s, CPU {row['cpu_s']:.2f} s (load {row['load']:.1f})")
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    med = {kind: {key: statistics.median(r[key] for r in rows if r["kind"] == kind)
                  for key in ("ping_s", "cpu_s")} for kind in ("modelfleet", "forked", "celery")
           if any(r["kind"] == kind for r in rows)}
    return {**med, "ratio": med["modelfleet"]["ping_s"] / med["celery"]["ping_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["submit", "ping", "batches"],
                        choices=["submit", "ping", "batches"], help="which parts to run")
    parser.add_argument("--repeats", type=int, default=5, help="submits and launches of each kind")
    parser.add_argument("--concurrency", type=int, default=2, help="pool children per worker")
    parser.add_argument("--ks", type=int, nargs="*", default=[4], help="workers for the batch rows")
    parser.add_argument("--n", type=int, default=0, help="models per batch (default 4 per worker)")
    parser.add_argument("--seconds", type=float, default=1.0, help="the I/O-bound fit's wait")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cold_start.json")
    args = parser.parse_args()
    os.chdir(REPO)  # workers import bench.workloads from here
    raw: dict[str, Any] = {"machine": describe(find_redis_server()),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="mf-start-") as tmp:
        workdir = Path(tmp)
        small = next(w for w in workloads(True) if w.name == "small450")
        specs = {"quickstart": REPO / "examples" / "quickstart.yaml", "small450": workdir / "small450.yaml"}
        specs["small450"].write_text(yaml.safe_dump(small.spec("cold", "auto"), sort_keys=False))
        if "submit" in args.parts:
            raw["submits"] = submits(specs, args.repeats, workdir)
        if "ping" in args.parts:
            raw["launches"] = launches(args.repeats, args.concurrency, workdir)
            raw["ping"] = summary(raw["launches"])
            log(f"median ping: modelfleet {raw['ping']['modelfleet']['ping_s']:.2f} s "
                f"(forked: {raw['ping']['forked']['ping_s']:.2f} s), "
                f"celery {raw['ping']['celery']['ping_s']:.2f} s ({raw['ping']['ratio']:.2f}x)")
        base = Settings(data_root=REPO, allowed_estimator_prefixes=["sklearn.", "bench.workloads."])  # type: ignore[call-arg]
        if "batches" in args.parts:
            raw["batches"] = [batches(k, args.n or 4 * k, args.seconds, workdir, base) for k in args.ks]
    raw["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(raw, indent=1))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
