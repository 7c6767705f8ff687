"""The batch page's pieces without services: stage states, HTML escaping, links, auth."""

from __future__ import annotations

import base64
import html
from urllib.parse import parse_qs, urlsplit

import pytest

from producer.batchview import BatchSummary, BatchView, ModelProgress, stage_states
from producer.cli.page import _number, _PageServer
from producer.cli.page_html import TOP, batch_page, flower_tasks_url, index_page
from producer.status import summarize
from workers.settings import STAGES

HOSTILE = '</pre><script>alert("x")</script><a href="javascript:alert(1)">&amp;'


@pytest.mark.parametrize(("state", "expected"), [
    ({"status": "queued", "stage": ""}, ["pending"] * 4),
    ({"status": "running", "stage": "train", "done_preprocess": "1"},
     ["done", "running", "pending", "pending"]),
    ({"status": "retrying", "stage": "evaluate", "done_preprocess": "1", "done_train": "2"},
     ["done", "done", "retrying", "pending"]),
    ({"status": "failed", "stage": "train", "done_preprocess": "1"},
     ["done", "failed", "pending", "pending"]),
    # Failed before any stage began (e.g. a poisoned first message): the first stage failed.
    ({"status": "failed", "stage": "", "error": "x"}, ["failed", "pending", "pending", "pending"]),
    # Failed after its stage was recorded done: the next stage is where it stopped.
    ({"status": "failed", "stage": "train", "done_preprocess": "1", "done_train": "2"},
     ["done", "done", "failed", "pending"]),
    ({"status": "cancelled", "stage": "preprocess", "done_preprocess": "1"},
     ["done", "cancelled", "cancelled", "cancelled"]),
    ({"status": "deployed", "stage": "deploy", **{f"done_{s}": "1" for s in STAGES}}, ["done"] * 4),
])
def test_stage_states(state: dict[str, str], expected: list[str]) -> None:
    assert list(stage_states(state).values()) == expected


def _view(states: dict[str, dict[str, str]], task_ids: dict[str, list[str]]) -> BatchView:
    record = {"id": "b-1", "name": "b", "created": 1_700_000_000.0, "models": list(states),
              "primary_metrics": {n: "mae" for n in states}}
    models = [ModelProgress(n, st["status"], stage_states(st), dict(zip(STAGES, task_ids.get(n, []),
                                                                        strict=False)), st.get("error", ""))
              for n, st in states.items()]
    return BatchView(summarize(record, states), record["created"], "<me>", models)


def test_batch_page_escapes_errors_links_tasks_and_ranks_lower_is_better() -> None:
    done = {f"done_{s}": "1700000001" for s in STAGES}
    view = _view({
        "good": {"status": "deployed", **done, "metrics": '{"mae": 2.0}', "version": "3", "promoted": "1"},
        "better": {"status": "deployed", **done, "metrics": '{"mae": 1.0}', "version": "1",
                   "promoted": "0", "reason": "below <gate>"},
        "bad": {"status": "failed", "stage": "train", "done_preprocess": "1", "error": HOSTILE},
    }, {"good": ["g1", "g2", "g3", "g4"], "bad": ["p1", "p2", "p3", "p4"]})
    page = batch_page(view, "http://127.0.0.1:5555")
    assert "<script>" not in page and 'href="javascript:' not in page
    assert html.escape(HOSTILE, quote=True) in page
    assert "no: below &lt;gate&gt;" in page
    # The failed stage links to its task; stages never sent link nowhere.
    assert 'href="http://127.0.0.1:5555/task/p2">failed</a>' in page
    assert "/task/p3" not in page and "/task/g4" in page
    # mae: lower is better, so "better" ranks first.
    board = page[page.index("Leaderboard: mae"):]
    assert board.index(">better<") < board.index(">good<")
    # Every model is terminal (deployed or failed): the batch is done, the page stops reloading.
    assert view.status.done and '<meta http-equiv="refresh"' not in page


def test_flower_link_searches_the_batch_through_flowers_name_parameter() -> None:
    url = flower_tasks_url("http://127.0.0.1:5555", "quick-20261127-1-abc")
    parts = urlsplit(url)
    assert parts.path == "/tasks"
    # Flower's tasks page turns ?name=V into the search "name:V".
    assert "name:" + parse_qs(parts.query)["name"][0] == "name:modelfleet. quick-20261127-1-abc"


def test_index_page_lists_batches_and_says_when_there_are_none() -> None:
    assert "No batches yet" in index_page([], "http://f")
    page = index_page([BatchSummary("b-1", "b", 1_700_000_000.0, "me", 3, {"deployed": 2, "failed": 1})],
                      "http://f")
    assert 'href="/batch/b-1"' in page and "deployed 2" in page and "failed 1" in page
    # Beyond the count budget a batch is listed, not counted.
    page = index_page([BatchSummary("b-2", "b", 1_700_000_000.0, "me", 3, None)], "http://f")
    assert 'href="/batch/b-2"' in page and "not counted" in page


def _basic(user_password: str) -> str:
    return "Basic " + base64.b64encode(user_password.encode()).decode()


def test_basic_auth_takes_only_the_exact_credentials() -> None:
    server = _PageServer.__new__(_PageServer)  # no socket: only the check
    server._expected = b"admin:pa:ss"
    assert server.authorized(_basic("admin:pa:ss"))
    for header in ("", _basic("admin:pa"), _basic("admin:pa:ss "), "Bearer abc", "Basic !!notbase64",
                   "Basic " + base64.b64encode(b"admin:pa:ss").decode().lower()):
        assert not server.authorized(header)


def test_number_parameters() -> None:
    assert _number("", "top", TOP) == TOP and _number("top=5", "top", TOP) == 5
    assert _number("rows=0&top=3", "rows", 9) == 0 and _number("top=x", "top", TOP) == TOP
    assert _number("top=-3", "top", TOP) == 0


def test_models_table_shows_the_first_rows_and_links_to_all() -> None:
    view = _view({f"m{i}": {"status": "queued"} for i in range(5)}, {})
    page = batch_page(view, "http://f", rows=3)
    assert "Models (5)" in page and "the first 3" in page and 'href="?rows=0"' in page
    assert ">m2</a>" in page and ">m3</a>" not in page
    assert ">m4</a>" in batch_page(view, "http://f", rows=0)


def test_status_carries_the_sweepers_recovered_note_for_the_models_it_moved() -> None:
    note = "no message for train found after 5s; resent at 07:01:02"
    status = summarize({"id": "b", "name": "b", "created": 1700000000.0, "models": ["x", "y"]},
                       {"x": {"status": "running", "stage": "train", "recovered": note},
                        "y": {"status": "running", "stage": "train"}})
    assert [(r.name, r.recovered) for r in status.rows] == [("x", note), ("y", "")]
    assert [r["recovered"] for r in status.to_json()["rows"]] == [note, ""]
