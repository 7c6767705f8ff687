"""Copy every deployed model into MLflow, off the stages' hot path (optional).

With `MODELFLEET_MLFLOW_TRACKING_URI` set (and the `mlflow` extra installed), the
deploy stage hands each message it finished to this process's sink: one daemon
thread draining a bounded queue. `offer` never blocks and never raises, so a slow
or down MLflow server cannot fail or stall a stage; the thread writes one MLflow run
per model (params, metrics, tags, the model file and its evaluation report), a
registered model version and, when the gate promoted it, the alias.

Best effort by design: modelfleet's own registry stays the source of truth. A model
that cannot be written after a few tries, or that finds the queue full, is logged
and skipped; a worker killed with models still queued loses those copies. Writes
are idempotent (a run per batch and model, a version per modelfleet version), so a
redelivered deploy does not duplicate them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from celery.signals import worker_init, worker_process_shutdown

from workers.contracts import ChainState, parse_message
from workers.settings import Settings
from workers.store import ArtifactStore

log = logging.getLogger(__name__)

# Unless set otherwise: MLflow's client retries a request 7 times over about 4 minutes,
# so a down server would hold the thread that long per call (ours retries per model
# instead), and it prints a "View run" line to the worker's log for every run.
MLFLOW_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                   "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
_TAG_KEY_UNSAFE = re.compile(r"[^\w.\-/ ]")


class MlflowSink:
    """One background writer per worker process; `offer` is all a stage calls."""

    def __init__(self, settings: Settings, store: ArtifactStore, capacity: int = 1000,
                 attempts: int = 3, backoff: float = 2.0) -> None:
        from mlflow import MlflowClient  # the optional extra: imported only when configured

        self.client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri,
                                   registry_uri=settings.mlflow_tracking_uri)
        self.experiment_name, self.store = settings.mlflow_experiment, store
        self.attempts, self.backoff = attempts, backoff
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=capacity)
        self.dropped = 0
        self._experiment_id: str | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="mlflow-sink", daemon=True)
        self._thread.start()

    def offer(self, message: dict[str, Any]) -> None:
        """Queue a deploy stage's output message (one model or a pack); drop it if the queue is full."""
        try:
            self.queue.put_nowait(message)
        except queue.Full:
            self.dropped += 1
            log.warning("mlflow sink: queue full, %d message(s) not copied to MLflow so far", self.dropped)

    def close(self, timeout: float) -> None:
        """Write what is queued, for at most `timeout` seconds (at worker shutdown)."""
        self._closing.set()
        self._thread.join(timeout)

    def _drain(self) -> None:
        while not (self._closing.is_set() and self.queue.empty()):
            try:
                message = self.queue.get(timeout=0.5)  # wakes up to notice a close
            except queue.Empty:
                continue
            try:
                states = parse_message(message)
            except Exception:  # noqa: BLE001 (never let one message stop the thread)
                log.exception("mlflow sink: not a chain state, skipped")
                continue
            for state in states:
                self._write_with_retries(state)

    def _write_with_retries(self, state: ChainState) -> None:
        name = state.job.model.name
        for attempt in range(1, self.attempts + 1):
            try:
                self.write(state)
                return
            except Exception as exc:  # noqa: BLE001 (MLflow, HTTP and file errors alike)
                if attempt == self.attempts or self._closing.is_set():
                    log.warning("mlflow sink: %s of batch %s not copied to MLflow after %d tries: %s",
                                name, state.job.batch_id, attempt, exc)
                    return
                self._closing.wait(self.backoff * 2 ** (attempt - 1))  # a pause, cut short at shutdown

    def write(self, state: ChainState) -> str:
        """One model's run, version and alias in MLflow; returns the MLflow run id. Idempotent."""
        job, trained, evaluated, deployed = state.job, state.trained, state.evaluated, state.deployed
        if trained is None or evaluated is None or deployed is None:
            raise ValueError(f"{job.model.name}: not a deployed chain state")
        run_id, finished = self._run_for(state)
        if finished:  # a redelivered deploy: all written already (and the alias may have moved on)
            return run_id
        with tempfile.TemporaryDirectory(prefix="modelfleet-mlflow-") as tmp:
            model_file, report_file = Path(tmp, "model.skops"), Path(tmp, "report.json")
            model_file.write_bytes(self.store.get(trained.model_digest))
            report_file.write_text(json.dumps(self.store.get_json(evaluated.report_digest), indent=1))
            self.client.log_artifact(run_id, str(model_file), "model")
            self.client.log_artifact(run_id, str(report_file))
        version = self._version_for(state, run_id)
        if deployed.promoted:
            self.client.set_registered_model_alias(job.model.name, deployed.alias, version)
        self.client.set_terminated(run_id)
        return run_id

    def _run_for(self, state: ChainState) -> tuple[str, bool]:
        """The model's run in this batch and whether it was finished: found by its key tag
        (a redelivery, or a retry after a failed try), else created; params, metrics and tags logged."""
        from mlflow.entities import Metric, Param, RunTag

        job = state.job
        key = f"{job.batch_id}/{job.model.name}"
        found = self.client.search_runs([self._experiment()], f"tags.`modelfleet.key` = '{key}'",
                                        max_results=1)
        if found and found[0].info.status == "FINISHED":
            return str(found[0].info.run_id), True
        run_id = str(found[0].info.run_id if found else
                     self.client.create_run(self._experiment(), run_name=job.model.name,
                                            tags={"modelfleet.key": key}).info.run_id)
        now, metrics = int(time.time() * 1000), state.evaluated.metrics if state.evaluated else {}
        self.client.log_batch(  # the same values again on a retry: MLflow accepts that
            run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params(state).items()],
            tags=[RunTag(k, v) for k, v in tags(state).items()])
        return run_id, False

    def _version_for(self, state: ChainState, run_id: str) -> str:
        """The MLflow version that mirrors the modelfleet version (tagged with it), created once."""
        from mlflow.exceptions import MlflowException

        name, version = state.job.model.name, state.deployed.version if state.deployed else 0
        try:
            self.client.create_registered_model(name, tags={"modelfleet": "true"})
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        found = self.client.search_model_versions(
            f"name = '{name}' and tags.`modelfleet.version` = '{version}'", max_results=1)
        if found:
            return str(found[0].version)
        source = f"{self.client.get_run(run_id).info.artifact_uri}/model"
        created = self.client.create_model_version(name, source, run_id=run_id,
                                                   tags={"modelfleet.version": str(version)})
        return str(created.version)

    def _experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is None:
                try:
                    self._experiment_id = self.client.create_experiment(self.experiment_name)
                except MlflowException:  # another worker created it meanwhile
                    found = self.client.get_experiment_by_name(self.experiment_name)
                    if found is None:
                        raise
            if found is not None:
                self._experiment_id = found.experiment_id
        return str(self._experiment_id)


