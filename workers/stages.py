"""The four Celery tasks. Each is thin: parse the message, look in the cache,
call the pure step, store the artifact, record the run, return the message.

Retries, routing and acks are declared here and in app.py, never in the ML code.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import redis.exceptions
from celery import Task, shared_task
from celery.exceptions import Ignore, Reject
from celery.signals import worker_process_init
from celery.utils.log import get_task_logger
from threadpoolctl import threadpool_limits

from workers import keys
from workers.cache import LIBRARY_VERSIONS, STAGE_VERSIONS, LeaseTimeout, cache_key
from workers.contracts import ChainState, DeployedInfo, EvaluatedInfo, PreparedInfo, TrainedInfo
from workers.pipeline.data import load_dataset
from workers.pipeline.estimators import build_estimator
from workers.pipeline.evaluate import compute_metrics
from workers.pipeline.preprocess import dump_split, load_split, prepare, table_digest_bytes
from workers.pipeline.train import dump_model, fit, load_model
from workers.registry import decide
from workers.runtime import Runtime
from workers.store import digest_bytes

log = get_task_logger(__name__)

# Worth another try: the broker or disk hiccupped, or another worker held a lease too long.
TRANSIENT = (ConnectionError, TimeoutError, redis.exceptions.ConnectionError,
             redis.exceptions.TimeoutError, LeaseTimeout, InterruptedError, BlockingIOError)


@worker_process_init.connect
def _one_thread_per_process(**_: Any) -> None:
    # k processes x n BLAS threads on k cores thrash: measured 40x slower fits.
    threadpool_limits(1)


class TooManyDeliveries(RuntimeError):
    """The message killed its worker on every try; fail it instead of looping."""


class StageTask(Task):  # type: ignore[misc]
    autoretry_for = TRANSIENT
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    _runtime: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            type(self)._runtime = Runtime.from_settings(self.app.modelfleet_settings)
        assert self._runtime is not None
        return self._runtime

    def begin(self, message: dict[str, Any], stage: str) -> ChainState:
        """Parse the message and refuse work that is done, cancelled or poisonous."""
        state = ChainState.model_validate(message)
        r, job = self.runtime.redis, state.job
        delivery_key = f"{keys.deliveries(self.request.id)}:{self.request.retries}"
        # The checks and the delivery count in one round trip instead of four (this runs
        # for every stage of every model). The result backend is this same Redis.
        pipe = r.pipeline(transaction=False)
        pipe.exists(keys.cancelled(job.batch_id))
        pipe.get(self.backend.get_key_for_task(self.request.id))
        pipe.incr(delivery_key)
        pipe.expire(delivery_key, 7 * 24 * 3600)
        cancelled, result, deliveries, _ = pipe.execute()
        if cancelled:
            self._cancel(job.batch_id, job.model.name)
        # A redelivered message whose task already succeeded (its next stage was sent): skip.
        if result is not None and self.backend.decode_result(result).get("status") == "SUCCESS":
            raise Ignore()
        if deliveries > self.runtime.settings.max_deliveries:
            raise TooManyDeliveries(f"{stage} was delivered {deliveries} times and never finished "
                                    "(its worker died each time)")
        self.runtime.tracker.set_model_state(job.batch_id, job.model.name, stage=stage,
                                             status="running", worker=self.request.hostname)
        # Checked again after writing "running": `cancel` may have marked this model
        # cancelled in between, and our write must not leave it running forever.
        if r.exists(keys.cancelled(job.batch_id)):
            self._cancel(job.batch_id, job.model.name)
        return state

    def _cancel(self, batch_id: str, model: str) -> None:
        self.runtime.tracker.set_model_state(batch_id, model, status="cancelled")
        raise Ignore()

    def step(self, state: ChainState, stage: str, params: Any, inputs: list[str],
             compute: Callable[[], tuple[dict[str, Any], list[str]]],
             cached: bool = True) -> tuple[dict[str, Any], str]:
        """Run compute through the cache and record the run; returns (value, run_id)."""
        rt, job = self.runtime, state.job
        key = cache_key(stage, params, inputs)
        run = self.run_base(state, stage, params, inputs, key)
        started = run["started"]
        try:
            if cached:
                value, hit = rt.cache.compute_once(key, stage, compute, use_cache=not job.no_cache)
            else:
                (value, _), hit = compute(), False
        except Exception as exc:
            self.record_failure(run, exc)
            raise
        finished = time.time()
        run_id = rt.tracker.record_run({
            **run, "status": "succeeded", "error": None, "finished": finished,
            "duration": finished - started, "cache_hit": hit, "metrics": value.get("metrics", {}),
            "outputs": [v for k, v in value.items() if k.endswith("_digest") and v],
            "result": value})
        rt.tracker.set_model_state(job.batch_id, job.model.name, **{f"done_{stage}": finished})
        return value, run_id

    def run_base(self, state: ChainState, stage: str, params: Any, inputs: list[str],
                 key: str | None) -> dict[str, Any]:
        job = state.job
        return {"batch_id": job.batch_id, "model": job.model.name, "stage": stage,
                "params": params, "inputs": inputs, "cache_key": key, "started": time.time(),
                "task_id": self.request.id, "worker": self.request.hostname or socket.gethostname(),
                "tags": job.model.tags, "code_version": STAGE_VERSIONS[stage],
                "libraries": LIBRARY_VERSIONS}

    def record_failure(self, run: dict[str, Any], exc: BaseException) -> None:
        finished = time.time()
        self.runtime.tracker.record_run({
            **run, "status": "failed", "error": f"{type(exc).__name__}: {exc}", "finished": finished,
            "duration": finished - run["started"], "cache_hit": False, "outputs": [], "metrics": {}})

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's retry, but never drop the message when the retry cannot be sent.

        If the broker is down, Celery rejects the message *without* requeue, which
        with acks_late loses the model (seen in the Redis-restart test). Requeue it
        instead; if even that cannot reach Redis, the message is still unacked
        there and comes back after the visibility timeout.
        """
        try:
            return super().retry(*args, **kwargs)
        except Reject as exc:
            if exc.requeue:
                raise
            log.warning("could not send the retry (%s); handing the message back", exc.reason)
            raise Reject(exc.reason, requeue=True) from exc

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        self._mark(args, status="retrying", error=f"{type(exc).__name__}: {exc}")

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        self._mark(args, status="failed", error=f"{type(exc).__name__}: {exc}")

    def _mark(self, args: Any, **fields: Any) -> None:
        try:
            job = ChainState.model_validate(args[0]).job
        except Exception:  # a hand-made message that never parsed has no model to mark
            log.warning("rejected a message that is not a modelfleet chain state")
            return
        self.runtime.tracker.set_model_state(job.batch_id, job.model.name, **fields)


