"""The one settings class, read from `MODELFLEET_*` by producer and workers alike.

Settings are built once at an edge (the Celery app factory, the CLI) and passed
down as values; nothing else reads the environment.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

STAGES: tuple[str, ...] = ("preprocess", "train", "evaluate", "deploy")
# Scoring large tables (`modelfleet score`) has its own queue: workers consume it when asked
# (`modelfleet worker -Q score`), so a scoring job never waits behind training or delays it.
SCORE_QUEUE = "score"


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
    journal_flush_interval: float = 1.0
    # A process's journal file is closed and a new one begun at this size; once closed
    # segments no compaction wrote hold `journal_compact_bytes`, a worker folds them (0: never;
    # `modelfleet reindex --compact` folds them all). See workers/compaction.py.
    journal_segment_bytes: int = Field(default=16 << 20, ge=4096)
    journal_compact_bytes: int = Field(default=64 << 20, ge=0)
    # Where the embedded Redis keeps its append-only file, so the cache, runs and
    # registry of local runs survive between commands.
    local_redis_dir: Path = Path(".modelfleet/redis")
    data_root: Path = Path(".")
    # What submit's checks learned (producer/signatures.py, producer/datamemo.py): estimator
    # signatures and the verdicts on data files, so a repeated check imports neither
    # scikit-learn nor pandas. Empty: none (every check runs in full).
    check_cache_dir: Path | None = Path(".modelfleet/checks")
    allowed_estimator_prefixes: list[str] = Field(default_factory=lambda: ["sklearn."])
    max_models_per_batch: int = 10_000
    # Hostile specs: the largest spec file read, and the longest string anywhere in it
    # (keys, values, matrix labels, CSV segment values), in characters.
    max_spec_bytes: int = 20_000_000
    max_string_chars: int = 10_000

    # Reliability. Rule: visibility_timeout > the longest stage, else Redis hands
    # a still-running task to a second worker (the lease then keeps it from
    # computing twice, but it wastes a worker slot while it waits).
    visibility_timeout: int = 3600
    # How often a worker sweeps for unacked messages of dead workers; a killed
    # worker's task comes back after about visibility_timeout + this.
    restore_interval: int = 10
    restore_throttle: int = 1
    # A task that kills its worker every time is failed after this many deliveries.
    max_deliveries: int = 3
    # Single-flight lease on a cache key: renewed every lease_ttl/3 by heartbeat,
    # so a dead holder's lease runs out within lease_ttl seconds.
    lease_ttl: float = 15.0
    # The stalled-chain sweeper (workers/recovery.py): every worker tries this often (0: never)
    # to take the fleet's sweeper lock; its holder hands a dead worker's message back (its
    # alive key lapsed, so within about lease_ttl + sweep_interval of the death instead of
    # the visibility timeout) and resends models whose next message is gone.
    sweep_interval: float = 5.0
    # A model between stages (or whose worker died) with no message found for it is sent on
    # after this long. Above failover_wait: a finished stage may still be publishing its next
    # step through a failover that long (if it gets through, that copy is a no-op).
    stall_timeout: float = 120.0
    # How long a stage waits for another worker computing the same key.
    lease_wait_timeout: float = 7200.0
    transient_max_retries: int = 5
    # A stage of a batch at its `max_parallel` cap goes back to its queue for about
    # this long (with jitter, 1-2x) before it asks for a slot again.
    cap_retry_delay: float = 1.0
    stage_time_limit: int | None = None
    broker_connect_timeout: float = 5.0
    # How long a client rides out an unreachable Redis (a Sentinel failover, a restart):
    # a worker keeps trying to send a finished stage's next step (or its retry), and
    # `wait` keeps polling, for about this many seconds before giving up.
    failover_wait: float = 60.0
    worker_concurrency: int = 1

    # Optional: copy every deployed model into this MLflow server (workers/mlflow_sink.py).
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "modelfleet"

    flower_user: str = "admin"
    flower_password: SecretStr | None = None
    # The batch page `modelfleet up` serves beside Flower: None a free port, 0 none.
    page_port: int | None = None

    @model_validator(mode="after")
    def _sentinel_needs_a_master(self) -> Settings:
        for name in ("broker_url", "result_backend"):
            url = getattr(self, name)
            if (url is not None and url.get_secret_value().strip().startswith("sentinel://")
                    and not self.sentinel_master):
                raise ValueError(f"MODELFLEET_{name.upper()} is a sentinel:// URL: set "
                                 "MODELFLEET_SENTINEL_MASTER to the name the sentinels monitor")
        return self

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

    @field_validator("s3_endpoint_url", "s3_region", "check_cache_dir", mode="before")
    @classmethod
    def _unset_if_empty(cls, value: object) -> object:
        return None if value == "" else value  # an empty variable: none (S3: boto3 decides)

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
                continue
            if isinstance(field_value, SecretStr):
                value = field_value.get_secret_value()
            env[f"MODELFLEET_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return env
