"""Turn the raw JSON of a scaling run into the markdown tables, the targets and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.machine import as_markdown
from bench.metrics import efficiency, ideal_time, per_chain_overhead, summarise, tail

METHOD_LABEL = {"loop": "plain loop", "pool": "multiprocessing.Pool(k)",
                "peer": "hand-written Celery peer, k workers x 1",
                "procs": "modelfleet, k workers x 1", "conc": "modelfleet, 1 worker x k",
                "procs-packed": "modelfleet, k workers x 1, pack: auto",
                "conc-packed": "modelfleet, 1 worker x k, pack: auto",
                "cli": "`modelfleet submit --wait`, k workers x 1",
                "cli-packed": "`modelfleet submit --wait`, k workers x 1, pack: auto",
                "loop-script": "plain loop as a script (`python loop.py`: Python start included)"}
# Rows whose repeats carry a submit (send) time of their own.
SENDERS = {"peer", "procs", "conc", "procs-packed", "conc-packed"}


def label(run: dict[str, Any]) -> str:
    """The method's label; `pack: 1` is said where the same run also has packed rows."""
    text = METHOD_LABEL[run["method"]]
    return f"{text}, pack: 1" if run.get("pack") == 1 else text


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
            "method": run["method"], "label": label(run), "k": k, "n": n, "wall": wall,
            "speedup": loop_wall / wall.median,
            "efficiency": efficiency(wall.median, n, k, tc),
            "efficiency_range": (efficiency(wall.max, n, k, tc), efficiency(wall.min, n, k, tc)),
            "chains_per_s": n / wall.median,
            "submit": summarise([rep["submit"] for rep in run["repeats"]]) if run["method"] in SENDERS
            else None,
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
             "models/s | overhead ms/model | CPU ms/model | submit s | tail 95->100% s | startup s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows(raw, name):
        lo, hi = r["efficiency_range"]
        lines.append(
            f"| {r['label']} | {r['k']} | {r['wall'].fmt()} | {r['ideal']:.2f} | "
            f"{r['speedup']:.2f}x | {r['efficiency']:.2f} ({lo:.2f}-{hi:.2f}) | "
            f"{r['chains_per_s']:.1f} | {r['overhead_ms']:.0f} | "
            f"{'' if r['cpu_ms'] is None else format(r['cpu_ms'], '.1f')} | "
            f"{r['submit'].fmt(3) if r['submit'] else ''} | {r['tail'].fmt()} | "
            f"{'' if r['startup'] is None else format(r['startup'], '.1f')} |")
    return head + "\n".join(lines) + "\n"


def _row(raw: dict[str, Any], workload: str, method: str, k: int) -> dict[str, Any] | None:
    if not any(r["workload"] == workload and r["method"] == "loop" for r in raw["runs"]):
        return None
    return next((r for r in rows(raw, workload) if r["method"] == method and r["k"] == k), None)


def peer_table(raw: dict[str, Any]) -> str:
    """modelfleet's no-op throughput over the hand-written peer's, at the same k (k workers x 1)."""
    ks = sorted({r["k"] for r in raw["runs"] if r["workload"] == "noop" and r["method"] == "peer"})
    if not ks:
        return ""
    lines = ["| k | peer models/s | modelfleet models/s (one chain per model) | modelfleet / peer | "
             "modelfleet, pack: auto, models/s | packed / peer |", "|---:|---:|---:|---:|---:|---:|"]
    for k in ks:
        peer = _row(raw, "noop", "peer", k)
        assert peer is not None
        cells = [f"{peer['chains_per_s']:.0f}"]
        for method in ("procs", "procs-packed"):
            mf = _row(raw, "noop", method, k)
            cells += (["", ""] if mf is None else
                      [f"{mf['chains_per_s']:.0f}", f"{mf['chains_per_s'] / peer['chains_per_s']:.2f}x"])
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return ("#### no-op: modelfleet vs the hand-written Celery peer (same k, same machine, same run)\n\n"
            + "\n".join(lines) + "\n")


