"""kombu's Redis transport with one redis-py client per channel for its commands, and the
Celery connection class that picks it for the pool's broker URLs.

kombu's Redis channel builds a new ``redis.Redis`` for every ack, publish and restore
(``Channel.conn_or_acquire``), and redis-py 8 copies its table of ~250 response callbacks
into each one: more CPU than the command's round trip. Here a channel makes that client
once per connection pool and reuses it. A ``redis.Redis`` built on a pool holds no
connection of its own (each command takes one from the pool and gives it back), so one
client serves every thread of the process. After a fork, redis-py's pool notices the new
pid and opens new connections instead of sharing the parent's sockets; when kombu drops
its pool (after a fork, on close), the next command makes a client for the new pool.

The transport is chosen by the connection class, not by ``broker_transport``: the
connection keeps kombu's own transport name (``redis``, ``rediss``, ``sentinel``), so
``rediss://`` URLs get kombu's TLS handling and ``as_uri()`` (Flower's broker view, the
worker's banner) still names a URL Redis clients understand.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.app.amqp import AMQP
from kombu import Connection
from kombu.connection import ConnectionPool, PooledConnection
from kombu.transport import redis as kombu_redis


class _SharedClient:
    """Channel mixin: ``conn_or_acquire`` reuses one client per connection pool."""

    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
        else:
            yield self._command_client()

    def _command_client(self) -> Any:
        pool = self.pool  # type: ignore[attr-defined]
        shared = self._shared_client
        if shared is None or shared.connection_pool is not pool:
            # Two threads may both get here; either client works, the last one is kept.
            shared = self._shared_client = self._create_client()  # type: ignore[attr-defined]
        return shared

    def _disconnect_pools(self) -> None:
        self._shared_client = None
        super()._disconnect_pools()  # type: ignore[misc]


class Channel(_SharedClient, kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel with a shared command client."""


class SentinelChannel(_SharedClient, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """kombu's Sentinel channel with a shared command client."""


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport (``redis://``, ``rediss://``) with a shared command client."""

    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    """kombu's Sentinel transport (``sentinel://``) with a shared command client."""

    Channel = SentinelChannel


#: kombu's transport class -> the one used instead.
_REPLACEMENTS: dict[type, type] = {
    kombu_redis.Transport: Transport,
    kombu_redis.SentinelTransport: SentinelTransport,
}


class _ReplacesTransport:
    """Connection mixin: the transports above where kombu would use its own Redis ones
    (any other transport is left as kombu resolves it)."""

    def get_transport_cls(self) -> type:
        resolved: type = super().get_transport_cls()  # type: ignore[misc]
        return _REPLACEMENTS.get(resolved, resolved)

    def __eqhash__(self) -> tuple[str, Any]:
        # kombu keeps one connection pool per process for equal connections; this one
        # must not be handed a plain kombu connection's pool (or hand out its own).
        return ("ci-pool", super().__eqhash__())  # type: ignore[misc]


class _PooledBrokerConnection(_ReplacesTransport, PooledConnection):  # type: ignore[misc]
    """What a ``BrokerConnection``'s pool hands out (Celery's producer pool)."""


class _BrokerConnectionPool(ConnectionPool):  # type: ignore[misc]
    def new(self) -> _PooledBrokerConnection:
        return _PooledBrokerConnection(self, **dict(self.connection._info(resolve=False)))


class BrokerConnection(_ReplacesTransport, Connection):  # type: ignore[misc]
    """A kombu connection, and its pool's connections, on the transports above."""

    def Pool(self, limit: int | None = None, **kwargs: Any) -> _BrokerConnectionPool:
        return _BrokerConnectionPool(self, limit=limit, **kwargs)


class BrokerAMQP(AMQP):  # type: ignore[misc]
    """Celery's AMQP helper with ``BrokerConnection`` for every broker connection it makes
    (the worker's consumer, events, control and the producer pool)."""

    Connection = BrokerConnection
    BrokerConnection = BrokerConnection


#: What ``Celery(amqp=...)`` takes (a path, so the app still pickles by reference).
AMQP_CLASS = f"{__name__}:BrokerAMQP"
