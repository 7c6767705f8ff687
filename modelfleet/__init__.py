"""modelfleet from Python: the few names a script needs.

    import modelfleet
    status = modelfleet.run("examples/quickstart.yaml", workers=2)   # like `modelfleet run`
    modelfleet.predict("iris-forest@production", rows)

    handle = modelfleet.submit(modelfleet.load_batch(spec))  # a running broker (`modelfleet up`)
    status = handle.wait()                      # every model promoted, registered, failed or cancelled

A thin face over `producer` and `workers`: each function imports what it needs when
called, so `import modelfleet` loads neither scikit-learn nor celery.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from producer.handle import BatchHandle
    from producer.spec import Batch
    from producer.status import BatchStatus

__all__ = ["Settings", "load_batch", "load_model", "predict", "predict_frame", "run", "submit"]


def load_batch(path: Path | str, settings: Settings | None = None) -> Batch:
    """The validated batch of a spec file; `producer.spec.SpecError` lists every problem."""
    from producer.spec import load_batch as load

    return load(path, settings or Settings())


def submit(batch: Batch, settings: Settings | None = None, no_cache: bool = False) -> BatchHandle:
    """Send the batch to the configured broker (MODELFLEET_BROKER_URL, else the embedded Redis
    `modelfleet up` runs); returns a handle: `.status()`, `.wait(timeout=...)`.

    Raises `producer.submit.BrokerUnavailable` (nothing sent) when no broker can be reached.
    """
    from producer.submit import submit as send
    from workers.app import create_app
    from workers.runtime import Runtime

    live = _live(settings)
    return send(batch, create_app(live), Runtime.from_settings(live), no_cache=no_cache)


def run(spec: Batch | Path | str, workers: int = 2, settings: Settings | None = None,
        no_cache: bool = False, timeout: float | None = None) -> BatchStatus:
    """Run a batch (a spec file or a loaded Batch) as `modelfleet run` does: the configured
    broker, else the embedded Redis of `local_redis_dir`; `workers` local worker processes;
    submit, wait until every model is done, stop what was started; the batch's status.

    Raises `producer.local.WorkersGone` if every worker died, TimeoutError past `timeout`.
    """
    from producer.local import local_platform
    from producer.spec import Batch as Loaded

    settings = settings or Settings()
    batch = spec if isinstance(spec, Loaded) else load_batch(spec, settings)
    with local_platform(settings, workers=workers) as (live, local):
        handle = submit(batch, live, no_cache=no_cache)

        def check(status: BatchStatus) -> None:
            if local is not None and not status.done:
                local.check_alive()

        return handle.wait(timeout=timeout, on_progress=check)


def load_model(ref: str, settings: Settings | None = None) -> Any:
    """The fitted estimator, with its preprocessing, of `NAME@alias`, `NAME/version` or `NAME`
    (latest); it takes raw feature rows. Needs no running broker (see `_reading`)."""
    from producer.serving import load_model as load

    with _reading(settings) as live:
        return load(ref, live)


def predict(ref: str, rows: Any, settings: Settings | None = None) -> Any:
    """Load `ref` (as `load_model`) and predict raw feature rows with it."""
    from producer.serving import predict as run

    with _reading(settings) as live:
        return run(ref, rows, live)


def predict_frame(ref: str, frame: pd.DataFrame | list[dict[str, Any]], segment_by: str | None = None,
                  settings: Settings | None = None, fallback: str | None = None) -> pd.DataFrame:
    """`frame` (a DataFrame, or rows as dicts of column -> value) with a `prediction` column,
    its rows checked against the model's input schema (`workers.pipeline.schema.SchemaError`
    names a missing or mistyped column).

    With `segment_by` (a column), `ref` is a segment family `FAMILY@ALIAS`: each row is
    predicted by its own segment's model (`FAMILY-VALUE`, named in a `model` column); rows
    of a segment with no model, or whose model is registered but not at the alias, keep an
    empty prediction, and a warning counts them (and says why). `fallback="latest"` scores
    the latter with their latest version, and a `served_by` column says which served each
    row (the alias, or `latest`).
    """
    import warnings

    import pandas as pd

    from producer.segments import predict_frame as run
    from workers.runtime import Runtime

    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame.from_records(frame)
    with _reading(settings) as live:
        result = run(ref, frame, Runtime.from_settings(live), segment_by, fallback)
    for note in result.notes:
        warnings.warn(note, stacklevel=2)
    if result.unknown:
        warnings.warn(f"{sum(result.unknown.values())} row(s) of segments with no model at {ref} "
                      f"left unpredicted: {result.unknown}", stacklevel=2)
    for value, unpromoted in result.unpromoted.items():
        done = "scored with its latest version" if unpromoted.served else "left unpredicted"
        warnings.warn(f"{unpromoted.rows} row(s) of {segment_by} {value} {done}: {unpromoted.describe()}",
                      stacklevel=2)
    return result.frame


@contextmanager
def _reading(settings: Settings | None) -> Iterator[Settings]:
    """Settings to read the registry with: the configured broker, else the embedded Redis
    of `local_redis_dir` (the running one, or started for this read and stopped after it,
    as the read commands do), so a model trained by `modelfleet run` loads afterwards."""
    from producer.local import EmbeddedRedis, running_embedded_redis
    from producer.submit import BrokerUnavailable

    settings = settings or Settings()
    if settings.broker_url is not None:
        yield settings
        return
    running = running_embedded_redis(settings.local_redis_dir)
    if running is not None:
        yield settings.with_broker(running)
        return
    if not settings.local_redis_dir.is_dir():
        raise BrokerUnavailable(f"no registry to read: no broker configured (MODELFLEET_BROKER_URL) "
                                f"and no embedded Redis data under {settings.local_redis_dir}")
    with EmbeddedRedis(settings.local_redis_dir) as server:
        yield settings.with_broker(server.url)


def _live(settings: Settings | None) -> Settings:
    """The given (or environment's) settings; with no broker configured, the embedded Redis
    that `modelfleet up` runs for `local_redis_dir`, as the `submit` command does."""
    from producer.local import running_embedded_redis
    from producer.submit import BrokerUnavailable

    settings = settings or Settings()
    if settings.broker_url is not None:
        return settings
    running = running_embedded_redis(settings.local_redis_dir)
    if running is None:
        raise BrokerUnavailable("no broker configured: set MODELFLEET_BROKER_URL or start "
                                "`modelfleet up`")
    return settings.with_broker(running)
