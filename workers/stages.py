"""The four stage tasks and their bodies: parse, look in the cache, call the pure step,
store the artifact, record the run, return the message.

A body (`_preprocess`, ...) handles one model; workers/task.py's StageTask runs it for
each model a message carries and holds the Celery edge (begin, poison, slots, retry).
A body's source is its stage's code version (workers/fingerprint.py): its helpers
live in this module so that an edit to one changes the keys it affects.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Imported once in the worker's main process, before it forks its pool children: the data
# loaders and the estimator families specs use most would otherwise be imported by each
# child in its first task (about a second each, inside the first models' stage times).
import pyarrow.parquet  # noqa: F401  (the split artifacts' format)
import sklearn.datasets  # noqa: F401
import sklearn.ensemble  # noqa: F401
import sklearn.linear_model  # noqa: F401
import sklearn.tree  # noqa: F401
from celery import shared_task

from workers.app import FUSED
from workers.cache import LIBRARY_VERSIONS, cache_key
from workers.contracts import (
    ChainState,
    CsvDataset,
    DeployedInfo,
    EvaluatedInfo,
    ModelSpec,
    PreparedInfo,
    SearchSummary,
    TrainedInfo,
)
from workers.mlflow_sink import sink_for
from workers.modelcache import keep_trained
from workers.pipeline.data import Table, load_dataset, resolve_csv_path
from workers.pipeline.estimators import build_estimator
from workers.pipeline.evaluate import cross_validate, plot_data, score
from workers.pipeline.features import build_model, estimator_prefix
from workers.pipeline.preprocess import Split, dump_split, load_split, prepare, table_digest_bytes
from workers.pipeline.schema import input_schema
from workers.pipeline.search import around, build_search, run_search
from workers.pipeline.train import (
    FittedFeatures,
    dump_model_and_types,
    features_key,
    fit_features,
    fit_on_features,
    load_model,
    predict,
    recorded_types,
)
from workers.registry import decide, decided
from workers.runtime import Runtime
from workers.store import digest_bytes
from workers.task import BODIES, StageTask, stage_code_version, stage_code_versions
from workers.usercode import class_paths, code_versions
from workers.writes import Writes


class _Recent:
    """The last few objects this process made, by the digest of their stored file.

    When a model's next stage runs in the process that ran this one (always in a fused
    pack, often with few workers), it takes the object instead of reading (and, for a
    model, auditing) the file again: a 10-tree forest's load is 6 ms of a small model's
    20, a small split's Parquet read 2 ms. Small objects only, and few.
    """

    def __init__(self, entries: int, max_size: int, total_size: int | None = None) -> None:
        self.entries, self.max_size = entries, max_size
        self.total_size = total_size if total_size is not None else entries * max_size
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._total = 0

    def put(self, digest: str, item: Any, size: int) -> None:
        if size > self.max_size:
            return
        if (earlier := self._items.pop(digest, None)) is not None:
            self._total -= earlier[1]
        self._items[digest] = (item, size)
        self._total += size
        while len(self._items) > self.entries or self._total > self.total_size:
            self._total -= self._items.popitem(last=False)[1][1]

    def get(self, digest: str, keep: bool = False) -> Any:
        # A model is evaluated once (no need to keep it); a split is read by train and evaluate.
        found = self._items.get(digest) if keep else self._items.pop(digest, None)
        if found is None:
            return None
        if keep:
            self._items.move_to_end(digest)  # used again: the last to go
        else:
            self._total -= found[1]
        return found[0]


# Sized for a fused pack (producer/packing.py MAX_PACK): every member's split and model
# stays until its evaluate. Bytes of a model file; cells of a split.
_JUST_TRAINED = _Recent(entries=128, max_size=8 << 20)
_JUST_SPLIT = _Recent(entries=128, max_size=1_000_000)
# The types each model file written here names (workers/pipeline/train.py), until its deploy.
_JUST_NAMED = _Recent(entries=128, max_size=1)
# Fitted feature steps by split and feature params, small ones only (cells): every store of a
# pack's cost class, so the next models of a store find theirs. And, by model file, those a
# model was fitted with, until its evaluate (in this process, when it is a fused pack's).
_FEATURES = _Recent(entries=1024, max_size=1_000_000, total_size=4_000_000)
_JUST_FEATURES = _Recent(entries=128, max_size=1_000_000, total_size=4_000_000)


# Tables (cells) with their digest. Bounded by cells, not by count: a pack holds models of many
# segments in turn (a matrix lists every store for one estimator, then the next), and a count of
# 16 had each of small450's 45 store tables read and hashed again for every model.
_LOADED = _Recent(entries=4096, max_size=2_000_000, total_size=4_000_000)


def _table(model: ModelSpec, data_root: Path) -> tuple[Table, str]:
    """The model's table and its content digest, once per process for the same data: the ten
    models of one store read and hash its rows once. A file is keyed by its size and
    modification time, so an edited file is read again."""
    stamp: tuple[int, ...] = ()
    if isinstance(model.dataset, CsvDataset):
        stat = resolve_csv_path(data_root, model.dataset.path).stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
    key = f"{model.task}|{model.dataset.model_dump_json()}|{stamp}"
    if (known := _LOADED.get(key, keep=True)) is not None:
        return known  # type: ignore[no-any-return]
    table = load_dataset(model.dataset, model.task, data_root)
    loaded = table, digest_bytes(table_digest_bytes(table))
    _LOADED.put(key, loaded, table.frame.size)
    return loaded


def _split(store: Any, digest: str) -> Split:
    return _JUST_SPLIT.get(digest, keep=True) or load_split(store.get(digest))


def _stage(name: str) -> Callable[[Callable[..., Any]], Any]:
    return shared_task(name=f"modelfleet.{name}", base=StageTask, bind=True)  # type: ignore[no-any-return]


@_stage("preprocess")
def preprocess(self: StageTask, message: dict[str, Any]) -> dict[str, Any]:
    return self.run_stage(message, "preprocess", lambda state, writes: _preprocess(self, state, writes))


@_stage(FUSED)
def fused(self: StageTask, message: dict[str, Any]) -> dict[str, Any]:
    """A pack of small models through all four stages, in this task (producer/packing.py)."""
    result = self.run_stage(message, "preprocess", lambda state, writes: _preprocess(self, state, writes),
                            fused=True)
    _offer_to_mlflow(self, result)
    return result


def _preprocess(self: StageTask, state: ChainState, writes: Writes) -> ChainState:
    model, store = state.job.model, self.runtime.store
    params = {"task": model.task, "preprocess": model.preprocess.model_dump(mode="json"),
              "features": model.features.model_dump(mode="json"),
              "split": model.split.model_dump(mode="json")}
    try:
        table, dataset_digest = _table(model, self.runtime.settings.data_root)
    except Exception as exc:  # a bad data file is a failed run too, before any cache key exists
        self.record_failure(self.run_base(state, "preprocess", params, [], None), exc)
        raise

    def compute() -> tuple[dict[str, Any], list[str]]:
        split = prepare(table, model)
        digest = store.put(dump_split(split))
        _JUST_SPLIT.put(digest, split, split.X_train.size + split.X_test.size)
        # A lag model serves from its series' last rows: stored beside the split, named in the lineage.
        history = None if split.history is None else store.put_json(split.history)
        # The fitted features travel inside the model's Pipeline now: no separate transform.
        return {"data_digest": digest, "n_train": len(split.y_train), "n_test": len(split.y_test),
                "n_features": split.X_train.shape[1], "transform_digest": None,
                "unused_columns": split.unused, "history_digest": history,
                "input_schema": input_schema(split.X_train, model.features.dates.format)}, \
            [digest, *([history] if history else [])]

    value, run_id = self.step(state, writes, "preprocess", params, [dataset_digest], compute)
    info = PreparedInfo(dataset_digest=dataset_digest, run_id=run_id, **value)
    return state.model_copy(update={"prepared": info})


@_stage("train")
def train(self: StageTask, message: dict[str, Any]) -> dict[str, Any]:
    return self.run_stage(message, "train", lambda state, writes: _train(self, state, writes))


def _train(self: StageTask, state: ChainState, writes: Writes) -> ChainState:
    model, rt = state.job.model, self.runtime
    assert state.prepared is not None, "train needs a prepared message"
    data_digest = state.prepared.data_digest
    allowed = rt.settings.allowed_estimator_prefixes
    # Allow-listed on every delivery, so a hand-made message cannot smuggle an import in (the
    # param checks run once per process for the same spec: estimators.py).
    estimator = build_estimator(model.estimator, model.task, allowed)
    search = (build_search(estimator, model.search, model.search_metric, model.task, allowed,
                           time_ordered=model.split.kind == "time") if model.search else None)

    def compute() -> tuple[dict[str, Any], list[str]]:
        split = _split(rt.store, data_digest)
        # One Pipeline, features + estimator: the deployed file takes raw rows.
        pipeline = build_model(model, list(split.X_train.columns), estimator)
        features, report = None, None
        if search is None:
            # --no-cache: shared within the batch only, as its cached steps are.
            scope = state.job.batch_id if state.job.no_cache else ""
            fitted, features = _fit_sharing_features(pipeline, split, data_digest, scope)
        else:  # the deployed model is the best candidate, refitted on all training rows
            fitted, report = run_search(around(search, pipeline, estimator_prefix(model)),
                                        split.X_train, split.y_train)
        # With a search, CV scores the chosen candidate (a fresh clone per fold).
        cv = {} if model.cv is None else cross_validate(
            fitted, split.X_train, split.y_train, model.cv, model.preprocess.seed, model.metric_names)
        data, named = dump_model_and_types(fitted)
        digest = rt.store.put(data)
        _JUST_TRAINED.put(digest, fitted, len(data))
        keep_trained(rt.settings, digest, fitted, len(data))
        _JUST_NAMED.put(digest, named, 0)
        if features is not None:
            _JUST_FEATURES.put(digest, features, features.size)
        return {"model_digest": digest, "cv_metrics": cv, **({"search": report} if report else {})}, \
            [digest]

    value, run_id = self.step(state, writes, "train", _train_params(model), [data_digest], compute)
    report = value.get("search")
    summary = SearchSummary(**{k: report[k] for k in SearchSummary.model_fields}) if report else None
    info = TrainedInfo(model_digest=value["model_digest"], run_id=run_id, search=summary,
                       cv_metrics=value.get("cv_metrics", {}))
    return state.model_copy(update={"trained": info})


def _fit_sharing_features(pipeline: Any, split: Split, data_digest: str,
                          scope: str) -> tuple[Any, FittedFeatures]:
    """`pipeline` fitted on the split, its feature steps fitted once per split, params and
    `scope` (a batch, or '' for any) in this process (workers/pipeline/train.py FittedFeatures)."""
    key = f"{scope}|{features_key(pipeline, data_digest)}"
    features = _FEATURES.get(key, keep=True)
    if features is None:
        features = fit_features(pipeline, split.X_train, split.y_train)
        _FEATURES.put(key, features, features.size)
    return fit_on_features(pipeline, features, split.y_train), features


def _train_params(model: ModelSpec) -> dict[str, Any]:
    """What a fit depends on besides its data; keys absent when unused keep older cache keys valid."""
    params: dict[str, Any] = {"task": model.task, "estimator": model.estimator.model_dump(mode="json"),
                              # The Pipeline's features (numeric defaults from preprocess).
                              "features": model.features.model_dump(mode="json"),
                              "preprocess": model.preprocess.model_dump(mode="json")}
    if model.search is not None:
        params["search"] = {**model.search.model_dump(mode="json"), "metric": model.search_metric}
        if model.split.kind == "time":  # time-ordered folds: not the cached KFold search
            params["search"]["folds"] = "time_series"
    if model.cv is not None:
        params["cv"] = {**model.cv.model_dump(mode="json"), "metrics": model.metric_names}
    return {**params, **_user_code(model)}


def _user_code(model: ModelSpec) -> dict[str, Any]:
    """The versions of the team's own packages the model uses (see workers/usercode.py), if any."""
    versions = code_versions(class_paths(model))
    return {"user_code": versions} if versions else {}


