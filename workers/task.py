"""The Celery edge of a stage: one StageTask per stage, the part that is not ML.

A message carries one model (ChainState) or a pack of small models (PackState);
`run_stage` runs the stage's body (workers/stages.py) for each model it carries,
and each model is tracked, cached, versioned and failed on its own. Per model a
stage costs a shared begin (one round trip for the whole pack), one cache lookup
and one pipelined write of all its records (run, state, cache entry, counters,
lease release). Here: begin, poison, batch slots, retries, the run records and
the worker-process signals; retries, routing and acks are declared here and in
app.py, never in the ML code.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis.exceptions
from billiard.util import set_pdeathsig
from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown
from celery.utils.log import get_task_logger
from threadpoolctl import threadpool_limits

from workers import keys
from workers.backpressure import full_is_transient
from workers.cache import LIBRARY_VERSIONS, LeaseTimeout, cache_key, keep_alive
from workers.contracts import ChainState, parse_message, to_message
from workers.fingerprint import fingerprint
from workers.journal import flush_all
from workers.recovery import handed_on, single_chain
from workers.runtime import Runtime
from workers.settings import STAGES
from workers.store import LocalRoot, RootFull
from workers.tracking import DEPLOYED, TERMINAL
from workers.writes import Writes

log = get_task_logger(__name__)
# Celery logs every task received and every result at INFO (the latter a repr of the whole
# message); our own line per stage names the task, the models and the time instead, at a
# fraction of the cost. Failures and retries are still logged (WARNING and up).
logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
logging.getLogger("celery.worker.strategy").setLevel(logging.WARNING)

# What each stage runs (workers/stages.py registers its bodies): the stage's code version,
# part of every cache key, is the fingerprint of that function.
BODIES: dict[str, Callable[..., Any]] = {}
# Versions a worker's warm-up read from disk (workers/code_versions.py): the same fingerprints.
KNOWN_CODE_VERSIONS: dict[str, str] = {}


@functools.cache
def stage_code_version(stage: str) -> str:
    """The stage's code fingerprint, computed once per process (workers/fingerprint.py)."""
    return KNOWN_CODE_VERSIONS.get(stage) or fingerprint(BODIES[stage])


def stage_code_versions() -> dict[str, str]:
    return {stage: stage_code_version(stage) for stage in STAGES}


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"

# A fused pack's finished members' records are sent at least this often (seconds): what a
# SIGKILL mid-pack can cost its neighbours in redone work, and how long a finished member's
# cache lease may wait for its release, against one round trip per member and stage.
RECORDS_EVERY = 0.1
# How long a try's "retry sent" note is kept: far past any redelivery of that try.
RETRY_SENT_TTL = 7 * 24 * 3600
# Worth another try: the broker or disk hiccupped, or another worker held a lease too long.
# A full Redis (maxmemory) too: the retry waits in the worker until Redis takes writes again.
TRANSIENT = (ConnectionError, TimeoutError, RootFull, redis.exceptions.ConnectionError,
             redis.exceptions.TimeoutError, redis.exceptions.OutOfMemoryError, LeaseTimeout,
             InterruptedError, BlockingIOError)

# KEYS: cancelled flag, the task's result, its delivery counter, the model's state, the task's
# alive key, the batch's chain ids, the sweeper's RUNNING and HANDOFFS sets
# (workers/recovery.py). ARGV: max deliveries, stage, worker, now, task id (the alive token),
# alive ttl (ms), model name, model ref, a token of this begin at a delivery's first stage (''
# at later ones). Marks the model running unless its batch was cancelled, the task already
# succeeded (a redelivered copy), the model already failed (a pack retried for a neighbour's
# transient error skips it) or deployed (a copy of an earlier stage that began after its chain
# had deployed the model, before Celery stored the task's result: Celery sends a chain's next
# task first), the task is not in the model's recorded chain ('stale': a late copy of a chain
# the sweeper or a poisoned pack's split replaced) or the message was delivered too often:
# then 'wait' while an earlier copy still runs (its heartbeat keeps the alive key), else
# 'poison'. A message delivered again while a copy of it still runs (Redis hands an unacked
# message out again after the visibility timeout: a long stage, or a retry's countdown held by
# a busy worker) is a 'copy': it waits for that one instead of running beside it. Atomic, so
# `cancel` (flag first, then states) never misses a model that starts meanwhile, and the
# sweeper (a compare-and-set on rev) never resends a model whose stage just began.
_BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'cancelled' end
local result = redis.call('GET', KEYS[2])
if result and cjson.decode(result)['status'] == 'SUCCESS' then return 'done' end
local status = redis.call('HGET', KEYS[4], 'status')
if status == 'failed' then return 'failed' end
local chain = redis.call('HGET', KEYS[6], ARGV[7])
if chain and not string.find(chain, '"' .. ARGV[5] .. '"', 1, true) then return 'stale' end
if IS_DEPLOYED then return 'deployed' end
local deliveries = tonumber(redis.call('GET', KEYS[3]) or '0')
if deliveries > tonumber(ARGV[1]) then
  if redis.call('EXISTS', KEYS[5]) == 1 then return 'wait' end
  return 'poison'
