"""The stalled-chain sweeper: a model whose chain stopped is sent on from its last completed stage.

Two faults leave a model with nothing to carry it on (docs/guarantees.md):

- **Its worker died mid-stage** (SIGKILL, OOM, a lost host). Its message stays unacked
  in Redis until the visibility timeout (an hour as deployed) hands it back. But the
  stage's alive key (`mf:alive:<task>`, renewed by the stage's heartbeat) lapses within
  `lease_ttl` of the death: the sweeper then hands that message back at once, as kombu
  would after the timeout. It is the same message (task id, delivery count, priority), so
  nothing is left to come back later, a poison message is still failed after
  `max_deliveries` and a poison pack still split (workers/stages.py).
- **Its next message is gone** (a failover lost the hand-off; or a dead holder's message
  is nowhere): after `stall_timeout` with no live copy and no message for it in its
  queue or in any worker's hands, the model is resent from its last completed stage, in
  a chain of its own with new task ids, once. Recording those ids makes every older copy
  of its chain stale: a stage's begin skips a model whose recorded chain does not hold
  the task's id, so a copy that turns up late runs, registers and promotes nothing.

Stages keep the sweeper's view: their begin adds the model to `mf:running` and removes
it from `mf:handoffs`, their end does the reverse (`handed_on`); finished models are
dropped here. Every worker runs a sweeper thread; a Redis lock that lapses after
`sweep_interval` lets one sweep start per interval across the fleet, and every change is
a compare-and-set on the model's `rev`, so even two sweeps at once act on a model once.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery import Celery, chain
from celery.signals import worker_ready, worker_shutdown
from kombu.utils.encoding import bytes_to_str

from workers import keys
from workers.app import PRIORITIES, queue_lists
from workers.contracts import ChainState, ModelJob, ModelSpec, parse_message
from workers.labels import chain_label, stage_label
from workers.runtime import Runtime
from workers.settings import STAGES
from workers.tracking import TERMINAL
from workers.writes import Writes

log = logging.getLogger(__name__)

# Models looked at per sweep and set, oldest first; the rest wait for the next sweep.
PER_SWEEP = 1000
# Queued messages read per Lua call while looking for a model's, so Redis never blocks long.
CHUNK = 500

# KEYS: the model's state, RUNNING, HANDOFFS, the batch's cancelled flag, the batch's chain ids.
# ARGV: rev as read, model ref, now, pending task id, note, status ('' keeps it), model name,
# new chain ids as JSON ('' keeps them). If no stage began or ended since the sweeper read
# the state (each bumps rev): the model leaves RUNNING for HANDOFFS, waiting for task
# ARGV[4]; in a cancelled batch it is marked cancelled instead (never resumed).
_MOVE = """
if redis.call('HGET', KEYS[1], 'rev') ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'worker', '', 'updated', ARGV[3])
else
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
  redis.call('HSET', KEYS[1], 'pending', ARGV[4], 'updated', ARGV[3])
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'recovered', ARGV[5]) end
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'status', ARGV[6], 'worker', '') end
  if ARGV[8] ~= '' then redis.call('HSET', KEYS[5], ARGV[7], ARGV[8]) end
end
redis.call('HINCRBY', KEYS[1], 'rev', 1)
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: RUNNING or HANDOFFS. ARGV: model ref, its score as read. Drops a finished model,
# unless a stage added it again meanwhile (with a new score).
_DROP = """
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1])) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
"""

# KEYS: queue lists (kombu's, one per priority step). ARGV: first index, last index, task ids.
# The ids whose message lies in that range of a list (the task id is the first "id" field of
# a message's JSON: its headers; the body is base64), and 1 if a list goes on past the range.
_FIND = """
local wanted, found, more = {}, {}, 0
for i = 3, #ARGV do wanted[ARGV[i]] = true end
for _, list in ipairs(KEYS) do
  for _, message in ipairs(redis.call('LRANGE', list, ARGV[1], ARGV[2])) do
    local id = string.match(message, '"id": ?"([^"]+)"')
    if id and wanted[id] then found[#found + 1] = id; wanted[id] = nil end
  end
  if redis.call('LLEN', list) > tonumber(ARGV[2]) + 1 then more = 1 end
end
return {more, found}
"""