@_stage("evaluate")
def evaluate(self: StageTask, message: dict[str, Any]) -> dict[str, Any]:
    return self.run_stage(message, "evaluate", lambda state, writes: _evaluate(self, state, writes))


def _evaluate(self: StageTask, state: ChainState, writes: Writes) -> ChainState:
    model, rt = state.job.model, self.runtime
    assert state.prepared is not None and state.trained is not None, "evaluate needs a trained message"
    data_digest, model_digest = state.prepared.data_digest, state.trained.model_digest
    cv_metrics = state.trained.cv_metrics

    def compute() -> tuple[dict[str, Any], list[str]]:
        split = _split(rt.store, data_digest)
        fitted = _JUST_TRAINED.get(model_digest) or load_model(rt.store.get(model_digest),
                                                                rt.settings.allowed_estimator_prefixes)
        predictions = predict(fitted, split.X_test, _JUST_FEATURES.get(model_digest))
        # Hold-out values, then the CV mean and std that train measured (if any).
        metrics = {**score(split.y_test, predictions, model.metric_names), **cv_metrics}
        # The report's plot data rides in the one artifact evaluate already writes.
        report = rt.store.put_json({"metrics": metrics, "model_digest": model_digest,
                                    "data_digest": data_digest, "n_test": len(split.y_test),
                                    "task": model.task,
                                    "plots": plot_data(fitted, model.task, split.y_test, predictions)})
        return {"report_digest": report, "metrics": metrics}, [report]

    # The team's predict code may change without changing the model file; CV metrics come from train.
    params = {"metrics": model.metric_names, **_user_code(model),
              **({"cv_metrics": cv_metrics} if cv_metrics else {})}
    value, run_id = self.step(state, writes, "evaluate", params, [model_digest, data_digest], compute)
    return state.model_copy(update={"evaluated": EvaluatedInfo(run_id=run_id, **value)})


