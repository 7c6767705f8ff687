"""The scaling benchmark: the same batch as a plain loop, a multiprocessing.Pool, a hand-written
Celery peer and modelfleet (one chain per model, `pack: 1`, and packed, `pack: auto`).

    python bench/scaling.py            # full run, about 25 minutes; writes bench/results/
    python bench/scaling.py --quick    # small sizes, a few minutes, writes bench/results/quick/
    python bench/scaling.py --quick --only peer        # one part: cpu io noop peer tiny small450 producer
    python bench/scaling.py --only small450 --ks 8     # its rows at these k only (small450: 8 workers)
    python bench/scaling.py --report-only bench/results/scaling.json   # redo the .md and .png

Run it on a quiet machine: every figure is a wall time. Not part of the test suite.
"""

from __future__ import annotations

import os

# Before numpy is imported anywhere: one BLAS/OpenMP thread per process, as in the workers.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# `python bench/scaling.py` puts bench/ on the path; the workers import bench.workloads too.
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

import yaml  # noqa: E402

from bench import report  # noqa: E402
from bench.baselines import run_loop, run_pool, run_sklearn_loop  # noqa: E402
from bench.fleet import fleet  # noqa: E402
from bench.machine import describe  # noqa: E402
from bench.peer import peer  # noqa: E402
from bench.workload_specs import Workload, workloads  # noqa: E402
from producer.local import RedisServer, find_redis_server  # noqa: E402
from producer.spec import Batch, SpecError, load_batch  # noqa: E402
from workers.settings import Settings  # noqa: E402

