"""Pydantic messages: the model spec and the contracts passed between stages.

Everything here crosses a process boundary, so every model forbids unknown
fields and its JSON is the wire format. Messages carry references to artifacts
(content digests), never arrays or pickles.
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationInfo,
    model_validator,
)

# A model or batch name: it becomes a path segment, a file name part and a Redis key part.
# Matched with fullmatch (`$` would let a trailing newline through) and at most
# MAX_NAME_CHARS long in all, dots included.
SLUG = re.compile(r"[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9_-]+)*")
MAX_NAME_CHARS = 80
SLUG_RULE = ("must be a safe slug: lowercase letters, digits, '-', '_' and single dots, "
             f"starting with a letter or digit, at most {MAX_NAME_CHARS} characters in all")
# NaN and infinities do not survive JSON (the wire format) and compare false with everything.
JsonScalar = str | int | FiniteFloat | bool | None


def _json_data(value: Any, at: str = "") -> Any:
    """`value` if it is JSON data (nested lists and string-keyed mappings of scalars), else ValueError.

    A function rather than a recursive union type: one short message at the inner path
    instead of one per union member and level.
    """
    where = f"at {at}: " if at else ""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}{value} is not a finite number")
        return value
    if isinstance(value, list | tuple):
        return [_json_data(v, f"{at}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"{where}mapping keys must be strings")
        return {k: _json_data(v, f"{at}.{k}") for k, v in value.items()}
    raise ValueError(f"{where}a {type(value).__name__} is not JSON data (use strings, numbers, "
                     "booleans, null, lists and mappings)")


# Nested, so a param can be an estimator `{class_path, params}` or a list of `[name, estimator]`
# pairs (workers/pipeline/estimators.py builds them); the spec loader bounds the depth.
JsonParam = Annotated[Any, AfterValidator(_json_data)]

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "precision_macro",
                          "recall_macro")
REGRESSION_METRICS = ("r2", "mae", "rmse", "mape")
# Estimator parameters that set how long a fit takes (part of a model's cost class).
_SIZE_PARAMS = ("n_estimators", "max_depth", "max_iter", "n_neighbors")
# Metrics where lower is better; the gate and the promotion rule flip for them. With `cv`, a
# metric m is also reported as cv_m_mean and cv_m_std (a spread: lower is better for every m).
_LOWER = ("mae", "rmse", "mape")
LOWER_IS_BETTER = frozenset({*_LOWER, *(f"cv_{m}_mean" for m in _LOWER),
                             *(f"cv_{m}_std" for m in CLASSIFICATION_METRICS + REGRESSION_METRICS)})
# The values each metric can take: a gate threshold outside them can never pass (or,
# for an error metric at 0, passes only a perfect fit). cv_M_mean ranges like M.
METRIC_RANGES: dict[str, tuple[float, float]] = {
    **{m: (0.0, 1.0) for m in CLASSIFICATION_METRICS}, "r2": (-math.inf, 1.0),
    **{m: (0.0, math.inf) for m in _LOWER}}
# Validation context key: the producer collects task checks at their field paths itself.
DEFER_TASK_CHECKS = "defer_task_checks"
# A field path inside a model spec, as pydantic gives it: ("evaluation", "metrics", 0).
Loc = tuple[str | int, ...]
# Candidates one hyperparameter search may try (grid size or n_iter), and trials kept in its record.
MAX_SEARCH_TRIALS = 1000


def cv_metric_names(metrics: list[str]) -> list[str]:
    """The names cross-validation reports for `metrics`: cv_m_mean and cv_m_std each."""
    return [f"cv_{m}_{stat}" for m in metrics for stat in ("mean", "std")]


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
    """A CSV (or, with kind parquet, a Parquet) file under the data root; `segment_by`
    makes one model per value."""

    kind: Literal["csv", "parquet"]
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


ImputeStrategy = Literal["none", "mean", "median", "most_frequent"]
ScaleKind = Literal["none", "standard", "minmax"]
DatePart = Literal["year", "month", "week", "day", "dayofweek", "dayofyear", "quarter"]
_DEFAULT_PARTS: tuple[DatePart, ...] = ("year", "month", "week", "dayofweek")


class NumericFeatures(Strict):
    """Numeric columns: imputed and scaled (impute/scale unset: those of `preprocess`)."""

    # None: every numeric column that no other rule, the target or a segment/time column uses.
    columns: list[str] | None = None
    impute: ImputeStrategy | None = None
    scale: ScaleKind | None = None


class CategoricalFeatures(Strict):
    """Text columns encoded one-hot or as ordinals; a category unseen in training is ignored
    (one-hot: all zeros) or encoded -1 (ordinal), never an error at predict time."""

    columns: list[str] = Field(default_factory=list)
    encode: Literal["onehot", "ordinal"] = "onehot"


class DateFeatures(Strict):
    """Date columns expanded into numeric parts; `format` (strftime) parses text dates,
    the split's time column too (e.g. "%d-%m-%Y"; unset: ISO dates)."""

    columns: list[str] = Field(default_factory=list)
    parts: list[DatePart] = Field(default_factory=lambda: list(_DEFAULT_PARTS), min_length=1)
    format: str | None = None