def _stage(name: str) -> Callable[[Callable[..., Any]], Any]:
    return shared_task(name=f"modelfleet.{name}", base=StageTask, bind=True)  # type: ignore[no-any-return]


@_stage("preprocess")
def preprocess(self: StageTask, message: dict[str, Any]) -> dict[str, Any]:
    state = self.begin(message, "preprocess")
    model, store = state.job.model, self.runtime.store
    params = {"task": model.task, "preprocess": model.preprocess.model_dump(mode="json")}
    try:
        table = load_dataset(model.dataset, model.task, self.runtime.settings.data_root)
    except Exception as exc:  # a bad data file is a failed run too, before any cache key exists
        self.record_failure(self.run_base(state, "preprocess", params, [], None), exc)
        raise
    dataset_digest = digest_bytes(table_digest_bytes(table))

    def compute() -> tuple[dict[str, Any], list[str]]:
        split = prepare(table, model.task, model.preprocess)
        digest = store.put(dump_split(split))
        transform = store.put(dump_model(split.transform)) if split.transform is not None else None
        return {"data_digest": digest, "n_train": len(split.y_train), "n_test": len(split.y_test),
                "n_features": split.X_train.shape[1], "transform_digest": transform}, \
            [digest] + ([transform] if transform else [])

    value, run_id = self.step(state, "preprocess", params, [dataset_digest], compute)
    info = PreparedInfo(dataset_digest=dataset_digest, run_id=run_id, **value)
    return state.model_copy(update={"prepared": info}).model_dump(mode="json")


