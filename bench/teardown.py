"""Teardown shared by the benchmarks and the tests (tests may import bench, never the reverse)."""

from __future__ import annotations

import gc

from celery import Celery


def close_app(app: Celery) -> None:
    """Close a producer app before its Redis goes away.

    Sending a task subscribes the app to the task's result channel (Celery's Redis
    backend); a result handle collected later unsubscribes, and against a stopped
    Redis that means ~20 s of reconnect retries wherever the collection happens.
    Forget the subscriptions while Redis is still up.
    """
    gc.collect()
    consumer = getattr(app.backend, "result_consumer", None)
    if consumer is not None:
        consumer.subscribed_to.clear()
        consumer.stop()
    app.close()