def producer_table(raw: dict[str, Any]) -> str:
    lines = ["| models | spec form | pack | messages queued | validate s (CPU s) | submit s (CPU s) | "
             "submit ms/model | peak RSS MB | Redis MB |", "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for p in raw.get("producer", []):
        lines.append(f"| {p['models']} | {p['form']} | {p.get('pack') or 'default'} | {p['queued']} | "
                     f"{p['validate_s']:.2f} ({p['validate_cpu_s']:.2f}) | "
                     f"{p['submit_s']:.2f} ({p['submit_cpu_s']:.2f}) | "
                     f"{1000 * p['submit_s'] / p['models']:.2f} | {p['rss_peak_mb']:.0f} | "
                     f"{p.get('redis_used_mb', 0):.0f} |")
    return "\n".join(lines) + "\n"


Target = tuple[str, str, str, bool | None]  # (what, was at issue 9, figure reached, met?)
NOT_RUN = "not measured in this run"


def _default(raw: dict[str, Any], workload: str, method: str, k: int) -> dict[str, Any] | None:
    """The platform's default shape: packed where the build packs, else one chain per model."""
    return _row(raw, workload, f"{method}-packed", k) or _row(raw, workload, method, k)


def _vs_loop(raw: dict[str, Any], workload: str, method: str, k: int, goal: float) -> tuple[str, bool | None]:
    default, single = _default(raw, workload, method, k), _row(raw, workload, method, k)
    if default is None or single is None:
        return NOT_RUN, None
    figure = f"{default['speedup']:.2f}x ({default['label']}: {default['wall'].fmt()} s)"
    if default["method"] != single["method"]:
        figure += f"; pack: 1 {single['speedup']:.2f}x"
    if (script := _row(raw, workload, "loop-script", 1)) is not None:
        # Both sides started from a shell: the loop script pays Python's start and imports too.
        figure += (f"; vs the loop run as a script ({script['wall'].fmt()} s, start included): "
                   f"{script['wall'].median / default['wall'].median:.2f}x")
    return figure, default["speedup"] >= goal


def _peer_ratio(raw: dict[str, Any]) -> tuple[str, bool | None]:
    ratios = [(k, p["chains_per_s"], mf["chains_per_s"]) for k in sorted({r["k"] for r in raw["runs"]})
              if (p := _row(raw, "noop", "peer", k)) and (mf := _row(raw, "noop", "procs", k))]
    if not ratios:
        return NOT_RUN, None
    figure = "; ".join(f"k = {k}: {m / p:.2f}x ({m:.0f} vs {p:.0f} models/s)" for k, p, m in ratios)
    return figure, min(m / p for _, p, m in ratios) >= 0.9


def _packed_rate(raw: dict[str, Any], k: int, goal: float, cores_needed: int) -> tuple[str, bool | None]:
    cores = raw["machine"]["cores"]
    if cores < cores_needed:
        return f"{NOT_RUN} (needs {cores_needed} cores; this machine has {cores})", None
    packed, single = _row(raw, "noop", "procs-packed", k), _row(raw, "noop", "procs", k)
    if packed is not None:
        return f"{packed['chains_per_s']:.0f} models/s", packed["chains_per_s"] >= goal
    if single is not None:
        return f"no packing in this build; one chain per model: {single['chains_per_s']:.0f} models/s", False
    return NOT_RUN, None


def _cpu_vs_pool(raw: dict[str, Any]) -> tuple[str, bool | None]:
    ks = sorted({r["k"] for r in raw["runs"] if r["workload"] == "cpu"})
    pairs = [(k, mf, pool) for k in ks
             if (pool := _row(raw, "cpu", "pool", k)) and (mf := _row(raw, "cpu", "procs", k))]
    if not pairs:
        return NOT_RUN, None
    parts = []
    for k, mf, pool in pairs:
        part = f"k = {k}: {100 * (mf['wall'].median / pool['wall'].median - 1):+.1f}%"
        if conc := _row(raw, "cpu", "conc", k):
            part += f" (1 worker x k {100 * (conc['wall'].median / pool['wall'].median - 1):+.1f}%)"
        parts.append(part)
    return "; ".join(parts), max(mf["wall"].median / pool["wall"].median for _, mf, pool in pairs) <= 1.05


def _io16(raw: dict[str, Any]) -> tuple[str, bool | None]:
    io, conc = _row(raw, "io", "procs", 16), _row(raw, "io", "conc", 16)
    if io is None:
        return NOT_RUN, None
    figure = f"{io['efficiency']:.2f}" + (f" (1 worker x k: {conc['efficiency']:.2f})" if conc else "")
    return figure, io["efficiency"] >= 0.95


def _submit(raw: dict[str, Any]) -> tuple[str, bool | None]:
    prod = {p["models"]: p for p in raw.get("producer", []) if p["form"] == "list" and not p.get("pack")}
    ten, hundred = prod.get(10_000), prod.get(100_000)
    if ten is None and hundred is None:
        return NOT_RUN, None
    rss = max(p["rss_peak_mb"] for p in prod.values())
    figure = " / ".join(f"{p['submit_s']:.1f} s" if p else "-" for p in (ten, hundred))
    met = ((ten is None or ten["submit_s"] < 2) and (hundred is None or hundred["submit_s"] < 20)
           and rss < 1024)
    return f"{figure}, peak RSS {rss:.0f} MB (list form, default pack, submit only; validation apart)", met


def targets(raw: dict[str, Any]) -> list[Target]:
    """Issue 9's targets, each with what this run measured (met judged on modelfleet's default
    shape: k workers x 1, packed where the build packs)."""
    cores = raw["machine"]["cores"]
    return [
        ("no-op, one chain per model (`pack: 1`), vs the hand-written Celery peer, same k: >= 0.9x",
         "0.27x", *_peer_ratio(raw)),
        ("no-op with packing, 8 workers on 16 cores: >= 2,000 models/s", "125 models/s",
         *_packed_rate(raw, 8, 2000, 16)),
        (f"no-op with packing, 2 workers ({cores} cores): >= 400 models/s", "54 models/s",
         *_packed_rate(raw, 2, 400, 1)),
        ("45 Walmart stores, Ridge, 2 workers, vs the loop: >= 1.6x", "0.69x",
         *_vs_loop(raw, "tiny", "procs", 2, 1.6)),
        ("450 small per-store models, `submit --wait` on 2 workers vs a plain loop, "
         "CLI start included: >= 1.0x", "0.10x", *_vs_loop(raw, "small450", "cli", 2, 1.0)),
        (f"CPU-bound vs Pool at every k up to the cores ({cores} here): within 5%", "-25% at k = 4, 8",
         *_cpu_vs_pool(raw)),
        ("I/O-bound, k = 16: efficiency >= 0.95", "0.81", *_io16(raw)),
        ("submit 10,000 / 100,000 models: < 2 s / < 20 s, RSS < 1 GB", "10.7 s / -", *_submit(raw)),
    ]


def _platform_cpu(raw: dict[str, Any], method: str, k: int) -> tuple[float, float] | None:
    """(modelfleet CPU ms per model on the no-op workload, the same minus the loop's: the
    platform's own share, as issue 18 defines it) for one method and k, if this run has them."""
    mf, loop = _row(raw, "noop", method, k), _row(raw, "noop", "loop", 1)
    if mf is None or loop is None or mf["cpu_ms"] is None or loop["cpu_ms"] is None:
        return None
    return mf["cpu_ms"], mf["cpu_ms"] - loop["cpu_ms"]


def _noop_cpu(raw: dict[str, Any]) -> tuple[str, bool | None]:
    ks = sorted({r["k"] for r in raw["runs"] if r["workload"] == "noop" and r["method"] == "procs-packed"})
    found = [(k, got) for k in ks if (got := _platform_cpu(raw, "procs-packed", k))]
    if not found:
        return NOT_RUN, None
    return ("; ".join(f"k = {k}: {own:.1f} ms ({total:.1f} ms in all)" for k, (total, own) in found),
            max(own for _, (_, own) in found) <= 2.0)


def _chain_vs_peer_cpu(raw: dict[str, Any]) -> tuple[str, bool | None]:
    """Platform CPU per chain (modelfleet's minus the loop's, the stage bodies: issue 18's
    measure, as for the packed row) over the peer's, and the whole CPU's ratio beside it."""
    ks = sorted({r["k"] for r in raw["runs"] if r["workload"] == "noop" and r["method"] == "peer"})
    pairs = [(k, got, peer["cpu_ms"]) for k in ks
             if (peer := _row(raw, "noop", "peer", k)) and peer["cpu_ms"]
             and (got := _platform_cpu(raw, "procs", k))]
    if not pairs:
        return NOT_RUN, None
    return ("; ".join(f"k = {k}: {own / p:.2f}x ({own:.1f} vs {p:.1f} ms; in all {total:.1f} ms, "
                      f"{total / p:.2f}x)" for k, (total, own), p in pairs),
            max(own / p for _, (_, own), p in pairs) <= 1.2)


def _cpu16(raw: dict[str, Any]) -> tuple[str, bool | None]:
    mf, pool = _row(raw, "cpu", "procs", 16), _row(raw, "cpu", "pool", 16)
    if mf is None or pool is None:
        return f"{NOT_RUN} (needs 16 cores; this machine has {raw['machine']['cores']})", None
    behind = mf["wall"].median / pool["wall"].median - 1
    return f"{100 * behind:+.1f}% vs Pool(16)", behind <= 0.05


def targets18(raw: dict[str, Any]) -> list[Target]:
    """Issue 18's targets that this bench measures (the worker start is bench/cold_start.py's,
    segment predict bench/predict_segments.py's): each with this run's figure."""
    cores = raw["machine"]["cores"]
    small8 = (_vs_loop(raw, "small450", "cli", 8, 3.0) if cores >= 16
              else (f"{NOT_RUN} (needs 16 cores; this machine has {cores})", None))
    return [
        (f"450 small per-store models, `submit --wait` on 2 workers ({cores} cores) vs the in-process "
         "loop, CLI start included: >= 1.0x", "0.32x (2 cores)", *_vs_loop(raw, "small450", "cli", 2, 1.0)),
        ("the same on 8 workers, 16 cores: >= 3x", "0.41x", *small8),
        ("platform CPU per model, no-op, packed (`pack: auto`; modelfleet's CPU minus the loop's): "
         "<= 2 ms", "6.6 ms (2 cores) / 8.9 ms (16 cores)", *_noop_cpu(raw)),
        ("no-op, one chain per model (`pack: 1`): platform CPU per chain (modelfleet's minus the "
         "loop's) <= 1.2x the hand-written Celery peer's",
         "2.1x (35 vs 17 ms)", *_chain_vs_peer_cpu(raw)),
        ("CPU-bound, k = 16 on 16 cores: within 5% of Pool", "7% behind", *_cpu16(raw)),
        ("submit 10,000 / 100,000 models: < 2 s / < 20 s, RSS < 1 GB (kept)", "met", *_submit(raw)),
    ]


def targets_table(raw: dict[str, Any], which: list[Target] | None = None, issue: int = 9) -> str:
    return (f"| target | at issue {issue} | this run | met |\n|---|---|---|---|\n" + "".join(
        f"| {what} | {was} | {fig} | {'-' if ok is None else 'yes' if ok else 'no'} |\n"
        for what, was, fig, ok in (targets(raw) if which is None else which)))


def markdown(raw: dict[str, Any], plot_name: str | None) -> str:
    packing = raw.get("packing")
    parts = [f"# Scaling benchmark results\n\nMachine: {as_markdown(raw['machine'])}.\n",
             f"Run: `{raw['command']}` at {raw['started']} ({raw['duration_s'] / 60:.1f} min), "
             f"{raw['repeats']} repeats per row unless its wall column shows a single figure "
             f"(the I/O loop and the I/O rows whose ideal time is over 30 s run once); load average "
             f"{raw['machine']['load_average']} at start, {raw['load_after']} at the end. Packing rows "
             f"(`pack: auto`): {'yes' if packing else 'none (no `pack` key in this build, or --no-pack)'}.\n",
             "**A quick run: small sizes, one repeat, to debug the bench; its figures are not results.**\n"
             if raw.get("quick") else "",
             "### Targets (issue 18)\n\nMet is judged on modelfleet's default shape (k workers x 1, "
             "`pack: auto`). The worker start (target 3) is measured by `bench/cold_start.py` and "
             "segment predict (target 4) by `bench/predict_segments.py`.\n\n"
             + targets_table(raw, targets18(raw), 18),
             "### Targets (issue 9)\n\nMet is judged on modelfleet's default shape (k workers x 1, "
             "`pack: auto` where the build packs).\n\n" + targets_table(raw),
             "Wall time runs from the call to `submit` (the peer: to its send) to the last model's deploy "
             "(workers started and answering a ping before t0; their startup is the last column); for "
             "`modelfleet submit --wait` it is the command's own run time, process start included. "
             "Efficiency = ceil(n/k) x t_chain / wall; overhead = wall x k / n - t_chain; "
             "CPU ms/model = CPU time of the loop process, or of the worker processes (pool "
             "children included) plus redis-server, over n. "
             "Every modelfleet batch runs with `no_cache=True`; its workers log at INFO, "
             "the peer's at WARNING.\n",
             f"![speedup vs k]({plot_name})\n" if plot_name else ""]
    for w in raw["workloads"]:
        parts.append(table(raw, w))
        if w["name"] == "noop" and (peer := peer_table(raw)):
            parts.append(peer)
    if raw.get("producer"):
        parts.append("### Producer: validate and submit\n\n" + producer_table(raw))
    return "\n".join(parts)


# (method, marker and line, colour): one colour per method family in every panel.
PLOT_STYLE = (("pool", "s-", "C0"), ("peer", "x-", "C1"), ("procs", "o-", "C2"), ("conc", "^-", "C3"),
              ("procs-packed", "o--", "C2"), ("conc-packed", "^--", "C3"))


def plotted(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The workloads drawn as curves: small450 has one k, its figure is in the targets and its table."""
    return [w for w in raw["workloads"] if len(w["ks"]) > 1]


def plot(raw: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    workloads = plotted(raw)
    cols = min(len(workloads), 2)
    lines = -(-len(workloads) // cols)
    fig, axes = plt.subplots(lines, cols, figsize=(5.5 * cols, 4.2 * lines), squeeze=False)
    for ax in axes.flat[len(workloads):]:
        ax.set_visible(False)
    for ax, w in zip(axes.flat, workloads, strict=False):
        data = rows(raw, w["name"])
        ks = sorted({r["k"] for r in data})
        n = w["n"]
        ax.plot(ks, [n / -(-n // k) for k in ks], "k--", label="ideal n / ceil(n/k)")
        for method, style, colour in PLOT_STYLE:
            pts = sorted((r["k"], r["speedup"]) for r in data if r["method"] == method)
            if method.startswith("conc"):  # k = 1 of modelfleet is the same for both shapes
                base = method.replace("conc", "procs")
                pts = sorted(set(pts) | {(r["k"], r["speedup"]) for r in data
                                         if r["method"] == base and r["k"] == 1})
            if len(pts) > (1 if method.startswith("conc") else 0):
                text = next(r["label"] for r in data if r["method"] == method)
                ax.plot(*zip(*pts, strict=True), style, color=colour, label=text)
        ax.axhline(1.0, color="grey", lw=0.8, label="plain loop")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("k (worker processes)")
        ax.set_ylabel("speedup over the plain loop (log)")
        ax.set_title(f"{w['title']}, n = {n}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"modelfleet scaling on {raw['machine']['cores']} cores", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
