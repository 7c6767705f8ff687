"""Turn the raw JSON of a scaling run into the markdown tables, the targets and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.machine import as_markdown
from bench.metrics import efficiency, ideal_time, per_chain_overhead, summarise, tail

METHOD_LABEL = {"loop": "plain loop", "pool": "multiprocessing.Pool(k)",
                "procs": "modelfleet, k workers x 1", "conc": "modelfleet, 1 worker x k"}


def t_chain(raw: dict[str, Any], workload: str) -> float:
    loop = next(r for r in raw["runs"] if r["workload"] == workload and r["method"] == "loop")
    return summarise([rep["wall"] for rep in loop["repeats"]]).median / loop["n"]


def rows(raw: dict[str, Any], workload: str) -> list[dict[str, Any]]:
    """Derived figures of every run of one workload."""
    tc = t_chain(raw, workload)
    loop_wall = tc * next(r["n"] for r in raw["runs"] if r["workload"] == workload)
    out = []
    for run in (r for r in raw["runs"] if r["workload"] == workload):
        n, k = run["n"], run["k"]
        walls = [rep["wall"] for rep in run["repeats"]]
        wall = summarise(walls)
        out.append({
            "method": run["method"], "k": k, "n": n, "wall": wall,
            "speedup": loop_wall / wall.median,
            "efficiency": efficiency(wall.median, n, k, tc),
            "efficiency_range": (efficiency(wall.max, n, k, tc), efficiency(wall.min, n, k, tc)),
            "chains_per_s": n / wall.median,
            "submit": summarise([rep["submit"] for rep in run["repeats"]]) if run["method"] in (
                "procs", "conc") else None,
            "tail": summarise([tail(rep["finishes"]) for rep in run["repeats"]]),
            "overhead_ms": 1000 * per_chain_overhead(wall.median, n, k, tc),
            "startup": run.get("startup"), "ideal": ideal_time(n, k, tc),
            "cpu_ms": (1000 * summarise([rep["cpu_workers"] + rep["cpu_redis"]
                                         for rep in run["repeats"]]).median / n
                       if "cpu_workers" in run["repeats"][0] else None),
        })
    return out


def table(raw: dict[str, Any], workload: dict[str, Any]) -> str:
    name = workload["name"]
    tc = t_chain(raw, name)
    head = (f"### {workload['title']}: n = {workload['n']} models, t_chain = {tc:.3f} s "
            f"(loop wall / n)\n\n")
    if workload.get("notes"):
        head += f"{workload['notes']}.\n\n"
    lines = ["| method | k | wall s, median (min-max) | ideal s | speedup vs loop | efficiency | "
             "chains/s | overhead ms/chain | CPU ms/chain | submit s | tail 95->100% s | startup s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows(raw, name):
        lo, hi = r["efficiency_range"]
        lines.append(
            f"| {METHOD_LABEL[r['method']]} | {r['k']} | {r['wall'].fmt()} | {r['ideal']:.2f} | "
            f"{r['speedup']:.2f}x | {r['efficiency']:.2f} ({lo:.2f}-{hi:.2f}) | "
            f"{r['chains_per_s']:.1f} | {r['overhead_ms']:.0f} | "
            f"{'' if r['cpu_ms'] is None else format(r['cpu_ms'], '.1f')} | "
            f"{r['submit'].fmt(3) if r['submit'] else ''} | {r['tail'].fmt()} | "
            f"{'' if r['startup'] is None else format(r['startup'], '.1f')} |")
    return head + "\n".join(lines) + "\n"


def producer_table(raw: dict[str, Any]) -> str:
    lines = ["| models | spec form | validate s (CPU s) | submit s (CPU s) | submit ms/model | "
             "peak RSS MB |", "|---:|---|---:|---:|---:|---:|"]
    for p in raw.get("producer", []):
        lines.append(f"| {p['models']} | {p['form']} | {p['validate_s']:.2f} ({p['validate_cpu_s']:.2f}) | "
                     f"{p['submit_s']:.2f} ({p['submit_cpu_s']:.2f}) | "
                     f"{1000 * p['submit_s'] / p['models']:.2f} | {p['rss_peak_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def _best(raw: dict[str, Any], workload: str, method: str, k: int) -> dict[str, Any] | None:
    return next((r for r in rows(raw, workload) if r["method"] == method and r["k"] == k), None)


def targets(raw: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, figure reached, met?) for each target of issue 6 that this run measured."""
    out: list[tuple[str, str, bool | None]] = []
    names = {w["name"] for w in raw["workloads"]}
    if "io" in names:
        for k, goal in ((8, 0.95), (16, 0.90)):
            for method in ("procs", "conc"):
                r = _best(raw, "io", method, k)
                if r is not None:
                    out.append((f"I/O-bound, n = {r['n']}: efficiency >= {goal} at k = {k} "
                                f"({METHOD_LABEL[method]})",
                                f"{r['efficiency']:.3f} (wall {r['wall'].fmt()} s, ideal {r['ideal']:.2f} s)",
                                r["efficiency"] >= goal))
    if "cpu" in names:
        k = max(r["k"] for r in rows(raw, "cpu"))
        pool = _best(raw, "cpu", "pool", k)
        for method in ("procs", "conc"):
            mf = _best(raw, "cpu", method, k)
            if mf is not None and pool is not None:
                ratio = mf["wall"].median / pool["wall"].median
                out.append((f"CPU-bound at k = {k} (cores): within 10% of multiprocessing.Pool "
                            f"({METHOD_LABEL[method]})",
                            f"modelfleet {mf['wall'].median:.2f} s vs Pool {pool['wall'].median:.2f} s "
                            f"({100 * (ratio - 1):+.1f}%)", ratio <= 1.10))
    if "noop" in names:
        best = max((r for r in rows(raw, "noop") if r["method"] in ("procs", "conc")),
                   key=lambda r: r["chains_per_s"])
        out.append(("No-op: >= 250 chains/s (1,000 tasks/s), acks late and events on",
                    f"{best['chains_per_s']:.1f} chains/s ({4 * best['chains_per_s']:.0f} tasks/s), "
                    f"best at {METHOD_LABEL[best['method']]}, k = {best['k']}; "
                    f"{best['overhead_ms']:.0f} ms/chain overhead", best["chains_per_s"] >= 250))
    prod = [p for p in raw.get("producer", []) if p["form"] == "list"]
    if prod:
        big = max(prod, key=lambda p: p["models"])
        small = min(prod, key=lambda p: p["models"])
        growth = (big["submit_s"] / big["models"]) / (small["submit_s"] / small["models"])
        out.append((f"Submitting {big['models']} models under 5 s, growing no faster than linearly",
                    f"{big['submit_s']:.2f} s; per-model cost x{growth:.2f} from {small['models']} to "
                    f"{big['models']} models", big["submit_s"] < 5 and growth <= 1.25))
    return out