end
if ARGV[9] ~= '' and deliveries > 1 then
  -- The first member of this begin (ARGV[9] names it) to get here looks for a running copy;
  -- the alive key the members before it set is this copy's own.
  local begun = KEYS[5] .. ':begun:' .. ARGV[9]
  if redis.call('EXISTS', begun) == 0 then
    if redis.call('EXISTS', KEYS[5]) == 1 then return 'copy' end
    redis.call('SET', begun, 1, 'PX', ARGV[6])
  end
end
redis.call('SET', KEYS[5], ARGV[5], 'PX', ARGV[6])
redis.call('HSET', KEYS[4], 'stage', ARGV[2], 'status', 'running', 'worker', ARGV[3], 'updated', ARGV[4],
           'task', ARGV[5])
redis.call('HDEL', KEYS[4], 'done_' .. ARGV[2])
redis.call('HINCRBY', KEYS[4], 'rev', 1)
redis.call('ZADD', KEYS[7], ARGV[4], ARGV[8])
redis.call('ZREM', KEYS[8], ARGV[8])
return redis.call('HGETALL', KEYS[4])
""".replace("IS_DEPLOYED", " or ".join(f"status == '{s}'" for s in sorted(DEPLOYED)))  # tracking's list


# KEYS: the batch's slots. ARGV: max_parallel, task id, lease ttl (ms), the alive-key prefix.
# Takes one of the batch's max_parallel slots for this task (1) or says the batch is full (0).
# A slot is held while its task's alive key exists (the stage's heartbeat renews it, so it
# lapses lease_ttl after a killed worker) or for the first lease_ttl after it was taken
# (before the stage's begin sets that key): a dead worker cannot leak a slot. A finished
# stage removes its slot at once. Redis' own clock, so hosts' clocks need not agree.
# (The alive keys are not in KEYS: fine on one Redis, not on Redis Cluster.)
_TAKE_SLOT = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local held, mine = 0, false
local slots = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #slots, 2 do
  local task, since = slots[i], tonumber(slots[i + 1])
  if task == ARGV[2] then mine = true
  elseif since > now - tonumber(ARGV[3]) or redis.call('EXISTS', ARGV[4] .. task) == 1 then
    held = held + 1
  else redis.call('ZREM', KEYS[1], task) end
end
if not mine and held >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], 604800000)
return 1
"""


@worker_process_init.connect
def _one_thread_per_process(**_: Any) -> None:
    # k processes x n BLAS threads on k cores thrash: measured 40x slower fits.
    threadpool_limits(1)


@worker_process_shutdown.connect
def _flush_journals_before_the_child_exits(**_: Any) -> None:
    # A pool child leaves through os._exit (no atexit), on its pool's stop or a SIGTERM of
    # its own: upload the journals' last records first. It is on its way out, so nothing
    # may cut that (bounded) upload short: see _exit_once.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _outlive_the_main_process()
    _flush_at_exit()


def _outlive_the_main_process() -> None:
    # Celery has the kernel SIGKILL a pool child when its main process exits; a child on its
    # way out may take the few milliseconds its journal upload needs (bounded) after that.
    with contextlib.suppress(OSError):  # not on Linux: there is no such signal to clear
        set_pdeathsig(0)