class LagFeatures(Strict):
    """Past values of the target as features, per series, ordered by the split's time column:
    lag k is the value k rows earlier, rolling w the mean of the w rows before (never the row
    itself). Rows without a full history are left out of training and testing."""

    periods: list[Annotated[int, Field(ge=1, le=10_000)]] = Field(default_factory=list)
    rolling: list[Annotated[int, Field(ge=1, le=10_000)]] = Field(default_factory=list)
    # The series column; unset: the dataset's segment_by (each segment is one series).
    by: str | None = None


class FeaturesSpec(Strict):
    """How raw columns become features: fitted with the estimator as one Pipeline."""

    numeric: NumericFeatures = NumericFeatures()
    categorical: CategoricalFeatures = CategoricalFeatures()
    dates: DateFeatures = DateFeatures()
    lags: LagFeatures = LagFeatures()
    drop: list[str] = Field(default_factory=list)
    target_transform: Literal["none", "log1p"] = "none"

    @model_validator(mode="after")
    def _one_rule_per_column(self) -> FeaturesSpec:
        seen: dict[str, str] = {}
        for rule, columns in (("numeric", self.numeric.columns or []),
                              ("categorical", self.categorical.columns),
                              ("dates", self.dates.columns), ("drop", self.drop)):
            for column in columns:
                if column in seen:
                    raise ValueError(f"column {column!r} is in both {seen[column]} and {rule}")
                seen[column] = rule
        return self


class SplitSpec(Strict):
    """The hold-out split: random (stratified for classification) or time-ordered.

    time: rows ordered by time_column; the last test_size of the distinct times (or every
    time after cutoff) are held out, so every training row is earlier than every test row.
    test_size unset: preprocess.test_size. time_column is also the order of lag features.
    """

    kind: Literal["random", "time"] = "random"
    time_column: str | None = None
    test_size: float | None = Field(None, gt=0, lt=1, allow_inf_nan=False)
    cutoff: date | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SplitSpec:
        if self.kind == "time" and self.time_column is None:
            raise ValueError("a time split needs time_column")
        if self.cutoff is not None and (self.kind != "time" or self.test_size is not None):
            raise ValueError("cutoff is for a time split, instead of test_size")
        return self


class CvSpec(Strict):
    """Cross-validation on the training rows: metrics get cv_<metric>_mean and _std."""

    folds: int = Field(5, ge=2, le=100)
    kind: Literal["kfold", "stratified", "time_series"] = "kfold"