PREFIXES = ["sklearn.", "bench.workloads."]
PARTS = ["cpu", "io", "noop", "tiny", "small450", "producer"]
METHODS = ["pool", "procs", "conc", "peer"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_spec(workload: Workload, tag: str, workdir: Path, pack: int | str | None = None) -> Path:
    path = workdir / f"{workload.name}-{tag}.yaml"
    path.write_text(yaml.safe_dump(workload.spec(tag, pack), sort_keys=False))
    return path


def load(workload: Workload, tag: str, workdir: Path, settings: Settings,
         pack: int | str | None = None) -> Batch:
    """Write the batch spec and load it the way `modelfleet submit` does (validated)."""
    batch = load_batch(write_spec(workload, tag, workdir, pack), settings)
    if len(batch.models) != workload.n:
        raise RuntimeError(f"{workload.name}: the spec expands to {len(batch.models)} models, "
                           f"not {workload.n}")
    return batch


def packing_supported(workdir: Path, settings: Settings) -> bool:
    """Whether this build's batch spec takes the top-level `pack` key (it is being built)."""
    path = workdir / "pack-probe.yaml"
    path.write_text(yaml.safe_dump({"name": "probe", "pack": "auto", "models": [{
        "name": "m", "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
        "estimator": {"class_path": "sklearn.linear_model.LogisticRegression"}}]}))
    try:
        load_batch(path, settings)
    except SpecError:
        return False
    return True


@dataclass(frozen=True)
class Packing:
    supported: bool  # the build's spec takes `pack` (default auto)
    rows: bool  # run the `pack: auto` rows (supported and not --no-pack)

    def packs(self, w: Workload) -> list[tuple[str, int | str | None]]:
        """(method suffix, spec `pack`) per modelfleet row.

        Every workload runs one chain per model: `pack: 1` where the key exists (a build
        without it does nothing else); CPU- and I/O-bound stay there, as Pool (auto would pack
        the I/O models on a fresh Redis from a guess: a waiting fit looks like a tiny model).
        """
        single: list[tuple[str, int | str | None]] = [("", 1 if self.supported else None)]
        return single + [("-packed", "auto")] if w.packed and self.rows else single


def run_peer(w: Workload, repeats: int, workdir: Path, t_chain: float) -> list[dict[str, Any]]:
    """The hand-written Celery peer, k processes x 1, for every k of the workload."""
    runs = []
    for k in w.ks:
        where = Path(tempfile.mkdtemp(prefix=f"{w.name}-peer{k}-", dir=workdir))
        with peer(where, k) as live:
            log(f"{w.name}: peer {k} worker(s) x 1 ready in {live.startup:.1f} s")
            reps = []
            for rep in range(w.repeats_for(k, t_chain, repeats)):
                result = live.run(w.n, timeout=120 + 10 * w.n * max(t_chain, 0.1))
                reps.append(asdict(result))
                log(f"{w.name}: peer k={k} repeat {rep + 1}: {result.wall:.2f} s "
                    f"(send {result.submit:.3f} s, CPU workers {result.cpu_workers:.2f} s "
                    f"+ redis {result.cpu_redis:.2f} s)")
        runs.append({"workload": w.name, "method": "peer", "k": k, "n": w.n, "repeats": reps,
                     "startup": live.startup, "processes": k, "concurrency": 1})
    return runs


def run_workload(w: Workload, repeats: int, workdir: Path, settings: Settings,
                 worker_args: list[str], methods: set[str], packing: Packing) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    batch = load(w, "base", workdir, settings)
    models = batch.models

    loop_reps: list[dict[str, Any]] = []
    for rep in range(w.loop_repeats or repeats):
        wall, finishes, cpu = run_loop(models, workdir / "loop-store", PREFIXES, REPO)
        loop_reps.append({"wall": wall, "finishes": finishes, "cpu_workers": cpu, "cpu_redis": 0.0})
        log(f"{w.name}: loop repeat {rep + 1}: {wall:.2f} s")
    runs.append({"workload": w.name, "method": "loop", "k": 1, "n": w.n, "repeats": loop_reps,
                 "startup": None})
    t_chain = statistics.median(float(r["wall"]) for r in loop_reps) / w.n

    if "pool" in methods:
        for k in (k for k in w.ks if k > 1):
            reps, startups = [], []
            for rep in range(w.repeats_for(k, t_chain, repeats)):
                wall, finishes, startup = run_pool(models, k, workdir / "pool-store", PREFIXES, REPO)
                reps.append({"wall": wall, "finishes": finishes})
                startups.append(startup)
                log(f"{w.name}: Pool({k}) repeat {rep + 1}: {wall:.2f} s")
            runs.append({"workload": w.name, "method": "pool", "k": k, "n": w.n, "repeats": reps,
                         "startup": max(startups)})

    if "peer" in methods and w.peer:
        runs += run_peer(w, repeats, workdir, t_chain)

    shapes = [("procs", k, k, 1) for k in w.ks if "procs" in methods]
    shapes += [("conc", k, 1, k) for k in w.ks if k > 1 and "conc" in methods]
    for method, k, processes, concurrency in shapes:
        where = Path(tempfile.mkdtemp(prefix=f"{w.name}-{method}{k}-", dir=workdir))
        with fleet(settings, where, processes, concurrency, worker_args) as live:
            log(f"{w.name}: {processes} worker(s) x {concurrency} ready in {live.startup:.1f} s")
            for suffix, pack in packing.packs(w):
                reps = []
                for rep in range(w.repeats_for(k, t_chain, repeats)):
                    batch = load(w, f"{method}{k}{suffix}r{rep}", where, live.settings, pack)
                    timeout = 120 + 10 * w.n * max(t_chain, 0.1)
                    result = live.run(batch, timeout)
                    reps.append(asdict(result))
                    log(f"{w.name}: modelfleet {method}{suffix} k={k} repeat {rep + 1}: {result.wall:.2f} s "
                        f"(submit {result.submit:.3f} s, CPU workers {result.cpu_workers:.2f} s "
                        f"+ redis {result.cpu_redis:.2f} s)")
                runs.append({"workload": w.name, "method": method + suffix, "k": k, "n": w.n, "pack": pack,
                             "repeats": reps, "startup": live.startup, "processes": processes,
                             "concurrency": concurrency})
    return runs


def run_small450(w: Workload, repeats: int, workdir: Path, settings: Settings,
                 worker_args: list[str], packing: Packing) -> list[dict[str, Any]]:
    """A plain scikit-learn loop vs `modelfleet submit --wait` (a CLI process) on 2 running workers.

    Each repeat runs every row once, in turn (the workers idle meanwhile): this VM's speed
    drifts over minutes, and not alike for the loop's C-heavy fits and the platform's Python,
    so rows timed minutes apart compared the host's phases as much as the code.
    """
    assert w.estimators is not None
    # The same loop started from a shell, as the CLI is: Python's start and imports included.
    script = ("import sys; from pathlib import Path; from bench.baselines import run_sklearn_loop; "
              "run_sklearn_loop(Path(sys.argv[1]), sys.argv[2], sys.argv[3], "
              "__import__('json').loads(sys.argv[4]), Path(sys.argv[5]))")
    k = w.ks[0]
    where = Path(tempfile.mkdtemp(prefix=f"{w.name}-cli{k}-", dir=workdir))
    reps: dict[str, list[dict[str, Any]]] = {"loop": [], "loop-script": []}
    with fleet(settings, where, k, 1, worker_args) as live:
        log(f"{w.name}: {k} worker(s) x 1 ready in {live.startup:.1f} s")
        for rep in range(repeats):
            out = Path(tempfile.mkdtemp(prefix="sklearn-loop-", dir=workdir))
            wall, finishes, cpu = run_sklearn_loop(REPO / w.dataset["path"], w.dataset["target"],
                                                   w.dataset["segment_by"], w.estimators, out)
            reps["loop"].append({"wall": wall, "finishes": finishes, "cpu_workers": cpu, "cpu_redis": 0.0})
            log(f"{w.name}: scikit-learn loop repeat {rep + 1}: {wall:.2f} s")
            out = Path(tempfile.mkdtemp(prefix="sklearn-script-", dir=workdir))
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", script, str(REPO / w.dataset["path"]), w.dataset["target"],
                            w.dataset["segment_by"], json.dumps(w.estimators), str(out)],
                           cwd=REPO, check=True, timeout=600)
            wall = time.perf_counter() - t0
            reps["loop-script"].append({"wall": wall, "finishes": [wall]})
            log(f"{w.name}: scikit-learn loop as a script, repeat {rep + 1}: {wall:.2f} s")
            for suffix, pack in packing.packs(w):
                spec = write_spec(w, f"cli{suffix}r{rep}", where, pack)
                result = live.run_cli(spec, w.n, timeout=600)
                reps.setdefault("cli" + suffix, []).append(asdict(result))
                log(f"{w.name}: modelfleet submit --wait (pack: {pack or '-'}) repeat {rep + 1}: "
                    f"{result.wall:.2f} s "
                    f"(last deploy at {result.finishes[-1]:.2f} s, CPU workers {result.cpu_workers:.2f} s "
                    f"+ redis {result.cpu_redis:.2f} s)")
        startup = live.startup
    runs: list[dict[str, Any]] = [
        {"workload": w.name, "method": method, "k": 1, "n": w.n, "repeats": reps[method], "startup": None}
        for method in ("loop", "loop-script")]
    runs += [{"workload": w.name, "method": "cli" + suffix, "k": k, "n": w.n, "pack": pack,
              "repeats": reps["cli" + suffix], "startup": startup, "processes": k, "concurrency": 1}
             for suffix, pack in packing.packs(w)]
    return runs


