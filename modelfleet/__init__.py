"""modelfleet from Python: the few names a script needs.

    import modelfleet
    handle = modelfleet.submit(modelfleet.load_batch("examples/quickstart.yaml"))
    status = handle.wait()                      # every model promoted, registered, failed or cancelled

A thin face over `producer` and `workers`: each function imports what it needs when
called, so `import modelfleet` loads neither scikit-learn nor celery.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.settings import Settings

if TYPE_CHECKING:
    from producer.handle import BatchHandle
    from producer.spec import Batch

__all__ = ["Settings", "load_batch", "load_model", "predict", "submit"]


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


def load_model(ref: str, settings: Settings | None = None) -> Any:
    """The fitted estimator, with its preprocessing, of `NAME@alias`, `NAME/version` or `NAME`
    (latest); it takes raw feature rows."""
    from producer.serving import load_model as load

    return load(ref, _live(settings))


def predict(ref: str, rows: Any, settings: Settings | None = None) -> Any:
    """Load `ref` (as `load_model`) and predict raw feature rows with it."""
    from producer.serving import predict as run

    return run(ref, rows, _live(settings))


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
