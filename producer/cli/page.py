"""The batch page `modelfleet up` serves beside Flower: a stdlib HTTP server on a thread
of the `up` process, on the loopback, behind the same basic auth as Flower.

    /                 the newest batches with their counts
    /batch/BATCH_ID   one batch: stage progress per model, failures, leaderboard, Flower links
"""

from __future__ import annotations

import base64
import binascii
import hmac
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis

from producer.batchview import batch_view, recent_batches
from producer.cli.page_html import ROWS, TOP, esc, index_page
from producer.cli.page_html import batch_page as render_batch
from workers.runtime import Runtime

# No script, no frames, nothing loaded from elsewhere: the page is HTML and inline CSS only.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class _Handler(BaseHTTPRequestHandler):
    server: _PageServer

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        if not self.server.authorized(self.headers.get("Authorization", "")):
            self._send(HTTPStatus.UNAUTHORIZED, "<p>Log in with Flower's user and password.</p>",
                       {"WWW-Authenticate": 'Basic realm="modelfleet", charset="UTF-8"'})
            return
        url = urlsplit(self.path)
        try:
            if url.path == "/":
                self._send(HTTPStatus.OK, index_page(recent_batches(self.server.runtime),
                                                     self.server.flower_url))
            elif url.path.startswith("/batch/"):
                view = batch_view(self.server.runtime, unquote(url.path.removeprefix("/batch/")))
                page = render_batch(view, self.server.flower_url, _number(url.query, "top", TOP),
                                    _number(url.query, "rows", ROWS))
                self._send(HTTPStatus.OK, page)
            else:
                self._send(HTTPStatus.NOT_FOUND, '<p>Not found. <a href="/">batches</a></p>')
        except KeyError as exc:  # no such batch
            self._send(HTTPStatus.NOT_FOUND, f'<p>{esc(exc.args[0])}. <a href="/">batches</a></p>')
        except (redis.exceptions.RedisError, OSError) as exc:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, f"<p>Redis is unreachable: {esc(exc)}</p>")

    def _send(self, code: HTTPStatus, page: str, headers: dict[str, str] | None = None) -> None:
        body = page.encode()
        self.send_response(code)
        for name, value in {**_HEADERS, **(headers or {}),
                            "Content-Type": "text/html; charset=utf-8",
                            "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # `up` prints its own lines; a line per request would bury them


def _number(query: str, name: str, default: int) -> int:
    """`?NAME=N` (`top`: rows per leaderboard, `rows`: of the models table; 0: all);
    the default if absent or not a number."""
    try:
        return max(int(parse_qs(query).get(name, [str(default)])[0]), 0)
    except ValueError:
        return default


class _PageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], runtime: Runtime, flower_url: str,
                 user: str, password: str) -> None:
        super().__init__(address, _Handler)
        self.runtime = runtime
        self.flower_url = flower_url
        self._expected = f"{user}:{password}".encode()

    def authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._expected)


class BatchPage:
    """The page's server on `address:port` (0: a free port) until stopped; a context manager."""

    def __init__(self, runtime: Runtime, flower_url: str, user: str, password: str,
                 port: int = 0, address: str = "127.0.0.1") -> None:
        try:
            self._server = _PageServer((address, port), runtime, flower_url, user, password)
        except OSError as exc:  # e.g. the port is taken: say which, as for Flower
            raise RuntimeError(f"the batch page cannot listen on {address}:{port}: {exc}") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="batch-page",
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> BatchPage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
