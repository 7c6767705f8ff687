"""The batch page's HTML: server-rendered, inline CSS, a meta refresh, no script.

Every text that comes from a record (batch and model names, error texts, workers,
reasons) goes through `esc`; every URL part through `quote`. The server also sends a
Content-Security-Policy that allows no script at all, so a slip here cannot run one.
"""

from __future__ import annotations

import html
import time
from urllib.parse import quote

from producer.batchview import BatchSummary, BatchView, ModelProgress
from producer.provenance import describe
from producer.status import ModelRow
from workers.contracts import LOWER_IS_BETTER
from workers.settings import STAGES

# Seconds between reloads while something may still change.
REFRESH = 5
# Rows per metric in the leaderboard (?top=N, 0: all).
TOP = 20
# Rows of the models table (?rows=N, 0: all): 2,000 models are about 1 MB of HTML.
ROWS = 2000

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em 2em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.1em;margin:1.4em 0 .4em}
a{color:#0b5cad;text-decoration:none}a:hover{text-decoration:underline}
table{border-collapse:collapse;background:#fff}td,th{padding:3px 8px;border:1px solid #ddd;text-align:left}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#777}.chip{display:inline-block;padding:1px 7px;margin-right:4px;border-radius:9px;color:#fff}
.done,.deployed,.promoted{background:#2e8540}.registered{background:#8a6d00}.running{background:#0b5cad}.retrying{background:#c77c00}
.failed{background:#c0392b}.cancelled{background:#7f7f7f}.pending,.queued{background:#bbb}
td.done,td.running,td.retrying,td.failed,td.cancelled,td.pending{color:#fff;text-align:center;min-width:5em}
td.pending{background:#eee;color:#999}td.done a,td.running a,td.retrying a,td.failed a{color:inherit}
.stage{margin-right:1.5em;white-space:nowrap;font-variant-numeric:tabular-nums}
.bar{display:inline-block;width:110px;height:10px;background:#e3e3e3;vertical-align:middle}
.bar span{display:block;height:100%;background:#2e8540}
pre{white-space:pre-wrap;word-break:break-word;max-height:12em;overflow:auto;margin:0;
background:#fff4f2;padding:4px 6px;border-left:3px solid #c0392b}
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} s"


def _page(title: str, body: str, refresh: bool) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH}">' if refresh else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>")


def _chips(counts: dict[str, int]) -> str:
    return "".join(f'<span class="chip {esc(s)}">{esc(s)} {n}</span>' for s, n in sorted(counts.items()))


def flower_tasks_url(flower: str, batch_id: str, model: str | None = None) -> str:
    """Flower's tasks page searching for the batch's stage tasks (or one model's).

    Flower takes no free search from the URL, only `?name=`, `?state=`, `?worker=`,
    which its page turns into `name:VALUE` without escaping: `name=modelfleet. BATCH`
    becomes the search `name:modelfleet. BATCH`, i.e. our stage tasks whose label
    (their args, workers/labels.py) holds the batch id; `"model=NAME "` (quoted, with
    its space) narrows it to one model, also inside a pack.
    """
    search = f'modelfleet. "model={model} " {batch_id}' if model else f"modelfleet. {batch_id}"
    return f"{flower}/tasks?name={quote(search, safe='')}"


def index_page(batches: list[BatchSummary], flower: str) -> str:
    rows = "".join(
        f'<tr><td><a href="/batch/{quote(b.batch_id, safe="")}">{esc(b.batch_id)}</a></td>'
        f'<td>{esc(b.name)}</td><td>{when(b.created)}</td><td>{esc(b.submitted_by)}</td>'
        f'<td class="n">{b.models}</td>'
        f'<td>{_chips(b.counts) if b.counts is not None else "<span class=muted>not counted</span>"}</td>'
        f'<td><a href="{esc(flower_tasks_url(flower, b.batch_id))}">tasks</a></td></tr>'
        for b in batches)
    table = (f"<table><tr><th>batch</th><th>name</th><th>submitted</th><th>by</th><th>models</th>"
             f"<th>status</th><th>Flower</th></tr>{rows}</table>" if batches
             else '<p class="muted">No batches yet: <code>modelfleet submit SPEC</code>.</p>')
    body = (f'<h1>modelfleet batches</h1><p class="muted">newest first; '
            f'<a href="{esc(flower)}/">Flower</a></p>{table}')
    return _page("modelfleet batches", body, refresh=True)


def batch_page(view: BatchView, flower: str, top: int = TOP, rows: int = ROWS) -> str:
    status = view.status
    total = len(status.rows)
    bars = "".join(
        f'<span class="stage">{s} <span class="bar"><span style="width:{_percent(done, total)}%">'
        f"</span></span> {done} / {total}</span>" for s, done in status.stages_done.items())
    eta = f", about {status.eta:.0f} s to go" if status.eta is not None else ""
    body = (f'<p><a href="/">&larr; batches</a></p><h1>{esc(status.batch_id)}</h1>'
            f'<p class="muted">submitted {when(view.created)} {esc(describe(status.origin))}; '
            f'{"done after" if status.done else "running for"} {status.elapsed:.0f} s{eta}; '
            f'<a href="{esc(flower_tasks_url(flower, status.batch_id))}">its tasks in Flower</a></p>'
            f"<p>{_chips(status.counts)}</p><p>{bars}</p>"
            f"{_failures(view.failures(), flower)}{_leaderboards(view, top)}"
            f"{_models(view.models, flower, status.batch_id, rows)}")
    return _page(status.batch_id, body, refresh=not status.done)


def _percent(part: int, whole: int) -> int:
    return round(100 * part / whole) if whole else 0


def _task_link(flower: str, model: ModelProgress, stage: str, text: str) -> str:
    task_id = model.task_ids.get(stage)
    if not task_id:
        return esc(text)
    return f'<a href="{esc(flower)}/task/{quote(task_id, safe="")}">{esc(text)}</a>'


def _failed_stage(model: ModelProgress) -> str:
    return next((s for s, state in model.stages.items() if state in ("failed", "retrying")), "")


def _failures(failed: list[ModelProgress], flower: str) -> str:
    if not failed:
        return ""
    rows = "".join(
        f"<tr><td>{esc(m.name)}</td><td>{esc(m.status)} at "
        f"{_task_link(flower, m, _failed_stage(m), _failed_stage(m) or '?')}</td>"
        f"<td><pre>{esc(m.error)}</pre></td></tr>" for m in failed)
    return (f"<h2>Failures ({len(failed)})</h2><table><tr><th>model</th><th>where</th>"
            f"<th>error</th></tr>{rows}</table>")


def _leaderboards(view: BatchView, top: int) -> str:
    out = []
    for metric, rows in view.leaderboards().items():
        direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        shown = rows[:top] if top > 0 else rows
        more = f", the best {len(shown)} of {len(rows)}" if len(shown) < len(rows) else ""
        out.append(f'<h2>Leaderboard: {esc(metric)} <span class="muted">({direction}{more})</span></h2>'
                   "<table><tr><th>#</th><th>model</th><th>value</th><th>version</th>"
                   f"<th>alias moved</th><th>done after</th></tr>"
                   f"{''.join(_leader_row(i, r) for i, r in enumerate(shown, 1))}</table>")
    return "".join(out)


def _leader_row(rank: int, row: ModelRow) -> str:
    moved = "yes" if row.promoted else (f"no: {row.reason}" if row.reason else "no")
    return (f'<tr><td class="n">{rank}</td><td>{esc(row.name)}</td><td class="n">{row.value:.4f}</td>'
            f'<td class="n">{row.version or ""}</td><td>{esc(moved)}</td>'
            f'<td class="n">{seconds(row.seconds)}</td></tr>')


def _models(models: list[ModelProgress], flower: str, batch_id: str, limit: int) -> str:
    head = "".join(f"<th>{s}</th>" for s in STAGES)
    shown = models[:limit] if limit > 0 else models
    more = (f' <span class="muted">(the first {len(shown)}; <a href="?rows=0">all</a>)</span>'
            if len(shown) < len(models) else "")
    rows = "".join(
        f'<tr><td><a href="{esc(flower_tasks_url(flower, batch_id, m.name))}">{esc(m.name)}</a></td>'
        f'<td><span class="chip {esc(m.status)}">{esc(m.status)}</span></td>'
        + "".join(f'<td class="{esc(state)}">{_stage_cell(flower, m, s, state)}</td>'
                  for s, state in m.stages.items())
        + "</tr>" for m in shown)
    return (f"<h2>Models ({len(models)}){more}</h2><table><tr><th>model</th><th>status</th>{head}</tr>"
            f"{rows}</table>")


def _stage_cell(flower: str, model: ModelProgress, stage: str, state: str) -> str:
    # Flower knows a stage's task once it was sent: not a pending (or cancelled) one.
    if state in ("pending", "cancelled"):
        return esc(state)
    return _task_link(flower, model, stage, state)