def confirm_after(lease_ttl: float) -> float:
    """Seconds between the two sightings of a dead holder: a third of the lease (its renewal
    period), and at least two of the heartbeat's one-second retries after a Redis outage."""
    return max(lease_ttl / 3, 2.0)


def handed_on(writes: Writes, batch_id: str, model: str, stage: str, at: float) -> None:
    """Queue a finished stage's change of the sweeper's view: no longer running; waiting
    for its next stage (the last stage waits for nothing)."""
    ref = keys.model_ref(batch_id, model)
    writes.pipe.zrem(keys.RUNNING, ref)
    if stage != STAGES[-1]:
        writes.pipe.zadd(keys.HANDOFFS, {ref: at})


def single_chain(app: Celery, state: ChainState, stage: str,
                 priority: int | None) -> tuple[Any, list[str]]:
    """A chain carrying one model from `stage` to the last, and its task ids (fixed now:
    record them before sending, so the chain's stages are not taken for stale copies)."""
    job = state.job
    label = chain_label(job.batch_id, [job.model.name])
    opts = {} if priority is None else {"priority": priority}
    rest = STAGES[STAGES.index(stage):]
    first = app.signature(f"modelfleet.{rest[0]}", args=(state.model_dump(mode="json"),),
                          queue=job.model.queue_for(rest[0]), argsrepr=stage_label(rest[0], label), **opts)
    canvas = chain(first, *[app.signature(f"modelfleet.{s}", queue=job.model.queue_for(s),
                                          argsrepr=stage_label(s, label), **opts) for s in rest[1:]])
    canvas.freeze()
    return canvas, [t.id for t in canvas.tasks]


