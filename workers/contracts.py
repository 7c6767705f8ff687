"""Pydantic messages: the model spec and the contracts passed between stages.

Everything here crosses a process boundary, so every model forbids unknown
fields and its JSON is the wire format. Messages carry references to artifacts
(content digests), never arrays or pickles.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, FiniteFloat, model_validator

# A model or batch name: it becomes a path segment, a file name part and a Redis key part.
# Matched with fullmatch (`$` would let a trailing newline through) and at most
# MAX_NAME_CHARS long in all, dots included.
SLUG = re.compile(r"[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9_-]+)*")
MAX_NAME_CHARS = 80
SLUG_RULE = ("must be a safe slug: lowercase letters, digits, '-', '_' and single dots, "
             f"starting with a letter or digit, at most {MAX_NAME_CHARS} characters in all")
# NaN and infinities do not survive JSON (the wire format) and compare false with everything.
JsonScalar = str | int | FiniteFloat | bool | None
JsonParam = JsonScalar | list[JsonScalar] | dict[str, JsonScalar]

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "precision_macro",
                          "recall_macro")
REGRESSION_METRICS = ("r2", "mae", "rmse", "mape")
# Estimator parameters that set how long a fit takes (part of a model's cost class).
_SIZE_PARAMS = ("n_estimators", "max_depth", "max_iter", "n_neighbors")
# Metrics where lower is better; the gate and the promotion rule flip for them.
LOWER_IS_BETTER = frozenset({"mae", "rmse", "mape"})


def is_slug(name: str) -> bool:
    """Whether `name` is a safe model or batch name (see SLUG)."""
    return len(name) <= MAX_NAME_CHARS and SLUG.fullmatch(name) is not None


def _checked_slug(name: str) -> str:
    if not is_slug(name):
        raise ValueError(SLUG_RULE)
    return name


# A model's or a batch's name, checked as a slug wherever it is a field.
SlugName = Annotated[str, AfterValidator(_checked_slug)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SklearnDataset(Strict):
    """A dataset that scikit-learn ships (no download)."""

    kind: Literal["sklearn"]
    name: Literal["iris", "wine", "breast_cancer", "digits", "diabetes"]


class SyntheticDataset(Strict):
    """make_classification / make_regression, chosen by the model's task."""

    kind: Literal["synthetic"]
    n_samples: int = Field(500, ge=20, le=1_000_000)
    n_features: int = Field(20, ge=2, le=10_000)
    n_informative: int = Field(10, ge=1)
    n_classes: int = Field(2, ge=2, le=100)
    noise: float = Field(0.1, ge=0, allow_inf_nan=False)
    seed: int = 0

    @model_validator(mode="after")
    def _informative_fits(self) -> SyntheticDataset:
        if self.n_informative > self.n_features:
            raise ValueError("n_informative must be <= n_features")
        return self


class CsvDataset(Strict):
    """A CSV file under the data root; `segment_by` makes one model per value."""

    kind: Literal["csv"]
    path: str = Field(min_length=1)
    target: str = Field(min_length=1)
    features: list[str] | None = None
    segment_by: str | None = None
    # Filled in by segment expansion: this model trains on rows where segment_by == segment.
    segment: str | None = None


Dataset = Annotated[SklearnDataset | SyntheticDataset | CsvDataset, Field(discriminator="kind")]


class PreprocessSpec(Strict):
    test_size: float = Field(0.25, gt=0, lt=1, allow_inf_nan=False)
    impute: Literal["none", "mean", "median", "most_frequent"] = "mean"
    scale: Literal["none", "standard", "minmax"] = "standard"
    seed: int = 0


