"""The benchmark's workload specs and its targets table (the benchmark itself is not a test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.report import markdown, targets, targets18
from bench.workload_specs import workloads
from producer.spec import load_batch
from tests.conftest import REPO
from workers.settings import Settings


def test_walmart_workloads_expand_to_one_model_per_store_and_estimator(tmp_path: Path) -> None:
    settings = Settings(data_root=REPO)
    for w in (w for w in workloads(quick=True) if w.name in ("tiny", "small450")):
        path = tmp_path / f"{w.name}.yaml"
        path.write_text(yaml.safe_dump(w.spec("t")))
        batch = load_batch(path, settings)
        assert len(batch.models) == w.n == 45 * len(w.estimators or {})
        assert {m.dataset.segment for m in batch.models} == {str(i) for i in range(1, 46)}  # type: ignore[union-attr]
    assert workloads(quick=True)[2].spec("t", pack="auto")["pack"] == "auto"


def _run(workload: str, method: str, k: int, walls: list[float], n: int, **extra: Any) -> dict[str, Any]:
    reps = [{"wall": w, "finishes": [w], "submit": 0.01, "cpu_workers": 1.0, "cpu_redis": 0.1} for w in walls]
    return {"workload": workload, "method": method, "k": k, "n": n, "repeats": reps, "startup": 1.0, **extra}


def test_targets_compare_modelfleet_with_the_peer_and_the_loop() -> None:
    raw = {
        "machine": {"cores": 2, "load_average": [0, 0, 0], "cpu": "x", "memory_gb": 1, "os": "x",
                    "python": "3", "celery": "5", "kombu": "5", "redis": "5", "scikit-learn": "1",
                    "numpy": "2"},
        "command": "python bench/scaling.py", "started": "now", "duration_s": 60, "repeats": 1,
        "load_after": [0, 0, 0], "packing": True,
        "workloads": [{"name": "noop", "title": "no-op", "n": 100, "ks": [1, 2]},
                      {"name": "tiny", "title": "tiny", "n": 45, "ks": [1, 2]}],
        "runs": [_run("noop", "loop", 1, [0.5], 100), _run("noop", "peer", 2, [0.5], 100),
                 _run("noop", "procs", 2, [2.0], 100, pack=1), _run("noop", "procs-packed", 2, [0.2], 100),
                 _run("tiny", "loop", 1, [4.0], 45), _run("tiny", "procs", 2, [4.0], 45, pack=1),
                 _run("tiny", "procs-packed", 2, [2.0], 45)],
        "producer": [{"models": 10_000, "form": "list", "submit_s": 1.5, "rss_peak_mb": 300, "queued": 500,
                      "validate_s": 1.0, "validate_cpu_s": 1.0, "submit_cpu_s": 1.4, "redis_used_mb": 50}],
    }
    found = {what.split(":")[0]: (figure, met) for what, _, figure, met in targets(raw)}
    assert found["no-op, one chain per model (`pack"] == ("k = 2: 0.25x (50 vs 200 models/s)", False)
    assert found["no-op with packing, 2 workers (2 cores)"] == ("500 models/s", True)
    assert found["no-op with packing, 8 workers on 16 cores"][1] is None  # 2 cores: not measured
    figure, met = found["45 Walmart stores, Ridge, 2 workers, vs the loop"]
    assert met is True and figure.startswith("2.00x") and "pack: 1 1.00x" in figure
    assert found["submit 10,000 / 100,000 models"] == (
        "1.5 s / -, peak RSS 300 MB (list form, default pack, submit only; validation apart)", True)
    assert found["I/O-bound, k = 16"][1] is None
    md = markdown(raw, None)
    assert "modelfleet, k workers x 1, pack: 1" in md and "| 2 | 200 | 50 | 0.25x | 500 | 2.50x |" in md


def test_the_per_chain_cpu_target_takes_the_loops_stage_work_off_modelfleets_cpu() -> None:
    """Issue 18 measures the platform's own CPU: modelfleet's minus the loop's (the same
    stage bodies), over the peer's per chain; the whole CPU's ratio is shown beside it."""
    def cpu(run: dict[str, Any], workers: float) -> dict[str, Any]:
        for rep in run["repeats"]:
            rep.update(cpu_workers=workers, cpu_redis=0.0)
        return run

    raw = {"machine": {"cores": 2}, "producer": [],
           "runs": [cpu(_run("noop", "loop", 1, [1.5], 100), 1.5),
                    cpu(_run("noop", "peer", 1, [1.0], 100), 1.0),
                    cpu(_run("noop", "procs", 1, [3.0], 100, pack=1), 2.6),
                    cpu(_run("noop", "peer", 2, [0.6], 100), 1.0),
                    cpu(_run("noop", "procs", 2, [2.0], 100, pack=1), 2.9)]}
    found = {what.split(":")[0]: (figure, met) for what, _, figure, met in targets18(raw)}
    figure, met = found["no-op, one chain per model (`pack"]
    assert figure == ("k = 1: 1.10x (11.0 vs 10.0 ms; in all 26.0 ms, 2.60x); "
                      "k = 2: 1.40x (14.0 vs 10.0 ms; in all 29.0 ms, 2.90x)")
    assert met is False  # judged on the worst k