class Sweeper:
    """One pass at a time: hand dead workers' messages back, resend lost hand-offs."""

    def __init__(self, app: Celery, runtime: Runtime) -> None:
        self.app, self.rt = app, runtime
        self._move = runtime.redis.register_script(_MOVE)
        self._drop = runtime.redis.register_script(_DROP)
        self._batches: dict[str, dict[str, Any] | None] = {}

    def sweep(self) -> Counter[str]:
        """One pass; counts what it did (handed_back, waiting, resent, queued, dropped)."""
        r, settings, now = self.rt.redis, self.rt.settings, time.time()
        running = r.zrange(keys.RUNNING, 0, PER_SWEEP - 1, withscores=True)
        stalled = r.zrangebyscore(keys.HANDOFFS, "-inf", now - settings.stall_timeout,
                                  start=0, num=PER_SWEEP, withscores=True)
        done: Counter[str] = Counter()
        if not running and not stalled:
            return done
        self._batches = {}
        states = self._states([ref for ref, _ in running + stalled])
        alive = self._alive({st[f] for st in states.values() for f in ("task", "pending") if st.get(f)})
        dead: dict[str, list[str]] = {}  # task id -> the models it was running
        for ref, score in running:
            st = states[ref]
            if st.get("status") not in ("running", "retrying") or st.get(f"done_{st.get('stage')}"):
                self._drop(keys=[keys.RUNNING], args=[ref, score])  # finished, failed, reset
                done["dropped"] += 1
            elif alive.get(st.get("task", "")):
                continue  # its stage runs (or waits out a retry's countdown on a live worker)
            elif st.get("status") == "running":
                dead.setdefault(st.get("task", ""), []).append(ref)
            else:  # a retry due later: it waits in HANDOFFS, checked after stall_timeout
                self.move(ref, st, pending=st.get("task", ""), note="", status="")
        if confirmed := self._confirmed(dead, now):
            done += self._hand_back(confirmed, states)
        waiting = []
        for ref, score in stalled:
            st = states[ref]
            if not st or st.get("status") in TERMINAL:
                self._drop(keys=[keys.HANDOFFS], args=[ref, score])
                done["dropped"] += 1
            elif alive.get(st.get("pending", "")):
                r.zadd(keys.HANDOFFS, {ref: now}, xx=True)  # it began meanwhile
            else:
                waiting.append(ref)
        if waiting:
            done += self._resend_lost(waiting, states, now)
        return done

    def _confirmed(self, dead: dict[str, list[str]], now: float) -> dict[str, list[str]]:
        """The holders found dead again at least CONFIRM seconds after the first time. A live
        worker whose Redis went away retries its renewals every second (workers/cache.py) and
        takes its alive key back as soon as Redis answers: only a dead one is still gone then.
        With the key's own lapse (at most lease_ttl) and two sweeps, a dead worker's message
        goes back about lease_ttl + lease_ttl / 3 + 2 x sweep_interval after its death."""
        r = self.rt.redis
        seen = {task: float(at) for task, at in r.hgetall(keys.SUSPECTS).items()}
        if gone := set(seen) - set(dead):  # alive again, or moved on: no longer suspects
            r.hdel(keys.SUSPECTS, *gone)
        if new := {task: now for task in dead if task not in seen}:
            r.hset(keys.SUSPECTS, mapping=new)
        confirmed = {task: refs for task, refs in dead.items()
                     if task in seen and now - seen[task] >= confirm_after(self.rt.settings.lease_ttl)}
        if confirmed:
            r.hdel(keys.SUSPECTS, *confirmed)
        return confirmed

    def _states(self, refs: list[str]) -> dict[str, dict[str, str]]:
        pipe = self.rt.redis.pipeline(transaction=False)
        for ref in refs:
            batch_id, _, model = ref.rpartition("/")
            pipe.hgetall(keys.batch_model(batch_id, model))
        return dict(zip(refs, pipe.execute(), strict=True))

    def _alive(self, tasks: set[str]) -> dict[str, bool]:
        pipe = self.rt.redis.pipeline(transaction=False)
        ordered = sorted(tasks)
        for task in ordered:
            pipe.exists(keys.alive(task))
        return {task: bool(n) for task, n in zip(ordered, pipe.execute(), strict=True)}

    def _hand_back(self, dead: dict[str, list[str]], states: dict[str, dict[str, str]]) -> Counter[str]:
        """The tasks of dead holders: their unacked messages go back to their queues now."""
        done: Counter[str] = Counter()
        with self._broker() as (channel, client):
            unacked = _unacked(client, channel.unacked_key)
            for task, refs in dead.items():
                tag = unacked.get(task)
                if tag is not None and _taken_again(client, channel.unacked_index_key, tag, refs, states):
                    # Celery put a killed pool child's message back itself and a worker took it
                    # since: it is that worker's now (restoring it would make a second copy).
                    log.info("task %s of %s: its message was taken again since; left to its new holder",
                             task, ", ".join(refs))
                    continue
                moved = 0
                for ref in refs:  # first the state (a compare-and-set), so a stage that began
                    st = states[ref]  # meanwhile keeps its message; then the message
                    what = (f"{st.get('worker') or 'its worker'} stopped renewing its lease in "
                            f"{st.get('stage')}")
                    note = (f"{what}; its message was handed back at {_clock()}" if tag is not None else
                            f"{what}; no worker holds its message (back in its queue, or lost: then "
                            f"resent after {self.rt.settings.stall_timeout:.0f}s)")
                    moved += self.move(ref, st, pending=task, note=note, status="queued")
                if tag is not None and moved:
                    # kombu's own restore (one transaction): a second restore, also kombu's
                    # after the visibility timeout, finds nothing left to restore.
                    channel.qos.restore_by_tag(tag, client=client)
                log.warning("task %s of %s stopped renewing its lease (its worker died?): %s",
                            task, ", ".join(refs), "message handed back" if tag and moved else
                            "message not found" if moved else "it moved on meanwhile")
                done["handed_back" if tag is not None else "waiting"] += moved
        return done

    def _resend_lost(self, refs: list[str], states: dict[str, dict[str, str]], now: float) -> Counter[str]:
        """Models with no progress for stall_timeout: look for their message; resend if it is gone."""
        done: Counter[str] = Counter()
        plans = {ref: self.resume_point(ref, states[ref]) for ref in refs}
        # (A fused pack's message waits on the first stage's queue, whatever stage its model is at.)
        lists = {lst for plan in plans.values() if plan
                 for stage in {plan[0], STAGES[0]} for lst in queue_lists(plan[1].job.model.queue_for(stage))}
        with self._broker() as (channel, client):
            pending = {states[ref].get("pending", "") for ref in refs} - {""}
            # The queues first, then the messages workers hold: one taken from a queue meanwhile
            # is in the hash by then (delivered, not acked; also a retry's countdown).
            found = _find(client, sorted(lists), pending)
            found |= pending & set(_unacked(client, channel.unacked_key))
        for ref in refs:
            st, plan = states[ref], plans[ref]
            if st.get("pending") in found or plan is None:
                # Still queued (a backlog, or a retry's countdown): look again in stall_timeout.
                # No plan: nothing to send it from (no stored spec); the log says so once a period.
                self.rt.redis.zadd(keys.HANDOFFS, {ref: now}, xx=True)
                if plan is None:
                    log.warning("%s stalled and cannot be resent (no stored spec)", ref)
                done["queued" if plan else "unresendable"] += 1
                continue
            stage, state = plan
            batch = self._batch(state.job.batch_id) or {}
            priority = PRIORITIES[batch.get("priority") or "normal"]
            canvas, ids = single_chain(self.app, state, stage, priority)
            note = (f"no message for {stage} found after {self.rt.settings.stall_timeout:.0f}s; "
                    f"resent at {_clock()}")
            if self.move(ref, st, pending=ids[0], note=note, status="queued", chain_ids=ids):
                canvas.apply_async()
                log.warning("%s: %s", ref, note)
                done["resent"] += 1
        return done

    def move(self, ref: str, state: dict[str, str], pending: str, note: str, status: str,
             chain_ids: list[str] | None = None) -> bool:
        """_MOVE for one model, its new state journaled; False if a stage moved it meanwhile
        or its batch was cancelled (then it is marked cancelled, not resumed)."""
        batch_id, _, model = ref.rpartition("/")
        reply = self._move(keys=[keys.batch_model(batch_id, model), keys.RUNNING, keys.HANDOFFS,
                                 keys.cancelled(batch_id), keys.batch_tasks(batch_id)],
                           args=[state.get("rev", ""), ref, time.time(), pending, note, status, model,
                                 json.dumps(chain_ids) if chain_ids else ""])
        if not reply:
            return False
        new = dict(zip(reply[::2], reply[1::2], strict=True))
        self.rt.tracker.journal.append([{"kind": "state", "batch_id": batch_id, "model": model,
                                         "state": new}])
        return new.get("status") != "cancelled"

    def resume_point(self, ref: str, st: dict[str, str]) -> tuple[str, ChainState] | None:
        """The stage to send the model on from, and its message: the output of its last
        completed stage (that stage's task result), else its stored spec from the start
        (the stages it had done are cache hits then)."""
        batch_id, _, model = ref.rpartition("/")
        stage = st.get("stage") or STAGES[0]
        if st.get(f"done_{stage}"):
            if stage == STAGES[-1]:
                return None
            stage = STAGES[STAGES.index(stage) + 1]
        before, _, task = (st.get("handoff") or "").partition("/")
        if (stage != STAGES[0] and before == STAGES[STAGES.index(stage) - 1]
                and (state := self._result_member(task, model)) is not None):
            return stage, state
        spec, batch = self.rt.tracker.model_spec(batch_id, model), self._batch(batch_id)
        if spec is None or batch is None:
            return None
        job = ModelJob(batch_id=batch_id, model=ModelSpec.model_validate(spec),
                       no_cache=bool(batch.get("no_cache")), max_parallel=batch.get("max_parallel"))
        return STAGES[0], ChainState(job=job)

    def _result_member(self, task: str, model: str) -> ChainState | None:
        """The model's state in what `task` returned (the next stage's message), if it succeeded."""
        meta = self.app.backend.get_task_meta(task)
        if meta.get("status") != "SUCCESS":
            return None  # not stored yet when the worker died, or expired (result_expires)
        try:
            return next((s for s in parse_message(meta["result"]) if s.job.model.name == model), None)
        except ValueError:
            return None

    def _batch(self, batch_id: str) -> dict[str, Any] | None:
        if batch_id not in self._batches:
            self._batches[batch_id] = self.rt.tracker.get_batch(batch_id)
        return self._batches[batch_id]

    @contextmanager
    def _broker(self) -> Iterator[tuple[Any, Any]]:
        """kombu's Redis channel (its unacked hash and restore) and a client of the broker
        (which may be another Redis than the records')."""
        with self.app.connection_for_write() as conn:
            channel = conn.default_channel
            with channel.conn_or_acquire() as client:
                yield channel, client


