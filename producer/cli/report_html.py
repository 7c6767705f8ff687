"""The report pages: plain HTML with inline CSS, every value escaped; numbers carry their
exact value in `data-value` (the page shows 4 decimals)."""

from __future__ import annotations

import datetime as dt
import json
from html import escape
from typing import Any

from producer.leaderboard import Section
from producer.provenance import describe
from workers.tracking import DEPLOYED

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;
     color:#1d2330;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde}
.meta{color:#5a6375;margin:.2rem 0 1rem} a{color:#2456c7;text-decoration:none}
a:hover{text-decoration:underline}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border-bottom:1px solid #e4e7ee;padding:.3rem .7rem;text-align:left;vertical-align:top}
th{background:#f3f5f9} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{color:#a32020} .pill{background:#e6f4ea;color:#1e6b34;border-radius:.6rem;padding:0 .5rem}
.plots{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start} figure{margin:0}
img{border:1px solid #e4e7ee} figcaption{color:#5a6375;font-size:.85rem}
pre{background:#f6f8fa;padding:.8rem;overflow-x:auto;font-size:.8rem} code{font-size:.85rem}
"""


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def number(value: Any, digits: int = 4, **data: str) -> str:
    """A table cell; a float shows `digits` decimals and keeps its exact value in data-value."""
    attrs = "".join(f' data-{k}="{escape(v)}"' for k, v in data.items())
    if isinstance(value, float):
        return f'<td class="num"{attrs} data-value="{value!r}">{value:.{digits}f}</td>'
    return f'<td class="num"{attrs}>{escape("" if value is None else str(value))}</td>'


def rows(head: list[str] | None, body: list[str]) -> str:
    header = "" if head is None else "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>\n"
    return "<table>" + header + "\n".join(body) + "</table>"


def when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def model_page(data: dict[str, Any], images: dict[str, str], files: str, back: str | None) -> str:
    """A model version's page; `images` maps a plot's kind to its path, `files` is the folder
    (relative) of its PNGs and report.json, `back` the batch page's path if there is one."""
    lin = data["lineage"]
    nav = f'<p><a href="{escape(back)}">&larr; batch {escape(lin["batch_id"])}</a></p>' if back else ""
    aliases = " ".join(f'<span class="pill">{escape(a)}</span>' for a in data["aliases"])
    head = (f"{nav}<h1>{escape(data['name'])} / version {data['version']} {aliases}</h1>"
            f'<p class="meta">{escape(data["task"])}, {escape(lin["estimator"])}, batch '
            f'{escape(lin["batch_id"])}, {data["n_test"]} test rows, registered {when(lin["created"])}</p>')
    metric_rows = [f'<tr><td>{escape(m)}{" (primary)" if m == data["primary_metric"] else ""}</td>'
                   f'{number(v, metric=m)}{_cv_cells(m, data["cv"].get(m))}</tr>'
                   for m, v in data["metrics"].items()]
    metric_rows += [f"<tr><td>{escape(m)} (cross-validation only)</td><td></td>{_cv_cells(m, cv)}</tr>"
                    for m, cv in data["cv"].items() if m not in data["metrics"]]
    metrics = "<h2>Metrics</h2>" + rows(["metric", "test split", "CV mean", "CV std"], metric_rows)
    plots = "".join(f'<figure><img src="{escape(src)}" alt="{escape(kind)}"><figcaption>{escape(kind)}'
                    f"</figcaption></figure>" for kind, src in images.items())
    if not plots:
        why = (data.get("plots") or {}).get("unavailable", "evaluated before reports existed")
        plots = f"<p>no plot data ({escape(why)})</p>"
    body = (head + metrics + f'<h2>Plots</h2><div class="plots">{plots}</div>' + _monitoring(data)
            + _features(data)
            + _lineage(data, lin) + f'<h2>Files</h2><p><a href="{escape(files)}/report.json">report.json'
            "</a> (all of the above as data)</p>")
    return page(f"{data['ref']} report", body)


def _monitoring(data: dict[str, Any]) -> str:
    """`modelfleet evaluate`'s checks of this model on new labelled rows, newest first."""
    checks = data.get("monitoring") or []
    if not checks:
        return ""
    body = [f'<tr class="{"failed" if c["flagged"] else ""}" data-evaluation="{escape(c["evaluation"])}">'
            f"<td>{when(c['when'])}</td>{number(c['version'])}<td>{escape(str(c['data'] or ''))}</td>"
            f"{number(c['rows'])}<td>{escape(str(c['metric']))}</td>{number(c['registered'])}"
            f"{number(c['now'])}{number(c['ratio'], 2)}"
            f"<td>{'flagged (&gt; ' + escape(str(c['tolerance'])) + 'x)' if c['flagged'] else 'ok'}</td></tr>"
            for c in checks]
    return ("<h2>Monitoring: new labelled data</h2>"
            + rows(["checked", "version", "data", "rows", "metric", "registered", "now", "ratio", "flag"],
                   body))


def _features(data: dict[str, Any]) -> str:
    imp = (data.get("plots") or {}).get("importances")
    if not imp:
        return ""
    title = f"<h2>Top features by {escape(imp['kind'])} ({imp['n_features']} in all)</h2>"
    return title + rows(["feature", imp["kind"]], [f"<tr><td>{escape(str(n))}</td>{number(float(v))}</tr>"
                                                   for n, v in imp["features"]])


def _cv_cells(metric: str, cv: dict[str, Any] | None) -> str:
    if not cv:
        return "<td></td><td></td>"
    return number(cv["mean"], cv=f"{metric} mean") + number(cv["std"], cv=f"{metric} std")


def _lineage(data: dict[str, Any], lin: dict[str, Any]) -> str:
    def code(value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return f"<code>{escape(text)}</code>"

    fields = ["dataset", "dataset_digest", "data_digest", "transform_digest", "model_digest", "report_digest",
              "estimator", "estimator_params", "preprocess", "libraries", "stage_versions", "git_commit",
              "git_dirty", "spec_path", "spec_digest", "submitted_by", "host", "tags", "decision", "search"]
    table = rows(None, [f"<tr><th>{escape(f)}</th><td>{code(lin.get(f))}</td></tr>" for f in fields
                        if f in lin])
    runs = rows(["stage", "run id", "seconds", "cache"], [
        f"<tr><td>{escape(stage)}</td><td><code>{escape(run_id or '')}</code></td>"
        f"{number(data['stage_seconds'].get(stage), 3)}"
        f"<td>{'hit' if stage in data['cache_hits'] else ''}</td></tr>"
        for stage, run_id in lin["run_ids"].items()])
    spec = ""
    if data["spec"]:
        spec = f"<h3>Spec as submitted</h3><pre>{escape(json.dumps(data['spec'], indent=1))}</pre>"
    return "<h2>Lineage</h2>" + table + "<h3>Runs</h3>" + runs + spec


def batch_page(data: dict[str, Any], links: dict[str, str]) -> str:
    """The batch's models ranked per task and metric; `links` maps a model to its page."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(data["counts"].items()))
    head = (f"<h1>Batch {escape(data['batch_id'])}</h1><p class=\"meta\">{escape(counts)}; submitted "
            f"{when(data['created'])} {escape(describe(data.get('origin') or data))}</p>")
    return page(f"batch {data['batch_id']}", head + "".join(_section(s, links) for s in data["sections"]))


def _section(part: Section, links: dict[str, str]) -> str:
    direction = "lower" if part.lower_is_better else "higher"
    others = sorted({m for e in part.rows for m in e.metrics} - {part.metric})
    body = []
    for rank, e in enumerate(part.rows, 1):
        name = (f'<a href="{escape(links[e.name])}">{escape(e.name)}</a>' if e.name in links
                else escape(e.name))
        status = e.status if not e.error or e.status in DEPLOYED else f"{e.status}: {e.error[:120]}"
        body.append(f'<tr class="{escape(e.status)}" data-model="{escape(e.name)}">'
                    f'<td class="num">{rank}</td><td>{name}</td>'
                    f"{number(e.value, metric=part.metric)}"
                    + "".join(number(e.metrics.get(m), metric=m) for m in others)
                    + f"{number(e.version)}<td>{'yes' if e.promoted else ''}</td><td>{escape(status)}</td>"
                    f"{number(e.compute_seconds, 2)}{number(e.queue_seconds, 2)}</tr>")
    title = (f"<h2>{escape(part.task)}: ranked by {escape(part.metric)} ({direction} is better), "
             f"{len(part.rows)} of {part.total} models</h2>")
    return title + rows(["#", "model", part.metric, *others, "version", "promoted", "status",
                         "compute s", "queue s"], body)
