"""Publish whole chains as Celery task messages, without building a canvas.

`celery.chain(...).apply_async()` clones and freezes every signature of every
chain and publishes one message at a time (about 1 ms a chain). A chain of
stages, each on its own queue, is only this on the wire (Celery's message
protocol 2): the first task's message, whose `chain` field holds the later
stages as signature dicts in reverse order, each with its own task id, queue and
argsrepr (workers.labels: the stage, its models and batch, what Flower shows and
searches). The worker pops the next signature when a task succeeds and sends it
with the task's return value as its argument, under the id given here. So we
build that message with Celery's own `app.amqp.create_task_message` and publish
it with `app.amqp.send_task_message` through one producer whose publishes kombu
buffers in a Redis pipeline (`producer.batch()`), declaring the queues once
instead of on every publish, and sending the task-sent events Flower shows.

The first message is opaque here: it is the first task's only argument (today a
`ChainState` as JSON; it may carry a pack of models). Which models a chain
carries is the caller's business.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from celery import Celery
from celery.events.event import Event
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset
from kombu import Producer

from workers.app import QUEUES, TASK_NAMES
from workers.labels import stage_label
from workers.settings import STAGES

# Redis commands buffered before a pipeline round trip.
PIPELINE_SIZE = 1000
# Task-sent events per event message (a list, as workers send theirs).
EVENTS_PER_PUBLISH = 100


def new_task_ids(n: int, stages: Sequence[str] = STAGES) -> list[list[str]]:
    """n chains' task ids, one per stage: uuid4 strings, as Celery makes them."""
    width = len(stages)
    flat = _uuid4s(n * width)
    return [flat[i:i + width] for i in range(0, n * width, width)]


def send_chains(app: Celery, chains: Iterable[tuple[str, dict[str, Any]]],
                stages: Sequence[str] = STAGES, *, task_ids: Sequence[Sequence[str]] | None = None,
                producer: Producer | None = None, priority: int | None = None,
                queues: Mapping[str, str] | None = None) -> list[list[str]]:
    """Publish one chain `stages[0] -> stages[1] -> ...` per (label, first message).

    Each stage runs as task `TASK_NAMES[stage]` on the queue named after it, or on
    `queues[stage]` where given; its argsrepr is `stage_label(stage, label)` (what Flower
    shows and searches, and the logs print), the label being the chain's
    `workers.labels.chain_label`. `priority` goes on every message of the chain: the
    first one's properties (where kombu's Redis transport reads it) and each later
    stage's signature options (the worker sends that stage with them). Returns each
    chain's task ids in stage order: `task_ids` when given (fix them before
    sending, e.g. to record them first), else new ones. `chains` may be a
    generator, so a caller can build each message just before it is sent.
    Publishes through `producer` (its batch, if one is open) or one from the pool.
    """
    if app.conf.task_protocol != 2:
        raise ValueError("send_chains writes Celery's message protocol 2 (the chain field)")
    if not stages:
        raise ValueError("a chain needs at least one stage")
    if task_ids is not None:
        chains = list(chains)
        if len(task_ids) != len(chains):
            raise ValueError(f"{len(task_ids)} task id lists for {len(chains)} chains")
    amqp = app.amqp
    names = [TASK_NAMES[s] for s in stages]
    routes = [(queues or {}).get(s, QUEUES[s]) for s in stages]
    declared = [amqp.queues[q] for q in routes]
    first_name, first_queue, first_key = names[0], declared[0], routes[0]
    # (stage, queue, task name) of the later stages; the worker pops from the end.
    later = list(zip(stages[1:], routes[1:], names[1:], strict=True))[::-1]
    first_prefix, later_prefixes = stage_label(stages[0], ""), [stage_label(s, "") for s, _, _ in later]
    extra = {} if priority is None else {"priority": priority}
    reply_to = app.thread_oid
    origin = anon_nodename()  # what Celery puts in every message, computed once
    sent_event = bool(app.conf.task_send_sent_event)
    create, send = amqp.create_task_message, amqp.send_task_message
    out: list[list[str]] = []
    with app.producer_or_acquire(producer) as prod:
        for queue in declared:  # once, instead of a cached check on every publish
            prod.maybe_declare(queue)
        events = _SentEvents(app, prod) if sent_event else None
        with prod.batch(max_size=PIPELINE_SIZE):
            for i, (label, message) in enumerate(chains):
                ids = list(task_ids[i]) if task_ids is not None else _uuid4s(len(stages))
                if len(ids) != len(stages):
                    raise ValueError(f"chain {label!r}: {len(ids)} task ids for {len(stages)} stages")
                # Signature dicts as Celery serialises them, the next stage last.
                chain: list[dict[str, Any]] = [
                    {"task": name, "args": [], "kwargs": {}, "subtask_type": None, "immutable": False,
                     "options": {"queue": queue, "argsrepr": prefix + label, "task_id": task_id,
                                 "reply_to": reply_to, **extra}}
                    for (_, queue, name), prefix, task_id in zip(later, later_prefixes, ids[:0:-1],
                                                                 strict=True)]
                msg = create(ids[0], first_name, (message,), {}, chain=chain or None,
                             argsrepr=first_prefix + label, kwargsrepr="{}", reply_to=reply_to,
                             origin=origin, ignore_result=None, create_sent_event=sent_event)
                # retry=False: inside a batch a publish only buffers; a failed flush raises
                # (kombu's BatchPublishError) instead of being retried, as with the canvas.
                send(prod, first_name, msg, queue=first_queue, exchange="", routing_key=first_key,
                     retry=False, declare=[], event_dispatcher=events, **extra)
                out.append(ids)
            if events is not None:
                events.flush()
    return out