def _taken_again(client: Any, index_key: str, tag: str, refs: list[str],
                 states: dict[str, dict[str, str]]) -> bool:
    """Whether the unacked message `tag` was delivered after its dead holder last began a stage
    of these models (kombu indexes each delivery by its time): a later delivery is a live
    worker's, which has not begun yet. Workers' clocks are compared: NTP's skew is far below
    a stage's start."""
    delivered = client.zscore(index_key, tag)
    began = max((float(states[ref].get("updated") or 0) for ref in refs), default=0.0)
    return delivered is not None and began > 0 and float(delivered) > began


def _unacked(client: Any, key: str) -> dict[str, str]:
    """Task id -> delivery tag of every message a worker holds unacked (in-flight: small)."""
    out = {}
    for tag, raw in client.hgetall(key).items():
        try:
            out[json.loads(raw)[0]["headers"]["id"]] = bytes_to_str(tag)
        except (ValueError, KeyError, IndexError, TypeError):
            continue  # not a Celery task message
    return out


def _find(client: Any, lists: list[str], ids: set[str]) -> set[str]:
    """Which of `ids` have a message waiting in `lists`, read CHUNK messages a call."""
    found: set[str] = set()
    script, start = client.register_script(_FIND), 0
    while ids - found and lists:
        more, hits = script(keys=lists, args=[start, start + CHUNK - 1, *sorted(ids - found)])
        found |= {bytes_to_str(h) for h in hits}
        if not more:
            break
        start += CHUNK  # new messages go in at the head: a message may be read twice, never skipped
    return found


