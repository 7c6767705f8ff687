"""The batch page as a user meets it: `modelfleet up --workers 2`, a batch with one
failing model submitted from another shell, the page fetched over HTTP with Flower's
credentials, its links followed into the real Flower (and, with Chromium installed,
Flower's tasks page searched for the batch)."""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from producer.local import wait_for
from tests.conftest import REPO, write_spec
from tests.support.cluster import FAULTY
from tests.support.processes import Output, start_up
from tests.support.synthetic import HOSTILE
from workers.runtime import Runtime
from workers.settings import STAGES, Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PREFIXES = '["sklearn.", "tests.support."]'


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _submit(spec: Path, broker_url: str, wait: bool) -> tuple[str, subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
    env.update(MODELFLEET_BROKER_URL=broker_url, MODELFLEET_ALLOWED_ESTIMATOR_PREFIXES=PREFIXES,
               PYTHONPATH=str(REPO))
    args = [sys.executable, "-m", "producer", "submit", str(spec),
            *(["--wait", "--timeout", "240"] if wait else [])]
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    found = re.search(r"submitted batch (\S+)", result.stdout)
    assert found, result.stdout + result.stderr
    return found.group(1), result


def _tree(name: str, dataset: str) -> dict[str, object]:
    return {"name": name, "task": "classification", "dataset": {"kind": "sklearn", "name": dataset},
            "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 3}}}


def _flower_search_dom(flower_url: str, user: str, password: str) -> str:
    """Flower's tasks page, as Chromium leaves it once its table has loaded."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH: the Flower search link was not opened in a browser")
    authed = flower_url.replace("http://", f"http://{user}:{password}@", 1)
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              f"--user-data-dir={profile}", "--virtual-time-budget=8000", "--dump-dom",
                              authed], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


def test_up_serves_the_batch_page_with_progress_failures_and_flower_links(tmp_path: Path) -> None:
    with start_up(tmp_path, 2, MODELFLEET_ALLOWED_ESTIMATOR_PREFIXES=PREFIXES,
                  PYTHONPATH=str(REPO)) as (proc, out):
        broker_url = out.wait_for(r"^broker\s+(redis://\S+)$", 180).group(1)
        flower_url, user = out.wait_for(r"^flower\s+(http://\S+?)/\s+user (\S+)$", 60).groups()
        password = out.wait_for(r"^\s+password (\S+)\s", 10).group(1)
        page = out.wait_for(r"^batches\s+(http://127\.0\.0\.1:\d+)/\s", 10).group(1)
        out.wait_for(r"^up \(pid \d+\)", 30)
        auth = (user, password)

        # The page is behind Flower's credentials, and only those.
        assert _get(f"{page}/")[0] == 401
        assert _get(f"{page}/", (user, password + "x"))[0] == 401

        # Another batch first, so that the Flower search below has something to leave out.
        other, _ = _submit(write_spec(tmp_path, {"name": "page-other", "pack": 1,
                                                 "models": [_tree("other-iris", "iris")]}, "other.yaml"),
                           broker_url, wait=False)
        spec = write_spec(tmp_path, {"name": "page-smoke", "pack": 1,
                                     "models": [_tree("page-iris", "iris"), _tree("page-wine", "wine"),
                                                {"name": "page-broken", "task": "classification",
                                                 "dataset": {"kind": "sklearn",
                                                                                    "name": "iris"},
                                                 "estimator": {"class_path": FAULTY, "params": {
                                                     "fail": "value", "message": HOSTILE}}}]})
        batch_id, result = _submit(spec, broker_url, wait=True)
        assert result.returncode == 1, result.stdout + result.stderr  # one model failed

        code, index = _get(f"{page}/", auth)
        assert code == 200 and f'href="/batch/{batch_id}"' in index and f'href="/batch/{other}"' in index
        code, body = _get(f"{page}/batch/{batch_id}", auth)
        assert code == 200, body

        # Every model with its stages: the trees done at every stage, the broken one failed at train.
        def stages_of(model: str) -> list[str]:
            row = re.search(rf'<tr><td><a href="[^"]+">{model}</a></td><td><span class="chip (\w+)">.*?</tr>',
                            body)
            assert row, f"no row for {model}"
            return re.findall(r'<td class="(\w+)">', row.group(0))

        assert stages_of("page-iris") == stages_of("page-wine") == ["done"] * 4
        assert stages_of("page-broken") == ["done", "failed", "pending", "pending"]
        finished = re.findall(r"\b(promoted|registered) (\d+)\b", body)
        assert sum(int(n) for _, n in dict(finished).items()) == 2 and "failed 1" in body
        # The failure's error, escaped: shown as text, never as markup.
        assert html.escape(f"ValueError: {HOSTILE}", quote=True) in body
        assert "<script>" not in body and "<img" not in body
        # The leaderboard: both trees ranked by accuracy.
        board = body[body.index("Leaderboard: accuracy"):]
        assert "page-iris" in board and "page-wine" in board

        # Each started stage links to its task in Flower, and Flower knows every one of them.
        settings = Settings(broker_url=broker_url, artifact_root=tmp_path / "artifacts")  # type: ignore[arg-type]
        task_ids = Runtime.from_settings(settings).tracker.task_ids(batch_id)
        started = {m: STAGES if m != "page-broken" else STAGES[:2] for m in task_ids}
        links = [f"{flower_url}/task/{task_ids[m][STAGES.index(s)]}" for m, stages in started.items()
                 for s in stages]
        assert len(links) == 10 and all(f'href="{link}"' in body for link in links)
        assert f"{flower_url}/task/{task_ids['page-broken'][2]}" not in body  # evaluate never ran
        for link in links:
            wait_for(lambda link=link: _get(link, auth)[0] == 200, 30, f"Flower to know {link}")  # type: ignore[misc]

        # The batch's tasks in Flower: its tasks page, searched for the batch ...
        search = re.search(r'href="([^"]+/tasks\?name=[^"]+)">its tasks in Flower', body)
        assert search, body
        dom = _flower_search_dom(html.unescape(search.group(1)), user, password)
        ours = {task_ids[m][STAGES.index(s)] for m, stages in started.items() for s in stages}
        assert _rows(dom) == ours, dom[-3000:]
        assert Runtime.from_settings(settings).tracker.task_ids(other)["other-iris"][0] not in dom
        # ... and searched for one model (the model's name links there).
        search = re.search(r'<a href="([^"]+/tasks\?name=[^"]+)">page-broken</a>', body)
        assert search, body
        dom = _flower_search_dom(html.unescape(search.group(1)), user, password)
        assert _rows(dom) == set(task_ids["page-broken"][:2]), dom[-3000:]
        assert_stops(proc, out)


def _rows(dom: str) -> set[str]:
    """The task ids of the rows Flower's tasks table lists (DataTables' row ids)."""
    return set(re.findall(r'<tr[^>]*\bid="([0-9a-f-]{36})"', dom))


def assert_stops(proc: subprocess.Popen[str], out: Output) -> None:
    proc.send_signal(2)  # Ctrl-C: the page's thread stops with everything else
    assert proc.wait(120) == 0, out.text()
    assert "stopped" in out.text()
