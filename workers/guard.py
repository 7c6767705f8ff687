"""Refuse malformed task messages instead of letting them stop the worker.

Celery's consumer raises on some bodies that are not a task's (JSON null, a
bare string, a list; kombu lets `application/data` and `application/text`
bodies past `accept_content`), and an exception there stops the worker; the
message, restored unacked, then stops the next one. The stage tasks use this
strategy instead of Celery's default: such a message is dead-lettered (kept,
capped, in a Redis list with the error), counted, logged, and dropped, and
the worker goes on consuming.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.strategy import default
from kombu.exceptions import ContentDisallowed, DecodeError

from workers import keys

log = logging.getLogger(__name__)
DEAD_LETTERS_KEPT = 1000


def guarded(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Any:
    handle = default(task, app, consumer, **kwargs)

    def handle_or_refuse(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any,
                         **options: Any) -> Any:
        try:
            return handle(message, body, ack, reject, callbacks, **options)
        except (InvalidTaskError, ContentDisallowed, DecodeError):
            raise  # Celery's consumer rejects these itself and goes on
        except Exception as exc:  # anything else would stop the worker
            refuse(task, message, exc)
            return None

    return handle_or_refuse


def refuse(task: Any, message: Any, exc: BaseException) -> None:
    """Dead-letter and drop one malformed message; never raise."""
    log.error("refused a malformed %s message (%s: %s); kept in %s", task.name, type(exc).__name__,
              exc, keys.DEAD_LETTERS)
    try:
        raw = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        letter = json.dumps({"task": task.name, "error": f"{type(exc).__name__}: {exc}", "at": time.time(),
                             "content_type": message.content_type, "headers": _jsonable(message.headers),
                             "body_base64": base64.b64encode(raw[:65536]).decode()})
        task.runtime.tracker.dead_letter(task.name, letter, DEAD_LETTERS_KEPT)
    except Exception:  # the drop matters more than the record of it
        log.exception("could not dead-letter the refused message")
    message.reject(requeue=False)


def _jsonable(headers: Any) -> Any:
    try:
        json.dumps(headers)
        return headers
    except (TypeError, ValueError):
        return repr(headers)[:2000]