def _clock() -> str:
    return time.strftime("%H:%M:%S", time.gmtime()) + " UTC"


class _SweeperThread(threading.Thread):
    """In every worker: every sweep_interval (with jitter), try the fleet's sweeper lock.

    The lock is not released: it lapses after sweep_interval, so one sweep starts per
    interval across the fleet whichever workers live, and a dead holder blocks nobody.
    """

    def __init__(self, app: Celery) -> None:
        super().__init__(name="stall-sweeper", daemon=True)
        self.holder = f"{socket.gethostname()}:{os.getpid()}"  # who holds the lock, for a reader
        self.app, self.stop = app, threading.Event()

    def run(self) -> None:
        settings = self.app.modelfleet_settings
        interval = settings.sweep_interval
        sweeper: Sweeper | None = None
        while not self.stop.wait(interval * random.uniform(0.5, 1.0)):
            try:
                sweeper = sweeper or Sweeper(self.app, Runtime.from_settings(settings))
                if (sweeper.rt.redis.set(keys.SWEEPER, self.holder, nx=True, px=int(interval * 1000))
                        and (counts := sweeper.sweep())):
                    log.info("sweep: %s", dict(counts))
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("sweep failed (tried again in %.0fs): %s", interval, exc)
            except Exception:  # a bug must not stop the thread: the next sweep may succeed
                log.exception("sweep failed")


_threads: list[_SweeperThread] = []


@worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is None or not hasattr(app, "modelfleet_settings") or app.modelfleet_settings.sweep_interval <= 0:
        return
    thread = _SweeperThread(app)
    thread.start()
    _threads.append(thread)


@worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    for thread in _threads:
        thread.stop.set()
