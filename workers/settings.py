"""The one settings class, read from `MODELFLEET_*` by producer and workers alike.

Settings are built once at an edge (the Celery app factory, the CLI) and passed
down as values; nothing else reads the environment.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from workers.tls import tls_options

STAGES: tuple[str, ...] = ("preprocess", "train", "evaluate", "deploy")
# What every worker modelfleet starts passes to `celery worker`. Mingle makes a new worker
# wait a second for its neighbours' revoked task ids before it consumes; a cancelled batch's
# messages are dropped by its flag when their stage begins (workers/task.py), on any worker,
# so that wait buys nothing. Gossip makes every worker consume every other worker's events
# (n workers: n^2 messages a heartbeat); Flower reads the events themselves, not gossip.
WORKER_ARGS: tuple[str, ...] = ("--without-mingle", "--without-gossip")
# One BLAS/OpenMP thread per worker process: k workers on k cores, not k x cores threads.
ONE_BLAS_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Scoring large tables (`modelfleet score`) has its own queue: workers consume it when asked
# (`modelfleet worker -Q score`), so a scoring job never waits behind training or delays it.
SCORE_QUEUE = "score"

# Bounds for the numbers: a value outside is a mistake, refused at start with the variable's
# name, rather than a traceback from Redis (64-bit integers), a socket or a process pool later.
_YEAR = 366 * 86400.0
Seconds = Annotated[float, Field(gt=0, le=_YEAR, allow_inf_nan=False)]
WholeSeconds = Annotated[int, Field(ge=1, le=int(_YEAR))]
Count = Annotated[int, Field(ge=1, le=10**9)]
Retries = Annotated[int, Field(ge=0, le=1000)]
REDIS_SCHEMES = ("redis", "rediss", "unix")


class Settings(BaseSettings):
    """Everything configurable about modelfleet, with defaults for real workloads."""

    model_config = SettingsConfigDict(env_prefix="MODELFLEET_", extra="ignore", frozen=True)

    # None means "no broker configured": the local commands start an embedded Redis.
    broker_url: SecretStr | None = None
    # Defaults to the broker URL; also where runs, cache index and registry live.
    result_backend: SecretStr | None = None
    # With `sentinel://H1:26379;sentinel://H2:26379` URLs (Redis Sentinel failover): the
    # master's name as the sentinels know it, and the sentinels' own password if they
    # have one (the master's password is the URL's).
    sentinel_master: str | None = None
    sentinel_password: SecretStr | None = None
    # A directory (shared by every worker), or an S3 bucket prefix `s3://bucket/prefix`
    # (pip install modelfleet[s3]; see workers/s3.py and docs/scale-out.md).
    artifact_root: Path | str = Path(".modelfleet/artifacts")
    # For an s3:// root; None leaves each to boto3's chain (AWS_* variables, ~/.aws, a role).
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    # An s3:// root's journal is uploaded at most this often per process (see journal.py):
    # the records a SIGKILLed worker can take with it are those of this last interval.
    journal_flush_interval: Seconds = 1.0
    # A process's journal file is closed and a new one begun at this size; once closed
    # segments no compaction wrote hold `journal_compact_bytes`, a worker folds them (0: never;
    # `modelfleet reindex --compact` folds them all). See workers/compaction.py.
    journal_segment_bytes: int = Field(default=16 << 20, ge=4096, le=1 << 40)
    journal_compact_bytes: int = Field(default=64 << 20, ge=0, le=1 << 50)
    # Where the embedded Redis keeps its append-only file, so the cache, runs and
    # registry of local runs survive between commands.
    local_redis_dir: Path = Path(".modelfleet/redis")
    data_root: Path = Path(".")
    # Who submits, as recorded with each batch (`batches --user`); None: the OS user.
    user: str | None = None
    # What submit's checks learned (producer/signatures.py, producer/datamemo.py): estimator
    # signatures and the verdicts on data files, so a repeated check imports neither
    # scikit-learn nor pandas; and what a worker's start computed (workers/code_versions.py,
    # workers/skops_import.py). Empty: none (every check and start computes in full).
    check_cache_dir: Path | None = Path(".modelfleet/checks")
    allowed_estimator_prefixes: list[str] = Field(default_factory=lambda: ["sklearn."])
    # Loaded models kept per process (`predict`, `score`, workers), by file digest; 0: none.
    model_cache_size: Annotated[int, Field(ge=0, le=100_000)] = 64
    # Loaded models kept on this machine between processes, as pickles signed with a key
    # private to this OS user (workers/loadcache.py), up to this many MiB; empty or 0: none.
    model_load_cache: Path | None = Path(".modelfleet/loaded")
    model_load_cache_mb: Annotated[int, Field(ge=0, le=1 << 30)] = 2048
    max_models_per_batch: Count = 10_000
    # Hostile specs: the largest spec file read, and the longest string anywhere in it
    # (keys, values, matrix labels, CSV segment values), in characters.
    max_spec_bytes: Count = 20_000_000
    max_string_chars: Count = 10_000

    # Reliability. Rule: visibility_timeout > the longest stage, else Redis hands
    # a still-running task to a second worker (the lease then keeps it from
    # computing twice, but it wastes a worker slot while it waits).
    visibility_timeout: WholeSeconds = 3600
    # How often a worker sweeps for unacked messages of dead workers; a killed
    # worker's task comes back after about visibility_timeout + this.
    restore_interval: WholeSeconds = 10
    restore_throttle: WholeSeconds = 1
    # A task that kills its worker every time is failed after this many deliveries.
    max_deliveries: Annotated[int, Field(ge=1, le=1000)] = 3
    # Single-flight lease on a cache key: renewed every lease_ttl/3 by heartbeat,
    # so a dead holder's lease runs out within lease_ttl seconds.
    lease_ttl: Seconds = 15.0
    # The stalled-chain sweeper (workers/recovery.py): every worker tries this often (0: never)
    # to take the fleet's sweeper lock; its holder hands a dead worker's message back (its
    # alive key lapsed, so within about lease_ttl + sweep_interval of the death instead of
    # the visibility timeout) and resends models whose next message is gone.
    sweep_interval: Annotated[float, Field(ge=0, le=_YEAR, allow_inf_nan=False)] = 5.0
    # A model between stages (or whose worker died) with no message found for it is sent on
    # after this long. Above failover_wait: a finished stage may still be publishing its next
    # step through a failover that long (if it gets through, that copy is a no-op).
    stall_timeout: Seconds = 120.0
    # How long a stage waits for another worker computing the same key.
    lease_wait_timeout: Seconds = 7200.0
    transient_max_retries: Retries = 5
    # A stage of a batch at its `max_parallel` cap goes back to its queue for about
    # this long (with jitter, 1-2x) before it asks for a slot again.
    cap_retry_delay: Seconds = 1.0
    stage_time_limit: WholeSeconds | None = None
    broker_connect_timeout: Seconds = 5.0
    # How long a client rides out an unreachable Redis (a Sentinel failover, a restart):
    # a worker keeps trying to send a finished stage's next step (or its retry), and
    # `wait` keeps polling, for about this many seconds before giving up.
    failover_wait: Annotated[float, Field(ge=0, le=_YEAR, allow_inf_nan=False)] = 60.0
    worker_concurrency: Annotated[int, Field(ge=1, le=256)] = 1

    # Optional: copy every deployed model into this MLflow server (workers/mlflow_sink.py).
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "modelfleet"

    flower_user: str = "admin"
    flower_password: SecretStr | None = None
    # The batch page `modelfleet up` serves beside Flower: None a free port, 0 none.
    page_port: Annotated[int, Field(ge=0, le=65535)] | None = None

    @model_validator(mode="after")
    def _sentinel_needs_a_master(self) -> Settings:
        for name in ("broker_url", "result_backend"):
            url = getattr(self, name)
            if (url is not None and url.get_secret_value().strip().startswith("sentinel://")
                    and not self.sentinel_master):
                raise ValueError(f"MODELFLEET_{name.upper()} is a sentinel:// URL: set "
                                 "MODELFLEET_SENTINEL_MASTER to the name the sentinels monitor")
        return self

    @field_validator("broker_url", "result_backend")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        """A URL kombu, Celery and redis-py can all use; the problem said without the password."""
        if value is not None and (problem := redis_url_problem(value.get_secret_value())):
            raise ValueError(problem)
        return value

    @field_validator("artifact_root", "local_redis_dir", "data_root")
    @classmethod
    def _a_directory(cls, value: Path | str) -> Path | str:
        """A directory, or nothing yet (it is made when needed); not a file."""
        if isinstance(value, Path) and value.exists() and not value.is_dir():
            raise ValueError(f"{str(value)!r} is a file, not a directory")
        return value

    @field_validator("artifact_root", mode="before")
    @classmethod
    def _root(cls, value: object) -> Path | str:
        """s3://bucket/prefix stays a URL (a Path would fold its '//'); anything else is a directory."""
        text = str(value)
        if "://" not in text:
            return Path(text)
        if not text.startswith("s3://") or not text.removeprefix("s3://").split("/")[0]:
            raise ValueError(f"artifact_root {text!r}: use a directory or s3://BUCKET[/PREFIX]")
        return text

    @field_validator("s3_endpoint_url", "s3_region", "check_cache_dir", "model_load_cache", "user",
                     mode="before")
    @classmethod
    def _unset_if_empty(cls, value: object) -> object:
        # An empty variable: none (S3: boto3 decides; the user: the OS user).
        return None if value == "" else value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        """http(s)://HOST[:PORT]: boto3 would refuse anything else only at the first request."""
        try:
            split = urlsplit(value or "http://h")
            split.port  # noqa: B018 -- raises for a port that is no number or out of range
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc})") from None
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ValueError("give http(s)://HOST[:PORT], as in http://minio:9000")
        return value

    def s3_client_options(self) -> dict[str, str]:
        """boto3 client arguments from the MODELFLEET_S3_* settings that are set."""
        options = {"endpoint_url": self.s3_endpoint_url, "region_name": self.s3_region,
                   "aws_access_key_id": self.s3_access_key_id,
                   "aws_secret_access_key": self.s3_secret_access_key}
        return {k: v.get_secret_value() if isinstance(v, SecretStr) else v
                for k, v in options.items() if v is not None}

    def broker(self) -> str:
        """The broker URL; raises if none is configured (local commands set one)."""
        if self.broker_url is None:
            raise RuntimeError(
                "no broker configured: set MODELFLEET_BROKER_URL or use `modelfleet run`/`up`, "
                "which start an embedded Redis"
            )
        return self.broker_url.get_secret_value()

    def backend(self) -> str:
        """The result backend URL (the broker's Redis unless set apart)."""
        if self.result_backend is not None:
            return self.result_backend.get_secret_value()
        return self.broker()

    def with_broker(self, url: str) -> Settings:
        """A copy pointing at another broker (used by the local launcher)."""
        return self.model_copy(update={"broker_url": SecretStr(url), "result_backend": None})

    def to_env(self) -> dict[str, str]:
        """These settings as MODELFLEET_* variables, for processes we start."""
        env = {}
        for name, value in self.model_dump(mode="json").items():
            field_value = getattr(self, name)
            if field_value is None:
                if type(self).model_fields[name].default is not None:
                    env[f"MODELFLEET_{name.upper()}"] = ""  # "none" where the default is some
                continue
            if isinstance(field_value, SecretStr):
                value = field_value.get_secret_value()
            env[f"MODELFLEET_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return env


def redis_url_problem(url: str) -> str | None:
    """Why `url` is no Redis URL (one server, or `;`-separated sentinels); None if it is one."""
    if not url.strip():
        return "empty: unset it for the embedded Redis, or give redis://[:PASSWORD@]HOST:PORT/DB"
    sentinel = url.strip().startswith("sentinel://")
    for part in [p.strip() for p in url.split(";") if p.strip()] if sentinel else [url.strip()]:
        try:
            split = urlsplit(part)
            split.port  # noqa: B018 -- raises for a port that is no number or out of range
        except ValueError as exc:
            return f"not a URL ({exc})"
        if sentinel and split.scheme != "sentinel":
            return "every ;-separated part of a sentinel URL is sentinel://HOST:PORT"
        if not sentinel and split.scheme not in REDIS_SCHEMES:
            return (f"{'scheme ' + split.scheme + '://' if split.scheme else 'no scheme'}: give "
                    "redis://[:PASSWORD@]HOST:PORT/DB, rediss://, unix:// or sentinel://HOST:PORT;...")
        if split.scheme != "unix" and split.path.strip("/") and not split.path.strip("/").isdigit():
            return f"database {split.path.strip('/')[:20]!r}: a number, as in redis://HOST:6379/0"
    try:
        tls_options(url)
    except ValueError as exc:
        return str(exc)
    return None


def settings_problem(exc: ValidationError | SettingsError) -> str:
    """One line naming every MODELFLEET_* variable that did not parse or validate (the
    commands' and the worker launcher's answer to bad settings)."""
    if isinstance(exc, SettingsError):  # the value is not JSON where a list or dict is expected
        found = re.search(r'field "(\w+)"', str(exc))
        name = f"MODELFLEET_{found.group(1).upper()}" if found else "a MODELFLEET_* variable"
        problems = [f"{name}: cannot parse it ({exc.__cause__ or exc}); a list is JSON, as in "
                    '\'["sklearn."]\'']
    else:
        problems = [(f"MODELFLEET_{'_'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "")
                    + e["msg"].removeprefix("Value error, ") for e in exc.errors()]
    return " ".join(("invalid MODELFLEET_* environment: " + "; ".join(problems)).split())


def settings_or_exit() -> Settings:
    """Settings from the environment, or one line on stderr and exit 2 (a bad setting)."""
    try:
        return Settings()
    except (ValidationError, SettingsError) as exc:
        print(f"error: {settings_problem(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
