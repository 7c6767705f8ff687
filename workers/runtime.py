"""The services a worker or a producer command uses, built once from settings."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from workers.cache import StepCache
from workers.compaction import compact_when_due
from workers.connections import redis_client
from workers.journal import open_journal
from workers.registry import Registry
from workers.settings import Settings
from workers.store import ArtifactStore, LocalRoot, Root
from workers.tracking import Tracker


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    redis: redis.Redis
    store: ArtifactStore
    tracker: Tracker
    cache: StepCache
    registry: Registry

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        client = redis_client(
            settings, settings.backend(), socket_connect_timeout=settings.broker_connect_timeout,
            health_check_interval=30, retry_on_timeout=True,
            decode_responses=True)
        root = open_root(settings)
        store = ArtifactStore(root)
        journal = open_journal(root, settings.journal_flush_interval, settings.journal_segment_bytes,
                               settings.journal_compact_bytes)
        journal.on_segment_closed = compact_when_due
        return cls(settings, client, store, Tracker(client, store, journal),
                   StepCache(client, store, settings.lease_ttl, settings.lease_wait_timeout, journal),
                   Registry(client, store, journal))


def open_root(settings: Settings) -> Root:
    """The artifact root the settings name: a directory, or an S3 bucket prefix."""
    if isinstance(settings.artifact_root, str):
        try:
            import boto3  # noqa: F401 -- fail here, with the fix, not at the first write

            from workers.s3 import S3Root
        except ImportError as exc:
            raise RuntimeError(f"artifact_root {settings.artifact_root} needs boto3: "
                               "pip install 'modelfleet[s3]'") from exc
        return S3Root(settings.artifact_root, settings.s3_client_options())
    return LocalRoot(settings.artifact_root)
