"""The store contract: what every session backend must do, method by method.

A store keeps *records* by *key*. It never imports Flask, never sees a cookie or a token (the key
is a SHA-256 digest of the token, computed above it) and never serializes Python values: session
data arrives as already-serialized text, one string per session key, and goes back unchanged.

Time is passed in as ``now`` (seconds since the epoch, a float) by the caller, so that tests can
drive expiry with a fake clock. A record whose ``expires_at`` is at or before ``now`` is expired:
every method treats it exactly like an absent record (it is never returned, updated, renamed or
counted as live), and :meth:`Store.purge_expired` removes it for good.

Every backend error (connection refused, timeout, locked database, disk full, ...) is raised as
:class:`~flask_keepsake.errors.StoreUnavailable`; a store never lets a driver exception escape.
Each method is atomic: after an error, the stored records are as they were before the call.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field


@dataclass(slots=True)
class SessionRecord:
    """One stored session.

    :param key: the storage key, a hex SHA-256 digest of the cookie token (never the token).
    :param handle: a short random public id that names the session in pages and URLs.
    :param data: session data, one serialized string per session key. Opaque to the store.
    :param user_id: the user the session is bound to, or ``None`` while anonymous.
    :param created: when the session was created (epoch seconds).
    :param last_seen: when the session was last seen (epoch seconds), refreshed by touches.
    :param expires_at: when the store forgets the record: the earlier of the idle and the absolute
        expiry, computed by the caller.
    :param absolute_expires_at: the absolute expiry, which no touch can extend.
    :param auth_time: when the user last authenticated, or ``None``.
    :param ip: the client address seen when the session was created or bound to a user.
    :param user_agent: the ``User-Agent`` seen at the same moment (truncated by the caller).
    """

    key: str
    handle: str
    data: dict[str, str] = field(default_factory=dict)
    user_id: str | None = None
    created: float = 0.0
    last_seen: float = 0.0
    expires_at: float = 0.0
    absolute_expires_at: float = 0.0
    auth_time: float | None = None
    ip: str | None = None
    user_agent: str | None = None

    def copy(self) -> SessionRecord:
        """A copy with its own ``data`` dict, for stores that keep records in memory.

        Callers own what they pass in and what they get back (the engine refreshes
        ``last_seen`` after a touch): sharing the dict would let a request change a kept record
        without going through :meth:`Store.apply`.
        """
        return SessionRecord(
            self.key,
            self.handle,
            dict(self.data),
            self.user_id,
            self.created,
            self.last_seen,
            self.expires_at,
            self.absolute_expires_at,
            self.auth_time,
            self.ip,
            self.user_agent,
        )


@dataclass(slots=True, frozen=True)
class Touch:
    """New ``last_seen`` and ``expires_at`` values for a record, applied with a delta or alone.

    The caller caps ``expires_at`` at the record's ``absolute_expires_at``; stores store it as is.
    """

    last_seen: float
    expires_at: float


class Store(abc.ABC):
    """Abstract base of every session store. Subclasses implement every abstract method.

    All methods may be called from many threads at once; implementations must be thread-safe.
    """

    #: A short name used in messages and statistics, such as ``"sqlite"``.
    name: str = "store"

    @abc.abstractmethod
    def create(self, record: SessionRecord) -> None:
        """Store a new record atomically.

        If a live record with the same key or handle exists, raise ``ValueError`` and leave it
        unchanged (keys are digests of 256-bit random tokens, so this never happens by chance).
        ``record.created`` is "now" for this call: a record under the same key whose
        ``expires_at`` is at or before it is expired and may be replaced.
        """

    @abc.abstractmethod
    def load(self, key: str, now: float) -> SessionRecord | None:
        """Return the live record stored under ``key``, or ``None`` if absent or expired.

        This is the only call a read-only request makes, so it must be one round trip.
        """

    @abc.abstractmethod
    def apply(
        self,
        key: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        now: float,
        touch: Touch | None = None,
    ) -> bool:
        """Apply a per-key delta to the live record under ``key``, atomically.

        Set every key in ``changed`` to its new serialized value, remove every key in
        ``deleted`` (absent keys are ignored), and when ``touch`` is given also set
        ``last_seen`` and ``expires_at`` from it. A key in both ``changed`` and ``deleted`` is
        deleted. Keys that appear in neither are left exactly as they are in the store *now*,
        even if another request changed them after this one loaded the record: that is what
        keeps overlapping requests from losing each other's writes.

        Return ``False``, and write nothing, if no live record exists (it was deleted, revoked or
        expired meanwhile): a delta never resurrects a session.
        """

    @abc.abstractmethod
    def touch(self, key: str, touch: Touch, now: float) -> bool:
        """Set ``last_seen`` and ``expires_at`` of the live record under ``key``.

        Return ``False``, and write nothing, if no live record exists.
        """

    @abc.abstractmethod
    def rename(self, old_key: str, record: SessionRecord, now: float) -> bool:
        """Replace the live record under ``old_key`` by ``record`` (stored under ``record.key``).

        Used when the token changes (login, privilege change): the old token must stop working
        the moment the new one starts. The whole new record, data included, is given, so any
        change made under the old key after the caller loaded it is superseded.

        Return ``False``, and write nothing, if no live record exists under ``old_key``. If
        another live record already holds ``record.key`` or ``record.handle``, raise
        ``ValueError`` and change nothing. Where the
        backend can make the swap atomic it must; a backend that cannot (a cross-slot rename in
        Redis Cluster) must create the new record before it deletes the old one, so there is never
        a moment with neither.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Delete the record under ``key``, live or expired. Return whether one was deleted."""

    @abc.abstractmethod
    def list_user(self, user_id: str, now: float) -> list[SessionRecord]:
        """Return the live records bound to ``user_id``, oldest first (by ``created``)."""

    @abc.abstractmethod
    def delete_user(self, user_id: str, now: float, *, except_key: str | None = None) -> int:
        """Delete every record bound to ``user_id`` except ``except_key``; return how many live
        records were deleted."""

    @abc.abstractmethod
    def delete_handle(self, handle: str, now: float, *, user_id: str | None = None) -> str | None:
        """Delete the live record whose public handle is ``handle`` and return its key.

        When ``user_id`` is given, only a record bound to that user is deleted. Return ``None``
        if there was no such live record.
        """

    @abc.abstractmethod
    def purge_expired(self, now: float, batch_size: int = 1000) -> int:
        """Delete at most ``batch_size`` expired records and return how many were deleted.

        Callers loop until it returns 0. A batch must be short enough not to stall concurrent
        requests for long. ``batch_size`` below 1 raises ``ValueError``.
        """

    @abc.abstractmethod
    def count(self, now: float) -> int:
        """Return the number of live records."""

    @abc.abstractmethod
    def count_expired(self, now: float) -> int:
        """Return the number of expired records still waiting for :meth:`purge_expired`.

        Backends that expire records natively (Redis TTLs) return 0.
        """

    @abc.abstractmethod
    def user_counts(self, now: float, limit: int) -> list[tuple[str, int]]:
        """Return the users with the most live records, as ``(user_id, count)`` pairs.

        Most records first, ties by ``user_id``; at most ``limit`` pairs. Anonymous records and
        users whose records have all expired are not counted. For statistics, not requests: a
        backend may walk every record. ``limit`` below 1 raises ``ValueError``.
        """

    @abc.abstractmethod
    def delete_all(self) -> int:
        """Delete every record, live or expired, and every index entry of this store.

        Return how many records were deleted. Only this store's records go: a backend shared with
        other data (a Redis key prefix, a table in a shared file) leaves the rest alone. Afterwards
        the store works as if new. Records created while the call runs may survive it.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections and files. The store is not used after this."""

    def describe(self) -> str:
        """Where the data lives, with any password hidden, for start-up logs and ``stats``."""
        return self.name
