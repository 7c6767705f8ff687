"""Where a worker's time goes on small450: py-spy's samples of the workers during one batch.

    pip install py-spy
    python bench/profile_workers.py [--workers K] [--pack auto|N] [--out DIR]
    python bench/profile_workers.py --workload noop --pack 1   # the four-task chain's own cost

Starts a fresh redis-server and K workers (bench/fleet.py), runs one warm-up batch
(a fresh worker's first tasks cost more), then profiles the next batch with
`py-spy record --subprocesses` (collapsed stacks, one file per worker) and prints
the heaviest frames by inclusive share, and the batch's worker CPU per model. Not a test.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

import yaml  # noqa: E402

from bench.fleet import fleet  # noqa: E402
from bench.workload_specs import workloads  # noqa: E402
from workers.settings import Settings  # noqa: E402


def heaviest(files: list[Path], top: int) -> list[tuple[float, str]]:
    """(share of the samples inside a stage task, frame) for the `top` heaviest frames."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for path in files:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            if not any("run_stage" in f for f in frames):
                continue
            total += int(count)
            for frame in set(frames[frames.index(next(f for f in frames if "run_stage" in f)):]):
                inclusive[frame] += int(count)
    return [(n / max(total, 1), f) for f, n in inclusive.most_common(top)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--pack", default="auto")
    parser.add_argument("--workload", default="small450", choices=["small450", "noop"],
                        help="noop: the no-op workload (platform overhead only; with --pack 1, per chain)")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="profile-")))
    args = parser.parse_args()
    pack = args.pack if args.pack == "auto" else int(args.pack)
    # small450 is the same in both sizes; the full no-op batch (256 models) gives enough samples.
    small = next(w for w in workloads(args.workload == "small450") if w.name == args.workload)
    settings = Settings(allowed_estimator_prefixes=["sklearn.", "bench.workloads."])
    args.out.mkdir(parents=True, exist_ok=True)
    with fleet(settings, args.out / "fleet", args.workers, 1) as live:
        spec = args.out / f"{small.name}.yaml"
        for tag in ("warm", "profiled"):
            spec.write_text(yaml.safe_dump(small.spec(tag, pack), sort_keys=False))
            spies = [] if tag == "warm" else [
                subprocess.Popen(["py-spy", "record", "-p", str(p.pid), "--subprocesses", "-r", "250",
                                  "-f", "raw", "-o", str(args.out / f"worker-{i}.txt"), "--nonblocking"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for i, p in enumerate(live.workers.procs)]
            run = live.run_cli(spec, small.n, timeout=600)
            for spy in spies:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            print(f"{tag}: wall {run.wall:.2f} s, worker CPU {run.cpu_workers:.2f} s "
                  f"= {1000 * run.cpu_workers / small.n:.1f} ms per model")
    for share, frame in heaviest(sorted(args.out.glob("worker-*.txt")), args.top):
        print(f"{100 * share:5.1f}%  {frame[:150]}")


if __name__ == "__main__":
    main()
