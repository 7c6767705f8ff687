"""Pack small models into shared chains, sized from the stage times already recorded.

A message costs Celery a few milliseconds whatever it carries; a small model's
whole chain of work can cost less. So models whose recorded cost is small ride
together: about TARGET_SECONDS of work per message. Models are packed only with
models of the same cost class (task, estimator class, dataset shape) and the same
worker queue (`resources.queue`: a pack runs where all its members may), and a
batch keeps enough chains for the live slots of the workers that run them
(CHAINS_PER_SLOT each; workers register their slots, workers/slots.py), so packing
never starves workers; MIN_MESSAGES where no worker of that queue is registered.

A pack of small models is also fused: one task runs its members through all four
stages (workers/task.py), instead of four tasks handing the pack on through the
broker. The stage queues stay for bigger models, and for models that name a queue
of their own (their heavy stages run there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from workers.app import FUSED, QUEUES
from workers.contracts import ModelSpec, SyntheticDataset

# Work per message that makes Celery's per-message cost a few percent of it.
TARGET_SECONDS = 0.3
MAX_PACK = 64
# The models of a queue are split into at least this many chains per live slot of the
# workers consuming it (when there are that many models). One each would leave the batch
# waiting on its slowest pack (cost estimates are rough, hosts differ); with four, a slot
# that finishes early takes another and the tail is about a quarter of a slot's share.
# More would shrink packs below TARGET_SECONDS, paying the per-message cost again.
CHAINS_PER_SLOT = 4
# ... and at least this many where no worker of the queue is registered (a batch submitted
# before its workers start, or a queue autoscaled from zero), so that many workers get work.
MIN_MESSAGES = 16
# A model of a class nobody has run yet: about what a small linear model costs in all stages.
UNMEASURED_SECONDS = 0.02

# A model whose whole chain is estimated at no more than this is fused (under `pack: auto`):
# four hand-offs (publish, deliver, ack, result) cost it more than its stages' work.
FUSE_SECONDS = 0.25

Pack = int | Literal["auto"]


def fused(members: list[ModelSpec], pack: Pack, recorded: Mapping[str, float]) -> bool:
    """Whether a pack runs its stages in one task: small members, `pack: auto`, no own queue."""
    return pack == "auto" and all(m.resources.queue is None and estimate_seconds(m, recorded)
                                  <= FUSE_SECONDS for m in members)


def min_chains(slots: int | None) -> int:
    """Chains a queue's models are split into at least, for `slots` live slots (None or 0: unknown)."""
    return CHAINS_PER_SLOT * slots if slots else MIN_MESSAGES


def work_queue(model: ModelSpec, fuse: bool) -> str:
    """Where a chain's work runs: a fused pack's one task on its queue, else the train stage's."""
    return QUEUES[FUSED] if fuse else model.queue_for("train")


def estimate_seconds(model: ModelSpec, recorded: Mapping[str, float]) -> float:
    """A model's work in all its stages: what its class took before, else a rough guess."""
    if (seconds := recorded.get(model.cost_class)) is not None:
        return seconds
    guess = UNMEASURED_SECONDS
    # Ensembles cost about one small model per member; big synthetic data costs more.
    members = model.estimator.params.get("n_estimators")
    if isinstance(members, int):
        guess *= max(1.0, members / 10)
    if isinstance(model.dataset, SyntheticDataset):
        guess *= max(1.0, model.dataset.n_samples * model.dataset.n_features / 20_000)
    return guess


def plan_packs(models: list[ModelSpec], pack: Pack, recorded: Mapping[str, float],
               slots: Mapping[str, int] | None = None) -> list[list[ModelSpec]]:
    """Split models into packs: `pack` models each, or sized by their estimated cost ("auto"),
    enough of them for `slots` (queue -> live slots of the workers consuming it)."""
    if pack != "auto":
        by_queue: dict[str | None, list[ModelSpec]] = {}
        for model in models:
            by_queue.setdefault(model.resources.queue, []).append(model)
        return [group[i:i + pack] for group in by_queue.values() for i in range(0, len(group), pack)]
    slots = slots or {}
    classes: dict[tuple[str, str | None], list[ModelSpec]] = {}
    for model in models:
        classes.setdefault((model.cost_class, model.resources.queue), []).append(model)
    # A class's packs run on one queue (a class is fused or not as a whole): each queue's
    # models are split for the slots that consume it.
    where = {key: work_queue(members[0], fused(members[:1], pack, recorded))
             for key, members in classes.items()}
    per_queue: dict[str, int] = {}
    for key, members in classes.items():
        per_queue[where[key]] = per_queue.get(where[key], 0) + len(members)
    packs: list[list[ModelSpec]] = []
    for key, members in classes.items():
        queue = where[key]
        # In dataset order (stable: the spec's order within one): a pack then holds every model
        # of a few datasets (a store's ten estimators), whose split and fitted features its
        # worker computes once, instead of one model of many stores.
        members = sorted(members, key=lambda m: m.dataset.model_dump_json())
        most = max(1, math.ceil(per_queue[queue] / min_chains(slots.get(queue))))
        size = int(TARGET_SECONDS / estimate_seconds(members[0], recorded) + 1e-9)
        size = max(1, min(size, MAX_PACK, most))
        # As many packs as that size needs, evened out (sizes differ by at most one).
        count = math.ceil(len(members) / size)
        packs += [members[i * len(members) // count:(i + 1) * len(members) // count] for i in range(count)]
    return packs