class _SentEvents:
    """The task-sent events Celery's dispatcher would send, buffered as workers send theirs.

    `send_task_message` hands each message's event here. Celery's own dispatcher
    declares the event exchange and publishes on every event; a worker instead
    buffers its task events and publishes them as one list under `task.multi`
    (`Dispatcher(buffer_group=...)`), which Flower and every event receiver
    unpack. We do the same, so 10,000 chains cost 100 event publishes, not 10,000.
    """

    def __init__(self, app: Celery, producer: Producer, limit: int = EVENTS_PER_PUBLISH) -> None:
        dispatcher = app.amqp._event_dispatcher
        self.hostname, self.pid, self.clock = dispatcher.hostname, dispatcher.pid, dispatcher.clock
        self.exchange, self.headers = dispatcher.exchange.name, dispatcher.headers
        self.serializer, self.delivery_mode = dispatcher.serializer, dispatcher.delivery_mode
        self.utcoffset = utcoffset()
        self.producer, self.limit = producer, limit
        self.buffer: list[dict[str, Any]] = []
        producer.maybe_declare(dispatcher.exchange)

    def publish(self, type: str, fields: dict[str, Any], producer: Producer, **_: Any) -> None:
        self.buffer.append(Event(type, hostname=self.hostname, utcoffset=self.utcoffset, pid=self.pid,
                                 clock=self.clock.forward(), **fields))
        if len(self.buffer) >= self.limit:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            group = self.buffer[0]["type"].split("-", 1)[0]
            self.producer.publish(self.buffer, routing_key=f"{group}.multi", exchange=self.exchange,
                                  serializer=self.serializer, headers=self.headers,
                                  delivery_mode=self.delivery_mode)
            self.buffer = []


def _uuid4s(n: int) -> list[str]:
    """n random version-4 UUID strings, like str(uuid4()) but from one urandom call."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])  # RFC 4122 variant
    h = raw.hex()
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-{h[i + 12:i + 16]}-{h[i + 16:i + 20]}-{h[i + 20:i + 32]}"
            for i in range(0, 32 * n, 32)]