def _exit_once() -> None:
    """In a pool child, let the first SIGTERM start the exit and ignore any later one.

    billiard's SIGTERM handler (installed after worker_process_init, hence here, on the
    first task) raises SystemExit, so the child exits through worker_process_shutdown,
    where the journal is uploaded; but it also resets SIGTERM to its default, so a second
    one (a process-group SIGTERM, then the pool's own) would kill the child mid-upload.
    """
    current = signal.getsignal(signal.SIGTERM)
    if (not callable(current) or getattr(current, "exit_once", False)
            or threading.current_thread() is not threading.main_thread()):
        return

    def exit_once(signum: int, frame: Any) -> None:
        _outlive_the_main_process()
        try:
            current(signum, frame)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    exit_once.exit_once = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, exit_once)


@worker_shutdown.connect
def _flush_journals_at_worker_exit(**_: Any) -> None:
    _flush_at_exit()  # the solo and threads pools run stages in the main process


def _flush_at_exit(timeout: float = 10.0) -> None:
    if not flush_all(timeout=timeout):  # the store stalled: say so, the records die with us
        log.warning("journal: the last records were not uploaded within %g s of this process's "
                    "exit; Redis still holds them, the artifact root's journal does not", timeout)


class TooManyDeliveries(RuntimeError):
    """The message killed its worker on every try; fail it instead of looping."""