class EstimatorSpec(Strict):
    """A scikit-learn estimator by dotted class path; params checked at submit time."""

    class_path: str = Field(min_length=3, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    params: dict[str, JsonParam] = Field(default_factory=dict)


class EvaluationSpec(Strict):
    metrics: list[str] = Field(default_factory=list)
    primary: str | None = None


class GateSpec(Strict):
    """Promote only if the metric clears the threshold (and beats the incumbent by min_improvement)."""

    metric: str | None = None
    threshold: float | None = Field(None, allow_inf_nan=False)
    min_improvement: float | None = Field(None, ge=0, allow_inf_nan=False)


class DeploySpec(Strict):
    alias: str = Field("production", pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    gate: GateSpec = GateSpec()


# A worker queue name (`modelfleet worker -Q NAME`): also a Redis list name, so no ':'.
QUEUE_NAME = r"^[a-z][a-z0-9_-]{0,39}$"
# The stages `resources.queue` moves: the ones that need a big worker's memory or cores
# (a big model's fit, and loading it again to score it); preprocess and deploy stay put.
HEAVY_STAGES = ("train", "evaluate")


class ResourcesSpec(Strict):
    """What worker a model needs: `queue` sends its heavy stages to workers consuming it."""

    queue: str | None = Field(None, pattern=QUEUE_NAME)


class ModelSpec(Strict):
    """One model of a batch: data, preprocessing, estimator, evaluation and deploy rule."""

    # The name becomes a path segment and a Redis key part: keep it boring.
    name: SlugName
    task: Literal["classification", "regression"]
    dataset: Dataset
    preprocess: PreprocessSpec = PreprocessSpec()
    estimator: EstimatorSpec
    evaluation: EvaluationSpec = EvaluationSpec()
    deploy: DeploySpec = DeploySpec()
    tags: dict[str, str] = Field(default_factory=dict)
    resources: ResourcesSpec = ResourcesSpec()

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> ModelSpec:
        allowed = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        for m in self.metric_names:
            if m not in allowed:
                raise ValueError(f"metric {m!r} is not a {self.task} metric; choose from {allowed}")
        if self.primary_metric not in self.metric_names:
            raise ValueError(f"evaluation.primary {self.primary_metric!r} must be one of the metrics")
        if self.gate_metric not in self.metric_names:
            raise ValueError(f"deploy.gate.metric {self.gate_metric!r} must be one of the metrics")
        return self

    @property
    def metric_names(self) -> list[str]:
        default = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        return self.evaluation.metrics or [default[0]]

    @property
    def primary_metric(self) -> str:
        return self.evaluation.primary or self.metric_names[0]

    @property
    def gate_metric(self) -> str:
        return self.deploy.gate.metric or self.primary_metric

    def queue_for(self, stage: str) -> str:
        """The queue this model's `stage` runs on: its own queue for the heavy stages, if it names one."""
        return self.resources.queue if self.resources.queue and stage in HEAVY_STAGES else stage

    @property
    def cost_class(self) -> str:
        """Models that cost about the same to run: task, estimator and its size, data shape.

        Stage times are recorded per class, and the producer sizes packs from them.
        """
        ds = self.dataset
        shape = (f"sklearn:{ds.name}" if isinstance(ds, SklearnDataset) else
                 f"synthetic:{ds.n_samples}x{ds.n_features}" if isinstance(ds, SyntheticDataset) else
                 f"csv:{ds.path}:{ds.segment_by or ''}")
        size = ",".join(f"{k}={self.estimator.params[k]}" for k in _SIZE_PARAMS if k in self.estimator.params)
        return f"{self.task}|{self.estimator.class_path}({size})|{shape}"


class ModelJob(Strict):
    """The first message of a chain: which batch, which model, and how."""

    batch_id: str
    model: ModelSpec
    no_cache: bool = False
    # At most this many stages of the batch run at once (the batch's `max_parallel`).
    max_parallel: int | None = Field(None, ge=1)


class PreparedInfo(Strict):
    dataset_digest: str
    data_digest: str
    n_train: int
    n_test: int
    n_features: int
    run_id: str
    # The fitted impute/scale steps, so a served model can predict on raw rows.
    transform_digest: str | None = None


class TrainedInfo(Strict):
    model_digest: str
    run_id: str


class EvaluatedInfo(Strict):
    report_digest: str
    metrics: dict[str, float]
    run_id: str


class DeployedInfo(Strict):
    version: int
    promoted: bool
    alias: str
    reason: str
    run_id: str


class ChainState(Strict):
    """The one message a chain passes along: each stage adds its section.

    At the end it holds the model's whole lineage: spec, data digests, run ids,
    artifacts, metrics and the registered version.
    """

    job: ModelJob
    prepared: PreparedInfo | None = None
    trained: TrainedInfo | None = None
    evaluated: EvaluatedInfo | None = None
    deployed: DeployedInfo | None = None


class PackState(Strict):
    """Several small models in one chain: every stage runs its step for each of them.

    Each member is still tracked, cached, versioned and failed on its own; a
    member that fails leaves the pack, the others go on.
    """

    pack: list[ChainState] = Field(min_length=1)


def parse_message(message: object) -> list[ChainState]:
    """The models a stage message carries: one ChainState, or a PackState's members."""
    if isinstance(message, dict) and "pack" in message:
        return list(PackState.model_validate(message).pack)
    return [ChainState.model_validate(message)]


def to_message(states: list[ChainState], packed: bool) -> dict[str, object]:
    """The message for the next stage, in the shape the chain was sent in."""
    if packed:
        return PackState(pack=states).model_dump(mode="json")
    return states[0].model_dump(mode="json")
