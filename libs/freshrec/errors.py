"""The freshrec exception tree.

Every error a freshrec process raises on purpose derives from `FreshrecError` and knows the
HTTP status it maps to, so one exception handler per service can serialise them all::

    FreshrecError (500)
    ├── InvalidInput (422)            bad request content the schema could not catch
    ├── NotFound (404)                an unknown table, row or resource
    ├── Unauthorized (401)            missing or wrong API key
    ├── PayloadTooLarge (413)         body or batch over the configured bound
    ├── BodyTimeout (408)             a request body that did not arrive in time
    ├── Overloaded (429)              concurrency bound reached; retry later
    ├── ConfigError (500)             an invalid table/feature config file
    ├── SnapshotError (422)           a corrupt or mismatched snapshot file
    └── DependencyUnavailable (503)   a server freshrec needs does not answer
        ├── StoreUnavailable          Redis
        │   └── CommitConflict        a fenced commit found its expected state moved on
        └── BrokerUnavailable         Kafka

Driver errors are wrapped at the boundary: ``raise StoreUnavailable(...) from exc``.
"""

from __future__ import annotations

__all__ = [
    "BodyTimeout",
    "BrokerUnavailable",
    "CommitConflict",
    "ConfigError",
    "DependencyUnavailable",
    "FenceAborted",
    "FreshrecError",
    "InvalidInput",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "SnapshotError",
    "StoreUnavailable",
    "Unauthorized",
]


class FreshrecError(Exception):
    """Base of every error freshrec raises on purpose."""

    status_code: int = 500
    retry_after_s: int | None = None
    details: object = None
    """What the error is made of, when known (e.g. one entry per invalid field)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(FreshrecError):
    """Request content that is well-formed but not acceptable."""

    status_code = 422


class NotFound(FreshrecError):
    """An unknown table, row or resource."""

    status_code = 404


class Unauthorized(FreshrecError):
    """Missing or wrong API key."""

    status_code = 401


class PayloadTooLarge(FreshrecError):
    """A body or batch over the configured bound."""

    status_code = 413


class BodyTimeout(FreshrecError):
    """A request body that trickled in slower than the server allows."""

    status_code = 408


class Overloaded(FreshrecError):
    """The concurrency bound is reached; the client should retry later."""

    status_code = 429
    retry_after_s = 1


class ConfigError(FreshrecError):
    """An invalid configuration file or value."""

    status_code = 500


class SnapshotError(FreshrecError):
    """A snapshot file that is corrupt or does not match the table it is restored into."""

    status_code = 422


class DependencyUnavailable(FreshrecError):
    """A server freshrec depends on does not answer."""

    status_code = 503
    retry_after_s = 2


class StoreUnavailable(DependencyUnavailable):
    """Redis does not answer."""


class CommitConflict(StoreUnavailable):
    """A transaction's expected state (`Transaction.expect_hash`) changed: nothing committed.

    The writer's view is stale (another writer took over its partitions); it restores from
    the store, as after an outage.
    """


class FenceAborted(CommitConflict):
    """A fenced commit's EXEC was aborted by a write to a hash it watched: nothing committed.

    Another writer wrote the hash (other fields of a shared offsets hash, say); the expected
    fields may still hold, so the commit checks them again and retries before it concludes
    that its view is stale.
    """


class BrokerUnavailable(DependencyUnavailable):
    """Kafka does not answer or did not acknowledge."""