def producer_scale(sizes: list[int], workdir: Path, packing: Packing) -> list[dict[str, Any]]:
    """Validate + submit in a fresh subprocess per size (its own peak RSS), fresh Redis each.

    The list and matrix specs have no `pack` key: the platform's default (`pack: auto` where
    built; `pack: 1` with --no-pack). The matrix form, and the list with `pack: 1` next to
    auto, stop at 10,000 models: the matrix differs from the list only in validation.
    """
    default = "1" if packing.supported and not packing.rows else None
    runs = [("list", default, n) for n in sizes] + [("matrix", default, n) for n in sizes if n <= 10_000]
    runs += [("list", "1", n) for n in sizes if n <= 10_000 and packing.rows]
    out = []
    for form, pack, n in runs:
        with RedisServer(workdir / f"producer-redis-{form}-{pack}-{n}") as server:
            proc = subprocess.run(
                [sys.executable, "-m", "bench.producer_scale", "--models", str(n), "--form", form,
                 "--broker", server.url, "--workdir", str(workdir), *(["--pack", pack] if pack else [])],
                capture_output=True, text=True, cwd=REPO, check=False, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"producer scale {form} {n} failed:\n{proc.stderr[-3000:]}")
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        log(f"producer {form} {n} (pack: {pack or 'default'}): validate {out[-1]['validate_s']:.2f} s, "
            f"submit {out[-1]['submit_s']:.2f} s, {out[-1]['queued']} messages, "
            f"peak RSS {out[-1]['rss_peak_mb']:.0f} MB, Redis {out[-1]['redis_used_mb']:.0f} MB")
    return out


