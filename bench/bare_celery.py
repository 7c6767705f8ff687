"""A bare Celery app for the cold-start benchmark (bench/worker_start.py): modelfleet's
queues and reliability settings, one no-op task, nothing else imported.

    MODELFLEET_BROKER_URL=redis://... celery -A bench.bare_celery worker -c 1
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from kombu import Queue

STAGES = ("preprocess", "train", "evaluate", "deploy")


def create_app(url: str) -> Celery:
    app = Celery("bare", broker=url, backend=url)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_acks_late=True, worker_prefetch_multiplier=1,
        worker_send_task_events=True, task_send_sent_event=True,
        task_queues=[Queue(s) for s in STAGES], task_default_queue=STAGES[0],
        broker_connection_retry_on_startup=True,
    )
    app.task(name="bare.noop")(noop)
    return app


def noop(payload: Any = None) -> Any:
    return payload


def __getattr__(name: str) -> Any:  # `celery -A bench.bare_celery` looks up `app`
    if name == "app":
        globals()["app"] = created = create_app(os.environ["MODELFLEET_BROKER_URL"])
        return created
    raise AttributeError(name)