class EstimatorSpec(Strict):
    """A scikit-learn estimator by dotted class path; params checked at submit time."""

    class_path: str = Field(min_length=3, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    params: dict[str, JsonParam] = Field(default_factory=dict)


class SearchSpec(Strict):
    """Hyperparameter search around the estimator: scikit-learn's GridSearchCV or
    RandomizedSearchCV (lists sampled uniformly), refitted on all training rows.

    `space` maps param names (nested ones as `step__param`) to the values to try;
    a value may be an estimator `{class_path, params}`. `metric` defaults to the
    model's primary metric.
    """

    kind: Literal["grid", "random"] = "grid"
    space: dict[str, Annotated[list[JsonParam], Field(min_length=1)]] = Field(min_length=1)
    n_iter: int = Field(10, ge=1, le=MAX_SEARCH_TRIALS)
    cv: int = Field(3, ge=2, le=20)
    metric: str | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _bounded(self) -> SearchSpec:
        if self.kind == "grid" and self.trials > MAX_SEARCH_TRIALS:
            raise ValueError(f"the grid has {self.trials} candidates, more than the maximum "
                             f"{MAX_SEARCH_TRIALS}; use kind: random with n_iter")
        return self

    @property
    def trials(self) -> int:
        """How many candidates the search tries."""
        size = 1
        for values in self.space.values():
            size *= len(values)
            if size > MAX_SEARCH_TRIALS:  # no need to multiply a hostile space out
                return size
        return size if self.kind == "grid" else min(size, self.n_iter)


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


_NO_FEATURES, _RANDOM_SPLIT = FeaturesSpec(), SplitSpec()


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
    # Left out of the model's JSON while they hold their defaults: every chain message
    # carries the model, and most specs never set them (half a message's size otherwise).
    # Absent, they are the one frozen default, as the other sections' defaults are: pydantic
    # deep-copied a FeaturesSpec (it holds lists) for every model and every parse (half of a
    # message's parse; ~1 KB a model of a 100,000-model batch).
    features: FeaturesSpec = Field(default_factory=lambda: _NO_FEATURES,
                                   exclude_if=lambda v: v == _NO_FEATURES)
    split: SplitSpec = Field(default_factory=lambda: _RANDOM_SPLIT,
                             exclude_if=lambda v: v == _RANDOM_SPLIT)
    cv: CvSpec | None = Field(None, exclude_if=lambda v: v is None)
    estimator: EstimatorSpec
    search: SearchSpec | None = None
    evaluation: EvaluationSpec = EvaluationSpec()
    deploy: DeploySpec = DeploySpec()
    tags: dict[str, str] = Field(default_factory=dict)
    resources: ResourcesSpec = ResourcesSpec()

    @model_validator(mode="after")
    def _metrics_fit_task(self, info: ValidationInfo) -> ModelSpec:
        if info.context and info.context.get(DEFER_TASK_CHECKS):
            return self  # the producer reports task_problems() at their own fields
        if problems := self.task_problems():
            raise ValueError("; ".join(f"{loc_text(loc)}: {msg}" for loc, msg in problems))
        return self

    def task_problems(self) -> list[tuple[Loc, str]]:
        """Every metric, gate, split or cv choice that does not fit the model's task, at its
        field path."""
        allowed = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        problems: list[tuple[Loc, str]] = [
            (("evaluation", "metrics", i), f"metric {m!r} is not a {self.task} metric; choose from "
             f"{allowed}") for i, m in enumerate(self.evaluation.metrics) if m not in allowed]
        reported = self.reported_metrics
        if self.primary_metric not in reported:
            problems.append((("evaluation", "primary"), f"{self.primary_metric!r} must be one of "
                             f"{reported}"))
        gate = self.deploy.gate
        if self.gate_metric not in reported:
            problems.append((("deploy", "gate", "metric"), f"{self.gate_metric!r} must be one of "
                             f"{reported}"))
        elif gate.threshold is not None and (problem := threshold_problem(self.gate_metric,
                                                                          gate.threshold)):
            problems.append((("deploy", "gate", "threshold"), problem))
        return problems + self._time_and_cv_problems()

    def _time_and_cv_problems(self) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        lags = self.features.lags
        if (lags.periods or lags.rolling) and self.split.time_column is None:
            problems.append((("features", "lags"), "needs split.time_column (the order of the rows)"))
        if self.features.target_transform != "none" and self.task != "regression":
            problems.append((("features", "target_transform"), "is for regression"))
        if self.cv is not None and self.cv.kind == "stratified" and self.task != "classification":
            problems.append((("cv", "kind"), "stratified is for classification; use kfold or "
                             "time_series"))
        if self.cv is not None and self.cv.kind == "time_series" and self.split.kind != "time":
            problems.append((("cv", "kind"), "time_series needs split.kind time (rows ordered by "
                             "time_column)"))
        return problems

    @property
    def reported_metrics(self) -> list[str]:
        """The metrics a run reports: hold-out values, and with cv their CV mean and std."""
        names = self.metric_names
        return names + (cv_metric_names(names) if self.cv is not None else [])

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
    def search_metric(self) -> str:
        """What a search scores its candidates by: its own metric, else the primary one
        (for a primary cv_m_mean or cv_m_std, the metric m: the search cross-validates too)."""
        primary = self.primary_metric
        if primary.startswith("cv_"):
            primary = primary[len("cv_"):].rsplit("_", 1)[0]
        return (self.search.metric if self.search else None) or primary

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
        # A search fits its estimator (candidates x folds + 1) times, cv k more times: other costs.
        search = f"|search:{self.search.trials}x{self.search.cv}" if self.search else ""
        folds = f"|cv{self.cv.folds}" if self.cv is not None else ""
        return f"{self.task}|{self.estimator.class_path}({size})|{shape}{search}{folds}"


def threshold_problem(metric: str, threshold: float) -> str | None:
    """Why a gate threshold on `metric` makes no sense (never passes), or None."""
    base = metric.removeprefix("cv_").removesuffix("_mean").removesuffix("_std")
    low, high = (0.0, math.inf) if metric.endswith("_std") else METRIC_RANGES.get(
        base, (-math.inf, math.inf))
    if metric in LOWER_IS_BETTER:
        if threshold <= low:
            return (f"{threshold} on {metric!r} (lower is better: passes when {metric} <= threshold) "
                    f"{'passes only a perfect fit' if threshold == low else 'can never pass'}; give a "
                    f"positive {metric} threshold")
    elif not low <= threshold <= high:
        return (f"{threshold} on {metric!r} (higher is better: passes when {metric} >= threshold) is "
                f"outside its range [{low}, {high}]")
    return None


def loc_text(loc: Loc | list[str | int]) -> str:
    """A field path as people write it: `evaluation.metrics[0]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


class ModelJob(Strict):
    """The first message of a chain: which batch, which model, and how."""

    batch_id: str
    model: ModelSpec
    no_cache: bool = False
    # At most this many stages of the batch run at once (the batch's `max_parallel`).
    max_parallel: int | None = Field(None, ge=1)


class ColumnSchema(Strict):
    """One input column of a model, as trained (workers/pipeline/schema.py checks rows against it)."""

    name: str
    kind: Literal["number", "bool", "datetime", "text"]
    dtype: str
    # Text columns with few distinct values: the categories seen in training.
    categories: list[str] | None = None
    # Date columns: how text dates read (strftime), when the spec says.
    format: str | None = None


class PreparedInfo(Strict):
    dataset_digest: str
    data_digest: str
    n_train: int
    n_test: int
    n_features: int
    run_id: str
    # Older versions' separately fitted impute/scale steps; now inside the model's Pipeline.
    transform_digest: str | None = None
    # Columns of the table that no feature rule uses (reported, never dropped silently).
    unused_columns: list[str] = Field(default_factory=list)
    # The columns the model takes (None: trained before schemas were recorded).
    input_schema: list[ColumnSchema] | None = None
    # A lag model's last rows per series (JSON artifact), from which serving builds the lags.
    history_digest: str | None = None


class SearchSummary(Strict):
    """A search's outcome, carried in the chain (the full trial table is in the train run record)."""

    metric: str
    best_params: dict[str, JsonParam]
    # In the metric's own units (an error metric is positive); None if every candidate failed.
    best_score: FiniteFloat | None
    n_trials: int
    seconds: float


class TrainedInfo(Strict):
    model_digest: str
    run_id: str
    search: SearchSummary | None = None
    # cv_<metric>_mean / _std on the training rows, when the model has `cv`.
    cv_metrics: dict[str, float] = Field(default_factory=dict)


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


class ScoreModel(Strict):
    """A deployed version as a score task loads it: its artifacts, schema and audited types."""

    ref: str
    model_digest: str
    transform_digest: str | None = None
    input_schema: list[ColumnSchema] | None = None
    # The types audited at deploy, by model file digest (the version's `trusted_types`).
    trusted_types: dict[str, list[str]] | None = None


class ScoreChunk(Strict):
    """One chunk of a scoring job: the model's and the chunk's artifacts, never the data.

    With `segment_by`, each row goes to its segment value's model in `segments` (only the
    values in this chunk; a value without a model leaves its rows unpredicted)."""

    model_digest: str | None = None
    transform_digest: str | None = None
    input_schema: list[ColumnSchema] | None = None
    chunk_digest: str
    chunk: int = Field(ge=0)
    # The types audited at deploy, by model file digest (the version's `trusted_types`).
    trusted_types: dict[str, list[str]] | None = None
    segment_by: str | None = None
    segments: dict[str, ScoreModel] | None = None

    @model_validator(mode="after")
    def _one_model_or_segments(self) -> ScoreChunk:
        if (self.model_digest is None) == (self.segment_by is None) or \
                (self.segment_by is None) != (self.segments is None):
            raise ValueError("a score chunk names one model_digest, or segment_by with its segments")
        return self


class ScoredChunk(Strict):
    """A worker's answer: the predictions' artifact (one `prediction` column, the chunk's rows;
    with segments also `model`, the version that predicted each row)."""

    chunk: int
    result_digest: str
    rows: int
    seconds: float
    worker: str
    # Segments: rows per segment value with no model in the message.
    unknown: dict[str, int] = Field(default_factory=dict)
    # Segments: rows that do not fit their model's schema (the first such error; no result then).
    error: str | None = None


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
