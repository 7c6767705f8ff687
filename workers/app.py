"""The Celery app factory: broker, queues, routes and the reliability settings.

`celery -A workers.app worker` finds `app` here; it is built on first access
(PEP 562), so importing this module reads no environment.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

import workers.transport  # noqa: F401  (registers the Redis transport that waits out a full Redis)
from workers.connections import sentinel_options
from workers.settings import STAGES, Settings
from workers.tls import tls_options

# A pack of small models run through all four stages by one task (workers/task.py), sent
# on the first stage's queue: its name is a chain "stage" of its own.
FUSED = "fused"
TASK_NAMES = {stage: f"modelfleet.{stage}" for stage in (*STAGES, FUSED)}
QUEUES = {**{stage: stage for stage in STAGES}, FUSED: STAGES[0]}
# A batch's `priority` as a message priority. Kombu's Redis transport keeps one list per
# priority step (0, 3, 6, 9; `train`, then `train\x06\x163`, ...) and a worker's BRPOP
# names every queue's step-0 list before any step-3 list: 0 is the highest. A message
# without a priority lands in step 0, so "normal" must be below it for "high" to pass it.
PRIORITIES = {"high": 0, "normal": 3, "low": 9}
PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's default steps, kept (existing queues stay readable)
PRIORITY_SEP = "\x06\x16"  # kombu's default separator: its binding tables use it too


def queue_lists(queue: str) -> list[str]:
    """The Redis lists a queue's messages wait in, one per priority step (for LLEN, KEDA)."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings()
    app = Celery("modelfleet", broker=settings.broker(), backend=settings.backend(),
                 include=["workers.stages", "workers.scoring", "workers.warm", "workers.slots"])
    app.conf.update(
        # JSON only: a pickled message is refused by the worker, never deserialised.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # Ack after the stage finishes, and requeue when the worker dies mid-stage:
        # a killed worker loses no model (stages are idempotent through the cache).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # ML stages are long: a worker holds one message at a time, so an idle
        # worker can take the next model instead of it waiting in a busy one's buffer.
        worker_prefetch_multiplier=1,
        # ... also after a broker reconnect. The new channel's prefetch window does not know
        # the message still running from the old connection, so a busy 1-slot worker took
        # one more (Celery's temporary "prefetch count reduction" is skipped for Redis and
        # floors at the multiplier anyway): a model waited behind a long fit while another
        # worker idled. This counts the worker's reserved requests, which include the
        # running ones across a reconnect since Celery 5.7: no new message while they fill
        # every slot (Redis brokers only).
        worker_disable_prefetch=True,
        # Events on, so Flower sees every task from sent to done.
        worker_send_task_events=True,
        task_send_sent_event=True,
        # No STARTED result write per task: the stage's begin marks the model running
        # in the same round trip as its other checks (and Flower has the events).
        task_track_started=False,
        # A finished stage sends its chain's next step before its message is acked; if that
        # send gives up (Celery's default: after about 0.6 s), Celery acks the message
        # anyway and the model's chain ends there. Keep trying through a failover instead:
        # about failover_wait seconds, one try a second.
        task_publish_retry_policy={"max_retries": max(3, round(settings.failover_wait)),
                                   "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        # A channel error (a reply kombu did not expect) reconnects the consumer instead of
        # stopping the worker. (A full Redis is waited out below it: workers/transport.py.)
        broker_channel_error_retry=True,
        # Keep a long fit running through a broker blip; acks_late + idempotent
        # stages make the possible redelivery harmless.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_transport_options={
            # Must exceed the longest stage, else Redis redelivers a running task.
            "visibility_timeout": settings.visibility_timeout,
            # A dead worker's unacked messages return after about
            # visibility_timeout + restore_interval * restore_throttle seconds.
            "unacked_restore_interval": settings.restore_interval,
            "unacked_restore_throttle": settings.restore_throttle,
            "socket_connect_timeout": settings.broker_connect_timeout,
            # sentinel:// URLs: the master's name and how to reach the sentinels.
            **sentinel_options(settings, settings.broker()),
        },
        result_backend_transport_options={"socket_connect_timeout": settings.broker_connect_timeout,
                                          **sentinel_options(settings, settings.backend())},
        # rediss:// URLs: verify the server's certificate (kombu's own default is not to).
        broker_use_ssl=tls_options(settings.broker()),
        redis_backend_use_ssl=tls_options(settings.backend()),
        # What a message sent without one gets (a worker's retry keeps its message's own).
        task_default_priority=PRIORITIES["normal"],
        result_expires=7 * 24 * 3600,
        task_queues=[Queue(stage) for stage in STAGES],
        task_default_queue=STAGES[0],
        task_routes={name: {"queue": QUEUES[stage]} for stage, name in TASK_NAMES.items()},
        task_time_limit=settings.stage_time_limit,
        worker_concurrency=settings.worker_concurrency,
        # Transient errors (I/O, connection) are retried with backoff; see stages.py.
        task_annotations={"*": {"max_retries": settings.transient_max_retries}},
    )
    app.modelfleet_settings = settings  # type: ignore[attr-defined]
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        globals()["app"] = created = create_app()
        return created
    raise AttributeError(name)