def write(raw: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(raw, indent=1))
    drawn = bool(report.plotted(raw))
    if drawn:
        report.plot(raw, out / "scaling.png")
    (out / "scaling.md").write_text(report.markdown(raw, "scaling.png" if drawn else None))
    log(f"wrote {out / 'scaling.md'}{', scaling.png' if drawn else ''} and scaling.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repeat: for debugging")
    parser.add_argument("--repeats", type=int, help="repeats per row (default 3, quick 1)")
    parser.add_argument("--only", nargs="+", choices=[*PARTS, "peer"],
                        help="run only these parts; `peer` is the no-op workload's peer and "
                             "k workers x 1 rows alone")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS,
                        help="which parallel methods to run (peer: the no-op workload only)")
    parser.add_argument("--ks", nargs="+", type=int,
                        help="run these k only, for every chosen workload (small450: its workers)")
    parser.add_argument("--no-pack", action="store_true",
                        help="no `pack: auto` rows even where the spec takes the key")
    parser.add_argument("--producer-sizes", nargs="+", type=int,
                        help="models per producer run (default 1000 10000 100000; quick 100 1000)")
    parser.add_argument("--worker-args", default="", help="extra `celery worker` arguments")
    parser.add_argument("--out", type=Path, help="default bench/results (quick: bench/results/quick)")
    parser.add_argument("--report-only", type=Path, help="rewrite the .md/.png from this JSON")
    args = parser.parse_args()
    out = args.out or REPO / "bench" / "results" / ("quick" if args.quick else "")
    if args.report_only:
        write(json.loads(args.report_only.read_text()), out)
        return
    os.chdir(REPO)  # workers started below import bench.workloads from here
    repeats = args.repeats or (1 if args.quick else 3)
    parts = set(args.only or PARTS)
    methods = set(args.methods)
    if "peer" in parts:  # the peer next to modelfleet's k workers x 1, nothing else
        parts, methods = (parts - {"peer"}) | {"noop"}, methods & {"peer", "procs"}
    chosen = [replace(w, ks=tuple(args.ks)) if args.ks else w
              for w in workloads(args.quick) if w.name in parts]
    started = time.time()
    raw: dict[str, Any] = {
        "command": shlex.join(["python", "bench/scaling.py", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "machine": describe(find_redis_server()), "repeats": repeats, "quick": args.quick,
        "workloads": [{"name": w.name, "title": w.title, "n": w.n, "ks": list(w.ks),
                       "estimator": w.estimators or w.estimator, "notes": w.notes} for w in chosen],
        "runs": [], "producer": [],
    }
    log(f"machine: {raw['machine']}")
    with tempfile.TemporaryDirectory(prefix="mf-bench-") as tmp:
        workdir = Path(tmp)
        settings = Settings(artifact_root=workdir / "artifacts", data_root=REPO,  # type: ignore[call-arg]
                            allowed_estimator_prefixes=PREFIXES)
        supported = packing_supported(workdir, settings)
        packing = Packing(supported, supported and not args.no_pack)
        raw["packing"], raw["pack_key"] = packing.rows, supported
        why = "--no-pack: pack: 1 everywhere" if supported else "the spec has no `pack` key"
        log(f"packing rows: {'yes' if packing.rows else f'no ({why})'}")
        worker_args = shlex.split(args.worker_args)
        for w in chosen:
            if w.name == "small450":
                raw["runs"] += run_small450(w, repeats, workdir, settings, worker_args, packing)
            else:
                raw["runs"] += run_workload(w, repeats, workdir, settings, worker_args, methods, packing)
        if "producer" in parts:
            sizes = args.producer_sizes or ([100, 1000] if args.quick else [1000, 10000, 100000])
            raw["producer"] = producer_scale(sizes, workdir, packing)
    raw["duration_s"] = time.time() - started
    raw["load_after"] = [round(x, 2) for x in os.getloadavg()]
    write(raw, out)


if __name__ == "__main__":
    main()
