"""The batch page against a real Redis index: a 1,000-model batch written through the
real storage classes, read and rendered by the real server over HTTP."""

from __future__ import annotations

import base64
import html
import re
import time
import urllib.error
import urllib.request

import pytest

from producer.batchview import batch_view, recent_batches
from producer.cli.page import BatchPage
from producer.cli.page_html import batch_page
from tests.support.synthetic import HOSTILE, synthetic_batch
from workers.runtime import Runtime

pytestmark = pytest.mark.integration

FLOWER = "http://127.0.0.1:5555"


def _get(url: str, auth: tuple[str, str] | None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def test_a_1000_model_batch_reads_and_renders_fast(runtime: Runtime) -> None:
    batch_id = synthetic_batch(runtime, 1000)
    # Warm the connection pool, then time the read and the render apart.
    batch_view(runtime, batch_id)
    started = time.perf_counter()
    view = batch_view(runtime, batch_id)
    read = time.perf_counter() - started
    page = batch_page(view, FLOWER)
    total = time.perf_counter() - started
    with BatchPage(runtime, FLOWER, "u", "p") as server:
        started = time.perf_counter()
        code, served, _ = _get(f"{server.url}/batch/{batch_id}", ("u", "p"))
        fetched = time.perf_counter() - started
    assert code == 200 and served.count('<span class="chip') == page.count('<span class="chip')
    print(f"\n1,000 models: read {read * 1000:.0f} ms, read + render {total * 1000:.0f} ms, "
          f"over HTTP {fetched * 1000:.0f} ms, {len(page) // 1024} KB of HTML")
    failed = sum(1 for i in range(1000) if i % 50 == 0)
    running = sum(1 for i in range(1000) if i % 7 == 0 and i % 50 != 0)
    assert len(view.models) == 1000
    assert view.status.counts == {"deployed": 1000 - failed - running, "failed": failed,
                                  "running": running}
    # One row per model in the models table; every started stage linked to its Flower task:
    # a deployed model's four, a running one's two, a failed one's two (+ 1 in the failures).
    assert len(re.findall(r'<tr><td><a href="[^"]+">model-\d+</a></td><td><span class="chip', page)) == 1000
    assert len(re.findall(r'href="http://127\.0\.0\.1:5555/task/[0-9a-f]{32}"', page)) == \
        (1000 - failed - running) * 4 + running * 2 + failed * 3
    # The hostile error text is shown, escaped, never as markup.
    assert "<script>" not in page and "<img" not in page
    assert html.escape(HOSTILE, quote=True) in page
    # Shared 2-core machine: generous; the figure above is what the README quotes.
    assert total < 2.0


def test_served_with_basic_auth_only(runtime: Runtime) -> None:
    batch_id = synthetic_batch(runtime, 30)
    with BatchPage(runtime, FLOWER, "admin", "s3cret:pass") as page:
        # Without credentials, with wrong ones, with a broken header: 401 and no data.
        for auth in (None, ("admin", "wrong"), ("other", "s3cret:pass")):
            code, body, headers = _get(f"{page.url}/batch/{batch_id}", auth)
            assert code == 401 and batch_id not in body
            assert headers["WWW-Authenticate"].startswith("Basic ")
        code, body, headers = _get(f"{page.url}/", ("admin", "s3cret:pass"))
        assert code == 200 and f'href="/batch/{batch_id}"' in body
        assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none': none
        code, body, _ = _get(f"{page.url}/batch/{batch_id}?top=5", ("admin", "s3cret:pass"))
        assert code == 200 and "the best 5 of" in body
        assert '<meta http-equiv="refresh"' in body  # some models still run
        code, body, _ = _get(f"{page.url}/batch/no-such-batch", ("admin", "s3cret:pass"))
        assert code == 404 and "no batch" in body


def test_the_list_counts_every_status_within_its_budget(runtime: Runtime) -> None:
    older = synthetic_batch(runtime, 60)
    newer = synthetic_batch(runtime, 100)
    listed = {b.batch_id: b for b in recent_batches(runtime, limit=2, budget=150)}
    assert listed[newer].models == 100 and listed[older].models == 60
    failed = sum(1 for i in range(100) if i % 50 == 0)
    running = sum(1 for i in range(100) if i % 7 == 0 and i % 50 != 0)
    assert listed[newer].counts == {"deployed": 100 - failed - running, "failed": failed, "running": running}
    assert listed[older].counts is None  # 100 + 60 models: over the budget, listed uncounted
