"""Workers register their slots (workers/slots.py) and `pack: auto` sizes batches to them."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from producer.local import stop_process, wait_for
from producer.packing import CHAINS_PER_SLOT, MIN_MESSAGES
from producer.submit import live_slots
from tests.support.cluster import Cluster, classifier, cluster
from tests.support.processes import run_cli
from workers import keys
from workers.settings import STAGES
from workers.slots import live_workers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODELS = 48


def _batch(dataset: str) -> dict[str, Any]:
    # One cost class nobody ran yet (a dataset a batch): packs of 15 by its cost guess, so
    # the live slots set how many chains carry the 48 models.
    slug = dataset.replace("_", "-")
    return {"name": f"slots-{slug}", "pack": "auto",
            "models": [classifier(f"{slug}-{i}", dataset=dataset) for i in range(MODELS)]}


def _chains(c: Cluster, batch_id: str) -> int:
    """Chains sent for the batch: each model's recorded chain starts with its first task id."""
    return len({ids[0] for ids in c.runtime.tracker.task_ids(batch_id).values()})


def test_workers_register_their_slots_and_batches_follow_them(tmp_path: Path) -> None:
    with cluster(tmp_path, workers=2, concurrency=3) as c:
        r, (first, second) = c.runtime.redis, c.workers.names
        # Given two workers of 3 slots each, answering pings: both registered already
        assert [(w["worker"], w["slots"], w["queues"]) for w in live_workers(r)] == [
            (first, 3, sorted(STAGES)), (second, 3, sorted(STAGES))]
        assert live_slots(c.runtime) == dict.fromkeys(STAGES, 6)
        # When a batch of small models is submitted: CHAINS_PER_SLOT chains a live slot
        handle = c.submit(_batch("iris"))
        assert _chains(c, handle.batch_id) == 6 * CHAINS_PER_SLOT == 24 != MIN_MESSAGES
        assert handle.wait(timeout=180).counts == {"promoted": MODELS}
        # ... and `status` of a batch not done (its model's train waits on a queue nobody
        # consumes) shows the workers that could run it
        waits = {**classifier("stuck"), "resources": {"queue": "nobody"}}
        stuck = c.submit({"name": "stuck", "models": [waits]})
        out = run_cli(["status", stuck.batch_id], c.settings, tmp_path)
        assert out.returncode == 0, out.stderr
        queues = ", ".join(sorted(STAGES))
        assert f"workers: 6 slots: {first} 3 ({queues}); {second} 3 ({queues})\n" in out.stdout

        # When one worker is SIGKILLed: its record lapses (within lease_ttl), nobody deletes it
        victim = c.workers.procs[1]
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        wait_for(lambda: [w["worker"] for w in live_workers(r)] == [first], c.settings.lease_ttl + 10,
                 f"{second}'s slots to lapse")
        assert not r.sismember(keys.WORKERS, second)  # the reader dropped the lapsed name
        # ... the next batch is sized for the 3 slots left
        handle = c.submit(_batch("wine"))
        assert _chains(c, handle.batch_id) == 3 * CHAINS_PER_SLOT == 12
        assert handle.wait(timeout=180).counts == {"promoted": MODELS}

        # When the other stops cleanly: its record is deleted at shutdown (its name left the
        # index, which only the worker itself or a reader changes, and nothing read it since)
        assert r.sismember(keys.WORKERS, first)
        stop_process(c.workers.procs[0])
        assert not r.exists(keys.worker_slots(first)) and not r.sismember(keys.WORKERS, first)
        # ... and a batch sent with no worker registered falls back to MIN_MESSAGES chains
        handle = c.submit(_batch("breast_cancer"))
        assert live_slots(c.runtime) == {} and _chains(c, handle.batch_id) == MIN_MESSAGES
        out = run_cli(["status", handle.batch_id], c.settings, tmp_path)
        assert "workers: none registered (queued models wait for a worker)" in out.stdout