@_stage("train")
def train(self: StageTask, message: dict[str, Any]) -> dict[str, Any]:
    state = self.begin(message, "train")
    model, rt = state.job.model, self.runtime
    assert state.prepared is not None, "train needs a prepared message"
    data_digest = state.prepared.data_digest
    # Checked on every delivery, so a hand-made message cannot smuggle an import in.
    estimator = build_estimator(model.estimator, model.task, rt.settings.allowed_estimator_prefixes)

    def compute() -> tuple[dict[str, Any], list[str]]:
        split = load_split(rt.store.get(data_digest))
        digest = rt.store.put(dump_model(fit(estimator, split.X_train, split.y_train)))
        return {"model_digest": digest}, [digest]

    params = {"task": model.task, "estimator": model.estimator.model_dump(mode="json")}
    value, run_id = self.step(state, "train", params, [data_digest], compute)
    info = TrainedInfo(run_id=run_id, **value)
    return state.model_copy(update={"trained": info}).model_dump(mode="json")


@_stage("evaluate")
def evaluate(self: StageTask, message: dict[str, Any]) -> dict[str, Any]:
    state = self.begin(message, "evaluate")
    model, rt = state.job.model, self.runtime
    assert state.prepared is not None and state.trained is not None, "evaluate needs a trained message"
    data_digest, model_digest = state.prepared.data_digest, state.trained.model_digest

    def compute() -> tuple[dict[str, Any], list[str]]:
        split = load_split(rt.store.get(data_digest))
        fitted = load_model(rt.store.get(model_digest), rt.settings.allowed_estimator_prefixes)
        metrics = compute_metrics(fitted, split.X_test, split.y_test, model.metric_names)
        report = rt.store.put_json({"metrics": metrics, "model_digest": model_digest,
                                    "data_digest": data_digest, "n_test": len(split.y_test)})
        return {"report_digest": report, "metrics": metrics}, [report]

    params = {"metrics": model.metric_names}
    value, run_id = self.step(state, "evaluate", params, [model_digest, data_digest], compute)
    info = EvaluatedInfo(run_id=run_id, **value)
    return state.model_copy(update={"evaluated": info}).model_dump(mode="json")


@_stage("deploy")
def deploy(self: StageTask, message: dict[str, Any]) -> dict[str, Any]:
    state = self.begin(message, "deploy")
    job, rt = state.job, self.runtime
    ev = state.evaluated
    assert ev is not None, "deploy needs an evaluated message"
    name, alias = job.model.name, job.model.deploy.alias

    def compute() -> tuple[dict[str, Any], list[str]]:
        # Keyed by the evaluation report: the same evaluated artifact registers once.
        version, _ = rt.registry.register(name, ev.report_digest, {
            "batch_id": job.batch_id, "metrics": ev.metrics, "primary_metric":
            job.model.primary_metric, "tags": job.model.tags, "lineage": state.model_dump(mode="json"),
            "libraries": LIBRARY_VERSIONS, "stage_versions": STAGE_VERSIONS})
        promoted, reason = _promote_once(rt, state, version)
        return {"version": version, "promoted": promoted, "reason": reason, "alias": alias}, []

    value, run_id = self.step(state, "deploy", {"alias": alias, "gate": job.model.deploy.gate
                                                .model_dump(mode="json")},
                              [ev.report_digest], compute, cached=False)
    info = DeployedInfo(run_id=run_id, **value)
    rt.tracker.set_model_state(job.batch_id, name, status="deployed", version=info.version,
                               promoted=int(info.promoted), reason=info.reason,
                               metrics=ev.metrics)
    return state.model_copy(update={"deployed": info}).model_dump(mode="json")


def _promote_once(rt: Runtime, state: ChainState, version: int) -> tuple[bool, str]:
    """Decide a version's promotion once; a redelivered deploy reuses the decision."""
    job, ev = state.job, state.evaluated
    assert ev is not None
    name, alias = job.model.name, job.model.deploy.alias
    record = rt.registry.version(name, version)
    if "decision" in record:
        return bool(record["decision"]["promoted"]), str(record["decision"]["reason"])
    while True:
        current = rt.registry.aliases(name).get(alias)
        incumbent = rt.registry.version(name, current)["metrics"] if current not in (None, version) else None
        decision = decide(job.model.deploy.gate, job.model.gate_metric, ev.metrics, incumbent)
        if not decision.promote or current == version:
            break
        if rt.registry.move_alias(name, alias, version, current):
            break  # else another deploy moved the alias meanwhile: decide again against it
    rt.registry.annotate(name, version, decision={"promoted": decision.promote,
                                                  "reason": decision.reason, "alias": alias})
    return decision.promote, decision.reason

