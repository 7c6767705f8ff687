"""Record a batch, send one chain of stage tasks per model, return a handle."""

from __future__ import annotations

import gc
import itertools
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from kombu.exceptions import OperationalError

from producer.handle import BatchHandle
from producer.messages import new_task_ids, send_chains
from producer.packing import Pack, fused, plan_packs
from producer.provenance import origin
from producer.spec import Batch
from workers.app import FUSED, PRIORITIES
from workers.backpressure import full_reason
from workers.contracts import HEAVY_STAGES, SLUG_RULE, ChainState, ModelJob, ModelSpec, is_slug
from workers.labels import chain_label
from workers.runtime import Runtime
from workers.settings import STAGES
from workers.slots import live_workers, slots_by_queue

# Chains whose messages exist at once while sending (and task ids per Redis write).
SEND_CHUNK = 2000


class BrokerUnavailable(RuntimeError):
    """The broker cannot be reached; nothing was sent."""


class RedisFull(RuntimeError):
    """Redis refuses writes (maxmemory); nothing was written or sent."""


def check_writable(runtime: Runtime) -> None:
    """Refuse before writing anything when Redis is full: a batch half recorded never runs."""
    if (reason := full_reason(runtime.redis)) is not None:
        raise RedisFull(reason)


@dataclass(frozen=True)
class PlannedChain:
    """One chain to send: its label (workers.labels), its first message and the models it carries.

    A chain carries one model (its message is that model's ChainState) or a pack
    of models (a PackState); task ids are recorded per carried model, so
    `cancel` revokes a pack's chain for each of its models.
    """

    label: str
    message: dict[str, Any]
    models: tuple[str, ...]
    # The models' `resources.queue` (one per chain: packs never mix queues), or None.
    queue: str | None = None
    # One task runs the whole chain (a fused pack of small models: producer/packing.py).
    fused: bool = False

    @property
    def stages(self) -> tuple[str, ...]:
        return (FUSED,) if self.fused else STAGES


def plan_chains(batch_id: str, models: list[ModelSpec], no_cache: bool = False, pack: Pack = 1,
                costs: Mapping[str, float] | None = None, max_parallel: int | None = None,
                slots: Mapping[str, int] | None = None) -> Iterator[PlannedChain]:
    """One chain per pack of models (`pack: 1`: per model), built lazily: a message
    exists only until it is published. `slots`: queue -> live slots (live_slots)."""
    template: dict[str, Any] | None = None
    costs = costs or {}
    for members in plan_packs(models, pack, costs, slots):
        if template is None:
            template = ChainState(job=ModelJob(batch_id=batch_id, model=members[0], no_cache=no_cache,
                                               max_parallel=max_parallel)).model_dump(mode="json")
        # That ChainState with this model: the same dict as dumping ChainState(...) per model
        # (tests/unit/test_messages.py), a third of the cost. Only the nested spec is new;
        # the rest is shared, read-only, until serialised.
        states = [{**template, "job": {**template["job"], "model": m.model_dump(mode="json")}}
                  for m in members]
        names = tuple(m.name for m in members)
        yield PlannedChain(chain_label(batch_id, names), states[0] if len(members) == 1 else {"pack": states},
                           names, members[0].resources.queue, fused(members, pack, costs))


def live_slots(runtime: Runtime) -> dict[str, int]:
    """Queue -> slots of the workers registered now (workers/slots.py): what `pack: auto` sizes for."""
    return slots_by_queue(live_workers(runtime.redis))


def masked_url(url: str) -> str:
    """A broker URL to show: as given, with its password (only if it has one) as `**`.

    kombu's `Connection.as_uri()` shows `redis://:**@host` also for a URL without a
    password, which reads as if one were set. `;`-separated failover URLs are masked each.
    """
    shown = []
    for one in url.split(";"):
        parts = urlsplit(one.strip())
        if parts.password:
            userinfo, _, host = parts.netloc.rpartition("@")
            one = one.replace(parts.netloc, f"{userinfo.partition(':')[0]}:**@{host}", 1)
        shown.append(one)
    return ";".join(shown)