def params(state: ChainState) -> dict[str, str]:
    """The model's spec, flattened to MLflow params (`estimator.max_depth`, `dataset.name`, ...)."""
    model, prepared = state.job.model, state.prepared
    out = {"task": model.task, "estimator": model.estimator.class_path}
    out.update({f"estimator.{k}": _text(v) for k, v in model.estimator.params.items()})
    out.update({f"dataset.{k}": _text(v) for k, v in model.dataset.model_dump(mode="json").items()
                if v is not None})
    out.update({f"preprocess.{k}": _text(v) for k, v in model.preprocess.model_dump(mode="json").items()})
    if prepared is not None:
        out.update(n_train=str(prepared.n_train), n_test=str(prepared.n_test),
                   n_features=str(prepared.n_features))
    return out


def tags(state: ChainState) -> dict[str, str]:
    """The model's own tags, and where it came from in modelfleet."""
    job, deployed = state.job, state.deployed
    out = {_TAG_KEY_UNSAFE.sub("_", k): v for k, v in job.model.tags.items()}
    out.update({"modelfleet.batch_id": job.batch_id, "modelfleet.model": job.model.name,
                "modelfleet.primary_metric": job.model.primary_metric})
    if state.trained is not None:
        out["modelfleet.model_digest"] = state.trained.model_digest
    if deployed is not None:
        out.update({"modelfleet.version": str(deployed.version), "modelfleet.alias": deployed.alias,
                    "modelfleet.promoted": str(deployed.promoted), "modelfleet.reason": deployed.reason})
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


_sink: MlflowSink | None = None
_sink_pid = 0  # the process _sink was made in: a forked pool child makes its own


def sink_for(settings: Settings, store: ArtifactStore) -> MlflowSink | None:
    """This process's sink, started on first use (after the pool forked); None if not configured."""
    global _sink, _sink_pid
    if not settings.mlflow_tracking_uri:
        return None
    if _sink_pid != os.getpid():
        _sink, _sink_pid = None, os.getpid()
        try:
            _use_mlflow_defaults()
            _sink = MlflowSink(settings, store)
        except ImportError:
            log.error("MODELFLEET_MLFLOW_TRACKING_URI is set but mlflow is not installed "
                      "(pip install 'modelfleet[mlflow]'): models are not copied to MLflow")
    return _sink


def _use_mlflow_defaults() -> None:
    for name, value in MLFLOW_DEFAULTS.items():
        os.environ.setdefault(name, value)


@worker_init.connect
def _import_mlflow_before_fork(sender: Any = None, **_: Any) -> None:
    # Importing mlflow takes seconds of CPU: once in the worker's main process, not in
    # each pool child's first deploy.
    settings = getattr(getattr(sender, "app", None), "modelfleet_settings", None)
    if settings is not None and settings.mlflow_tracking_uri:
        _use_mlflow_defaults()
        with contextlib.suppress(ImportError):  # sink_for says so, once per process
            import mlflow.tracking  # noqa: F401


@worker_process_shutdown.connect
def _flush_at_shutdown(**_: Any) -> None:
    if _sink is not None and _sink_pid == os.getpid():
        _sink.close(timeout=5)  # a hung server must not hold the worker's shutdown long