class StageTask(Task):  # type: ignore[misc]
    autoretry_for = TRANSIENT
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    # Celery reprs every return value; the message is long and nobody reads it.
    resultrepr_maxsize = 120
    # A malformed message is dead-lettered, not allowed to stop the worker.
    Strategy = "workers.guard:guarded"
    _runtime: Runtime | None = None
    _begin_script: Any = None
    _take_slot_script: Any = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            type(self)._runtime = rt = Runtime.from_settings(self.app.modelfleet_settings)
            type(self)._begin_script = rt.redis.register_script(_BEGIN)
            type(self)._take_slot_script = rt.redis.register_script(_TAKE_SLOT)
            if not isinstance(rt.store.root, LocalRoot):
                _exit_once()
        assert self._runtime is not None
        return self._runtime

    def run_stage(self, message: dict[str, Any], stage: str,
                  step: Callable[[ChainState, Writes], ChainState], fused: bool = False) -> dict[str, Any]:
        """Run `step` for every model the message carries; returns the next stage's message.

        `fused` (small models, producer/packing.py): run every stage from this one on,
        here, stage by stage as the chain would, without the hand-offs between them.
        """
        packed = isinstance(message, dict) and "pack" in message
        states = parse_message(message)
        started = time.perf_counter()
        job = states[0].job  # a pack's models share their batch
        stages = STAGES[STAGES.index(stage):] if fused else (stage,)
        if job.max_parallel is not None:
            self._take_slot(job.batch_id, job.max_parallel)
        try:
            done = self.begin(states, stage)
            # While this copy runs, its heartbeat keeps the task's alive key: a redelivered copy
            # of a long, healthy stage then waits for it instead of counting it as poison.
            with keep_alive(self.runtime.redis, keys.alive(self.request.id), self.request.id,
                            self.runtime.settings.lease_ttl):
                for later, current in enumerate(stages):
                    if later:
                        done = self.begin(done, current, first=False)
                    body = step if current == stage else functools.partial(BODIES[current], self)
                    done = self._run_members(done, current, packed, body, RECORDS_EVERY if fused else 0.0)
        finally:
            if job.max_parallel is not None:
                self._release_slot(job.batch_id)
        log.info("%s: %d model(s) in %.3f s", self.request.argsrepr or stage, len(done),
                 time.perf_counter() - started)
        if not done:
            raise Ignore()  # every model left the chain (failed, cancelled): nothing goes on
        return to_message(done, packed)

    def _take_slot(self, batch_id: str, max_parallel: int) -> None:
        """Hold one of the batch's max_parallel slots, or send this task back to its queue.

        Back to the queue, not waiting here: a waiting task would hold a worker, and a cap
        exists to leave the other workers to other batches. The same task id, retry count
        and chain, due again in 1-2x cap_retry_delay seconds; not a delivery (begin has
        not counted it), so a capped stage is never taken for poison.
        """
        rt = self.runtime
        with full_is_transient():  # a full Redis: retried with backoff, not the model's failure
            taken = self._take_slot_script(keys=[keys.batch_slots(batch_id)],
                                           args=[max_parallel, self.request.id,
                                                 int(rt.settings.lease_ttl * 1000), keys.alive("")])
        if taken:
            return
        again = self.signature_from_request(self.request, countdown=rt.settings.cap_retry_delay
                                            * random.uniform(1, 2), retries=self.request.retries)
        try:
            again.apply_async()
        except Exception as exc:  # the broker is down: hand the message back (it is unacked)
            raise Reject(f"could not requeue a capped stage: {exc}", requeue=True) from exc
        raise Ignore()

    def _release_slot(self, batch_id: str) -> None:
        try:
            self.runtime.redis.zrem(keys.batch_slots(batch_id), self.request.id)
        except redis.exceptions.RedisError as exc:  # the slot lapses with the alive key
            log.warning("could not release a slot of %s: %s", batch_id, exc)

    def _run_members(self, states: list[ChainState], stage: str, packed: bool,
                     step: Callable[[ChainState, Writes], ChainState], every: float) -> list[ChainState]:
        # A fused pack's members (small by estimate) send their records together, at least
        # every `every` seconds (Redis, which every worker shares, spent 1.3-1.6 ms a small
        # model, now 1.0-1.2): a member that kills the process takes at most that much of its
        # neighbours' finished work with it (computed again on redelivery, recorded once), and
        # a finished member's cache lease is released that late at most. Other packs' members
        # may be big: each one's records go as soon as it is done (every = 0).
        done: list[ChainState] = []
        pending = self.runtime.tracker.writes()
        sent = time.monotonic()
        try:
            for state in states:
                writes = Writes(pending.client, pending.journal, earlier=pending)
                try:
                    with full_is_transient():  # a full Redis refusing a script (the registry's)
                        done.append(step(state, writes))
                except TRANSIENT:
                    raise  # the whole message is retried; finished members are cache hits then
                except Exception as exc:
                    if not packed:
                        raise  # on_failure marks the model failed
                    self.runtime.tracker.set_model_state(state.job.batch_id, state.job.model.name,
                                                         status="failed", error=error_text(exc))
                    log.warning("%s failed for %s: %s", stage, state.job.model.name, error_text(exc))
                    continue
                pending.take(writes)  # a failed member's queued writes are dropped, as before
                if time.monotonic() - sent >= every:
                    pending.execute()
                    sent = time.monotonic()
        finally:
            pending.execute()  # also when a member raised: the finished ones' records and leases
        return done

    def begin(self, states: list[ChainState], stage: str, first: bool = True,
              count: bool = True) -> list[ChainState]:
        """Mark the models running; drop cancelled ones; refuse done or poisonous messages.

        A delivery is counted (and judged poison) at its first stage only: a fused pack's
        later stages begin in the same delivery. `count=False`: this delivery was counted
        already (it waited for a copy of itself and begins again).
        """
        rt = self.runtime
        delivery_key = f"{keys.deliveries(self.request.id)}:{self.request.retries}"
        begin = Writes(rt.redis, rt.tracker.journal)
        begin.pipe.incr(delivery_key, 1 if first and count else 0)
        begin.pipe.expire(delivery_key, 7 * 24 * 3600)
        max_deliveries = rt.settings.max_deliveries if first else 2**31
        result_key = self.backend.get_key_for_task(self.request.id)
        worker = self.request.hostname or socket.gethostname()
        alive = keys.alive(self.request.id)
        this_begin = uuid.uuid4().hex if first else ''  # a delivery's first stage looks for copies
        for state in states:
            job = state.job
            begin.script(self._begin_script,
                         [keys.cancelled(job.batch_id), result_key, delivery_key,
                          keys.batch_model(job.batch_id, job.model.name), alive,
                          keys.batch_tasks(job.batch_id), keys.RUNNING, keys.HANDOFFS],
                         [max_deliveries, stage, worker, time.time(), self.request.id,
                          int(rt.settings.lease_ttl * 1000), job.model.name,
                          keys.model_ref(job.batch_id, job.model.name), this_begin])
        replies = begin.execute()[2:]
        running, journal = [], []
        for state, reply in zip(states, replies, strict=True):
            job = state.job
            if reply == "done":  # a redelivered copy of a task that already succeeded
                raise Ignore()
            if reply == "copy":
                return self._after_running_copy(states, stage, result_key, alive)
            if reply == "wait":
                self._wait_for_running_copy(result_key, alive)
                self._poisoned(states, stage)  # the running copy died without finishing
            if reply == "poison":
                self._poisoned(states, stage)
            if reply == "cancelled":
                rt.tracker.set_model_state(job.batch_id, job.model.name, status="cancelled")
                log.info("%s: skipped %s, its batch was cancelled", stage, job.model.name)
                continue
            if reply == "failed":  # stays failed until `modelfleet retry` resets it
                continue
            if reply == "deployed":  # a late copy: it would mark a deployed model running again
                log.info("%s: skipped %s, already deployed", stage, job.model.name)
                continue
            if reply == "stale":  # the model goes on in a newer chain (workers/recovery.py)
                log.info("%s: skipped %s, resent in a newer chain", stage, job.model.name)
                continue
            journal.append({"kind": "state", "batch_id": job.batch_id, "model": job.model.name,
                            "state": dict(zip(reply[::2], reply[1::2], strict=True))})
            running.append(state)
        rt.tracker.journal.append(journal)
        return running

    def _after_running_copy(self, states: list[ChainState], stage: str, result_key: str,
                            alive: str) -> list[ChainState]:
        """Take the outcome of a copy of this delivery that runs elsewhere, or carry on for it.

        Two copies side by side would both run each model: a pack's failing member twice, and
        the slower copy's retry bookkeeping over the faster one's results.
        """
        self._wait_for_running_copy(result_key, alive)  # Ignore if it succeeded
        result = self.runtime.redis.get(result_key)
        outcome = None if result is None else self.backend.decode_result(result).get("status")
        # A RETRY may be an earlier try's: this try's retry was sent only if it said so (the
        # models read 'retrying' from before the send, so a copy killed in between looks alike).
        sent = outcome == "RETRY" and self.runtime.redis.exists(
            keys.retry_sent(self.request.id, self.request.retries))
        if (sent or outcome == "FAILURE") and "running" not in self._statuses(states):
            raise Ignore()  # it sent the retry or failed its models, and marked them so
        # It died mid-stage or before sending its retry: this copy runs the stage, unless a
        # newer copy has begun meanwhile (then wait again).
        return self.begin(states, stage, count=False)

    def _wait_for_running_copy(self, result_key: str, alive: str) -> None:
        """Wait while an earlier copy of this task runs: Ignore if it succeeds, return if it dies."""
        r, deadline = self.runtime.redis, time.monotonic() + self.runtime.settings.lease_wait_timeout
        while time.monotonic() < deadline:
            result, running = r.get(result_key), r.exists(alive)
            if result is not None and self.backend.decode_result(result).get("status") == "SUCCESS":
                raise Ignore()
            if not running:
                return
            time.sleep(0.25)  # polling Redis: the copy's success or its heartbeat's lapse
        raise LeaseTimeout(f"waited {self.runtime.settings.lease_wait_timeout}s for a running copy")

    def _poisoned(self, states: list[ChainState], stage: str) -> None:
        """A message that killed its worker every time: fail one model, split a pack."""
        if len(states) == 1:
            raise TooManyDeliveries(f"{stage} was delivered {self.runtime.settings.max_deliveries + 1} "
                                    "times and never finished (its worker died each time)")
        # One model of the pack may be the killer: go on one by one, so it cannot take
        # its neighbours down; each single chain has its own delivery count.
        priority = (self.request.delivery_info or {}).get("priority")  # the batch's, kept
        for state in states:
            single, ids = single_chain(self.app, state, stage, priority)
            # `cancel` revokes the model's new chain, not the pack's spent one.
            self.runtime.tracker.record_task_ids(state.job.batch_id, {state.job.model.name: ids})
            single.apply_async()
        log.warning("%s: a pack of %d killed its worker %d times; resent its models one by one",
                    stage, len(states), self.runtime.settings.max_deliveries + 1)
        raise Ignore()

    def step(self, state: ChainState, writes: Writes, stage: str, params: Any, inputs: list[str],
             compute: Callable[[], tuple[dict[str, Any], list[str]]],
             cached: bool = True) -> tuple[dict[str, Any], str]:
        """Run compute through the cache and queue the run record; returns (value, run_id)."""
        rt, job = self.runtime, state.job
        key = cache_key(stage, params, inputs, stage_code_version(stage))
        run = self.run_base(state, stage, params, inputs, key)
        started = run["started"]
        try:
            if cached:
                value, hit = rt.cache.compute_once(key, stage, compute, use_cache=not job.no_cache,
                                                   writes=writes, batch=job.batch_id)
            else:
                (value, _), hit = compute(), False
        except Exception as exc:
            self.record_failure(run, exc)
            raise
        finished = time.time()
        if not hit:
            rt.tracker.record_cost(writes, job.model.cost_class, stage, finished - started)
        run_id = rt.tracker.run(writes, {
            **run, "status": "succeeded", "error": None, "finished": finished,
            "duration": finished - started, "cache_hit": hit, "metrics": value.get("metrics", {}),
            "outputs": [v for k, v in value.items() if k.endswith("_digest") and v],
            "result": value})
        # What the sweeper resends the model from if its next message is lost: this task's
        # result (the next stage's message), and the next task's id to look for in the queues
        # (this task's own if no chain follows: then this task carries the model on itself).
        later = self.request.chain or []
        rt.tracker.state(writes, job.batch_id, job.model.name, **{
            # took_: the leaderboard's compute time, without reading the batch's run records.
            f"done_{stage}": finished, f"took_{stage}": round(finished - started, 6),
            "handoff": f"{stage}/{self.request.id}",
            "pending": later[-1].get("options", {}).get("task_id") if later else self.request.id})
        handed_on(writes, job.batch_id, job.model.name, stage, finished)
        return value, run_id

    def run_base(self, state: ChainState, stage: str, params: Any, inputs: list[str],
                 key: str | None) -> dict[str, Any]:
        job = state.job
        return {"batch_id": job.batch_id, "model": job.model.name, "stage": stage,
                "params": params, "inputs": inputs, "cache_key": key, "started": time.time(),
                "task_id": self.request.id, "worker": self.request.hostname or socket.gethostname(),
                "tags": job.model.tags, "code_version": stage_code_version(stage),
                "libraries": LIBRARY_VERSIONS}

    def record_failure(self, run: dict[str, Any], exc: BaseException) -> None:
        finished = time.time()
        self.runtime.tracker.record_run({
            **run, "status": "failed", "error": error_text(exc), "finished": finished,
            "duration": finished - run["started"], "cache_hit": False, "outputs": [], "metrics": {}})

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's retry, but never drop the message when the retry cannot be sent.

        If the broker is down, Celery rejects the message *without* requeue, which
        with acks_late loses the model (seen in the Redis-restart test). Requeue it
        instead; if even that cannot reach Redis, the message is still unacked
        there and comes back after the visibility timeout.

        The models are marked retrying before the retry is sent, not in on_retry: the next
        try may begin (and mark them running) before on_retry runs, and a 'retrying' written
        over that tells a redelivered copy of the next try that nothing runs there.
        """
        exc = kwargs.get("exc")
        try:
            self._mark(self.request.args, status="retrying", error=error_text(exc) if exc else "retried")
        except redis.exceptions.RedisError as err:  # Redis is down: the retry's send decides below
            log.warning("could not mark the models retrying: %s", err)
        try:
            return super().retry(*args, **kwargs)
        except Retry:  # sent: say so while this copy's alive key still stands (see _after_running_copy)
            try:
                self.runtime.redis.set(keys.retry_sent(self.request.id, self.request.retries), 1,
                                       ex=RETRY_SENT_TTL)
            except redis.exceptions.RedisError as err:  # a copy then runs this try again: twice, not lost
                log.warning("could not record the retry as sent: %s", err)
            raise
        except Reject as exc:
            if exc.requeue:
                raise
            log.warning("could not send the retry (%s); handing the message back", exc.reason)
            raise Reject(exc.reason, requeue=True) from exc

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        log.warning("%s will be retried: %s", self.request.argsrepr or task_id, error_text(exc))

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        self._mark(args, status="failed", error=error_text(exc))

    def _mark(self, args: Any, **fields: Any) -> None:
        try:
            states = parse_message(args[0])
        except Exception:  # a hand-made message that never parsed has no model to mark
            log.warning("rejected a message that is not a modelfleet chain state")
            return
        # A pack's member that already failed (or was deployed, or cancelled) in this delivery
        # keeps that state: marked 'retrying', the retried message would run it again.
        writes = self.runtime.tracker.writes()
        for state, status in zip(states, self._statuses(states), strict=True):
            if status not in TERMINAL:
                self.runtime.tracker.state(writes, state.job.batch_id, state.job.model.name, **fields)
        writes.execute()

    def _statuses(self, states: list[ChainState]) -> list[str | None]:
        """Each model's status, in order (a pack's models share their batch)."""
        names = [state.job.model.name for state in states]
        if not names:
            return []
        read = self.runtime.tracker.model_states(states[0].job.batch_id, names, ["status"])
        return [read[name].get("status") for name in names]