def check_broker(app: Celery, timeout: float) -> None:
    """Fail fast with a clear message instead of hanging on an unreachable broker."""
    given = app.conf.broker_write_url or app.conf.broker_url
    url = ";".join(given) if isinstance(given, list | tuple) else str(given)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except (OperationalError, OSError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {masked_url(url)}: {exc}") from exc


def submit(batch: Batch, app: Celery, runtime: Runtime, no_cache: bool = False,
           batch_id: str | None = None) -> BatchHandle:
    """Record the batch and send its chains; nothing is sent if the broker is down.

    load_batch validates the name; a Batch built by hand is checked here too, before
    anything is written (a name too long for a file name left a ghost batch in Redis)."""
    if not is_slug(batch.name):
        raise ValueError(f"batch name {batch.name[:100]!r}: {SLUG_RULE}")
    batch_id = batch_id or f"{batch.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    check_broker(app, runtime.settings.broker_connect_timeout)
    check_writable(runtime)
    with cyclic_gc_paused():
        runtime.tracker.create_batch({
            "id": batch_id, "name": batch.name, "spec": batch.source,
            "pack": batch.pack, "priority": batch.priority, "max_parallel": batch.max_parallel,
            "models": [m.name for m in batch.models], "created": time.time(), "no_cache": no_cache,
            "primary_metrics": {m.name: m.primary_metric for m in batch.models},
            **origin(batch.path, batch.source, runtime.settings.user),
        }, [m.name for m in batch.models],
            specs={m.name: m.model_dump_json() for m in batch.models})
        costs = runtime.tracker.model_costs()  # what packing sizes from
        send_planned(app, runtime, batch_id,
                     plan_chains(batch_id, batch.models, no_cache, batch.pack, costs, batch.max_parallel,
                                 live_slots(runtime)),
                     priority=PRIORITIES[batch.priority])
    return BatchHandle(batch_id, runtime)


def send_planned(app: Celery, runtime: Runtime, batch_id: str, planned: Iterable[PlannedChain],
                 chunk: int = SEND_CHUNK, priority: int | None = None) -> int:
    """Send the chains through one producer, recording each carried model's task ids first.

    Chunk by chunk, so the messages of a 100,000-model batch never all exist at
    once: fix the chunk's task ids, keep them per model (for `cancel`), publish
    (a chain whose models name a queue sends its heavy stages there).
    Returns how many chains were sent.
    """
    sent = 0
    with app.producer_or_acquire() as producer:
        for part in _chunks(planned, chunk):
            ids = [chain_ids[:len(plan.stages)] for plan, chain_ids in zip(part, new_task_ids(len(part)),
                                                                             strict=True)]
            runtime.tracker.record_task_ids(batch_id, {name: chain_ids
                                                       for plan, chain_ids in zip(part, ids, strict=True)
                                                       for name in plan.models})
            routed: dict[tuple[str | None, tuple[str, ...]], list[int]] = {}
            for i, plan in enumerate(part):
                routed.setdefault((plan.queue, plan.stages), []).append(i)
            for (queue, stages), members in routed.items():
                send_chains(app, [(part[i].label, part[i].message) for i in members], stages,
                            task_ids=[ids[i] for i in members], producer=producer, priority=priority,
                            queues=None if queue is None else dict.fromkeys(HEAVY_STAGES, queue))
            sent += len(part)
    return sent


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a batch is recorded and sent.

    Sending allocates millions of short-lived objects, freed by reference counting
    (none of them in cycles); their allocation alone triggers collections that walk
    every live object, the whole validated batch included: 16% of the CPU of a
    100,000-model submit, for nothing to collect.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _chunks(items: Iterable[PlannedChain], size: int) -> Iterator[list[PlannedChain]]:
    it = iter(items)
    while part := list(itertools.islice(it, size)):
        yield part