def markdown(raw: dict[str, Any], plot_name: str) -> str:
    parts = [f"# Scaling benchmark results\n\nMachine: {as_markdown(raw['machine'])}.\n",
             f"Run: `{raw['command']}` at {raw['started']} ({raw['duration_s'] / 60:.1f} min), "
             f"{raw['repeats']} repeats per row unless its wall column shows a single figure "
             f"(the I/O loop and the I/O rows whose ideal time is over 30 s run once); load average "
             f"{raw['machine']['load_average']} at start, {raw['load_after']} at the end.\n",
             "Wall time runs from the call to `submit` to the last model's deploy (workers "
             "started and answering a ping before t0; their startup is the last column). "
             "Efficiency = ceil(n/k) x t_chain / wall; overhead = wall x k / n - t_chain; "
             "CPU ms/chain = CPU time of the loop process, or of the worker processes (pool "
             "children included) plus redis-server, over n. "
             "Every modelfleet batch runs with `no_cache=True`.\n",
             f"![speedup vs k]({plot_name})\n"]
    for w in raw["workloads"]:
        parts.append(table(raw, w))
    if raw.get("producer"):
        parts.append("### Producer: validate and submit\n\n" + producer_table(raw))
    parts.append("### Targets\n\n| target | reached | met |\n|---|---|---|\n" + "".join(
        f"| {t} | {fig} | {'yes' if ok else 'no'} |\n" for t, fig, ok in targets(raw)))
    return "\n".join(parts)


def plot(raw: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = raw["workloads"]
    fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 4.2), squeeze=False)
    for ax, w in zip(axes[0], workloads, strict=True):
        data = rows(raw, w["name"])
        ks = sorted({r["k"] for r in data})
        n = w["n"]
        ax.plot(ks, [n / -(-n // k) for k in ks], "k--", label="ideal n / ceil(n/k)")
        for method, style in (("pool", "s-"), ("procs", "o-"), ("conc", "^-")):
            pts = sorted((r["k"], r["speedup"]) for r in data if r["method"] == method)
            if method != "pool":  # k = 1 of modelfleet is the same for both shapes
                pts = sorted(set(pts) | {(r["k"], r["speedup"]) for r in data
                                         if r["method"] == "procs" and r["k"] == 1})
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=METHOD_LABEL[method])
        ax.axhline(1.0, color="grey", lw=0.8, label="plain loop")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("k (worker processes)")
        ax.set_ylabel("speedup over the plain loop")
        ax.set_title(f"{w['title']}, n = {n}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"modelfleet scaling on {raw['machine']['cores']} cores", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