@_stage("deploy")
def deploy(self: StageTask, message: dict[str, Any]) -> dict[str, Any]:
    result = self.run_stage(message, "deploy", lambda state, writes: _deploy(self, state, writes))
    _offer_to_mlflow(self, result)
    return result


def _offer_to_mlflow(self: StageTask, result: dict[str, Any]) -> None:
    sink = sink_for(self.runtime.settings, self.runtime.store)
    if sink is not None:
        sink.offer(result)  # a queue put: a background thread copies the models into MLflow


def _deploy(self: StageTask, state: ChainState, writes: Writes) -> ChainState:
    job, rt = state.job, self.runtime
    ev = state.evaluated
    assert ev is not None, "deploy needs an evaluated message"
    name, alias = job.model.name, job.model.deploy.alias

    def compute() -> tuple[dict[str, Any], list[str]]:
        # Keyed by the evaluation report and by the content key: the same evaluated artifact,
        # or an identical refit (same data, params, code and metrics), registers once.
        record, _, aliases = rt.registry.register_reading_aliases(name, ev.report_digest, {
            "batch_id": job.batch_id, "metrics": ev.metrics, "primary_metric":
            job.model.primary_metric, "tags": job.model.tags, "lineage": state.model_dump(mode="json"),
            "libraries": LIBRARY_VERSIONS, "stage_versions": stage_code_versions(),
            # Recorded once here (named as the file was written, else audited): predict and
            # score load with this list after the digest check.
            "trusted_types": _audited(rt, state)},
            content_key=_content_key(state))
        promoted, reason = _promote_once(rt, state, record, aliases, writes)
        return {"version": record["version"], "promoted": promoted, "reason": reason, "alias": alias}, []

    value, run_id = self.step(state, writes, "deploy", {"alias": alias, "gate": job.model.deploy.gate
                                                        .model_dump(mode="json")},
                              [ev.report_digest], compute, cached=False)
    info = DeployedInfo(run_id=run_id, **value)
    # error="": a model that deploys carries no error from an earlier, superseded try.
    rt.tracker.state(writes, job.batch_id, name, status="promoted" if info.promoted else "registered",
                     version=info.version,
                     promoted=int(info.promoted), reason=info.reason, metrics=ev.metrics, error="")
    return state.model_copy(update={"deployed": info})


