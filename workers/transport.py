"""Kombu's Redis transport, waiting instead of losing a message while Redis is full.

Kombu takes a message off its queue (BRPOP) and then writes its unacked copy; a full
Redis refuses that write, and the message, held only in the worker's memory, would be
gone. Acks and requeues are refused too, and their errors stop the worker. Here those
operations wait until Redis takes writes again (workers/backpressure.py). The worker's
event loop waits with them: while Redis is full it cannot take new work anyway.

Registered under kombu's own names (`redis://`, `rediss://`, `sentinel://`) when this
module is imported (workers/app.py does), so URLs, Flower and the banner stay as they are.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

from workers.backpressure import until_accepted


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    def append(self, message: Any, delivery_tag: Any) -> None:
        until_accepted(lambda: kombu_redis.QoS.append(self, message, delivery_tag), "a delivered message")

    def ack(self, delivery_tag: Any) -> None:
        until_accepted(lambda: kombu_redis.QoS.ack(self, delivery_tag), "an ack")

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        until_accepted(lambda: kombu_redis.QoS.reject(self, delivery_tag, requeue), "a requeue")

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        until_accepted(lambda: kombu_redis.QoS.restore_visible(self, *args, **kwargs),
                       "restoring unacked messages")


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    QoS = QoS


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


class SentinelChannel(kombu_redis.SentinelChannel):  # type: ignore[misc]
    QoS = QoS


class SentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    Channel = SentinelChannel


TRANSPORT_ALIASES.update({"redis": f"{__name__}:Transport", "rediss": f"{__name__}:Transport",
                          "sentinel": f"{__name__}:SentinelTransport"})
