"""The services a worker or a producer command uses, built once from settings."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from workers.cache import StepCache
from workers.connections import redis_client
from workers.journal import Journal
from workers.registry import Registry
from workers.settings import Settings
from workers.store import ArtifactStore
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
        store = ArtifactStore(settings.artifact_root)
        journal = Journal(settings.artifact_root)
        return cls(settings, client, store, Tracker(client, store, journal),
                   StepCache(client, store, settings.lease_ttl, settings.lease_wait_timeout, journal),
                   Registry(client, store, journal))