def _audited(rt: Runtime, state: ChainState) -> dict[str, list[str]]:
    assert state.trained is not None and state.prepared is not None
    digests = [state.trained.model_digest, state.prepared.transform_digest]
    return recorded_types(rt.store.get, digests, rt.settings.allowed_estimator_prefixes,
                          {d: _JUST_NAMED.get(d) for d in digests if d is not None})


def _promote_once(rt: Runtime, state: ChainState, record: dict[str, Any], aliases: dict[str, int],
                  writes: Writes) -> tuple[bool, str]:
    """Decide a version's promotion once per gate and alias: a redelivered deploy reuses the
    decision; an identical refit under another gate decides again (registry.decided).

    `aliases` are the model's as read with the registration. The decision is recorded with
    the step's other records: a worker lost before they are sent leaves the alias moved and
    the decision unrecorded, and the redelivered deploy decides again (the alias is its own).
    """
    job, ev = state.job, state.evaluated
    assert ev is not None
    name, alias, version = job.model.name, job.model.deploy.alias, int(record["version"])
    gate = job.model.deploy.gate.model_dump(mode="json")
    if (earlier := decided(record, gate, alias)) is not None:
        return bool(earlier["promoted"]), str(earlier["reason"])
    current = aliases.get(alias)
    while True:
        incumbent = rt.registry.version(name, current)["metrics"] if current not in (None, version) else None
        decision = decide(job.model.deploy.gate, job.model.gate_metric, ev.metrics, incumbent)
        if not decision.promote or current == version:
            break
        if rt.registry.move_alias(name, alias, version, current):
            break
        current = rt.registry.aliases(name).get(alias)  # another deploy moved it: decide against that
    rt.registry.decide_version(name, version, record, {
        "promoted": decision.promote, "reason": decision.reason, "alias": alias, "gate": gate}, writes)
    return decision.promote, decision.reason


# What each stage runs: its code version is the fingerprint of this function. A worker's
# warm-up reads or computes the versions before it forks (workers/code_versions.py).
BODIES.update({"preprocess": _preprocess, "train": _train, "evaluate": _evaluate, "deploy": _deploy})


def _content_key(state: ChainState) -> str:
    """What makes two registrations the same model: the train step's key (its data, params,
    code and libraries), the fitted transform, the evaluate code and metric names, and the
    metrics. An identical refit (after `cache prune` or with `--no-cache`) then returns the
    version it already has instead of a new one, whatever bytes its model file has.
    """
    job, prepared, ev = state.job, state.prepared, state.evaluated
    assert prepared is not None and ev is not None
    model = job.model
    train = cache_key("train", _train_params(model), [prepared.data_digest], stage_code_version("train"))
    return cache_key("deploy", {
        "train": train, "transform": prepared.transform_digest, "metrics": ev.metrics,
        "evaluate": {"metrics": model.metric_names, "code": stage_code_version("evaluate")}},
        [prepared.dataset_digest])
