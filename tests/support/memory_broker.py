"""A Celery app on kombu's in-memory transport: what it publishes is read back, no services."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from kombu import Exchange, Queue
from kombu.message import Message

from workers.app import create_app
from workers.settings import STAGES, Settings

# Bound to Celery's event exchange (a topic exchange on this transport): every event lands here.
EVENTS = Queue("test-events", Exchange("celeryev", type="topic"), routing_key="#")


@contextmanager
def memory_app() -> Iterator[Celery]:
    """The platform's app, publishing to kombu's in-memory broker, with the event queue bound."""
    app = create_app(Settings(broker_url="redis://127.0.0.1:1/0"))  # type: ignore[arg-type]
    app.conf.broker_url = "memory://"
    app.conf.result_backend = "disabled"
    queues: list[str | Queue] = [*STAGES, EVENTS]
    for queue in queues:  # the in-memory broker is shared by the whole process
        drain(app, queue)
    try:
        yield app
    finally:
        for queue in queues:
            drain(app, queue)
        app.close()


def drain(app: Celery, queue: str | Queue) -> list[Message]:
    """Every message waiting in a queue, acked (declaring the queue if it was not)."""
    out = []
    with app.connection_for_read() as conn, conn.SimpleQueue(queue) as q:
        while True:
            try:
                message = q.get_nowait()
            except q.Empty:
                return out
            message.ack()
            out.append(message)


def events(app: Celery) -> list[dict[str, Any]]:
    """The events published since the last call: lists (as workers send them) unpacked."""
    out = []
    for message in drain(app, EVENTS):
        body = message.decode()
        out += body if isinstance(body, list) else [body]
    return out
