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
Each method is atomic: after an error, the stored records are as they were before the call. A
stored record the store cannot decode (a corrupted row, a value written by hand) is treated as
absent by every method, and logged once on ``flask_keepsake.security`` by its handle or a
fingerprint of its key, never the key itself.

Besides records a store keeps two small kinds of entries that are never records (they are not
loaded as sessions, listed, counted or revoked):

*Rotation tombstones.* :meth:`Store.rename` may leave, under the old key, a tombstone that names
the new key for a short grace window. :meth:`Store.load` answers :data:`ROTATED` for it, and
:meth:`Store.apply` follows it, so a request of the same browser that loaded the session just
before a login keeps its write, and a request that arrives late with the old token is recognised
(see ``docs/architecture.md``, "Rotation and grace").

*Markers.* Named, expiring strings (:meth:`Store.put_marker`, :meth:`Store.get_marker`) for the
engine's own bookkeeping: the old session cookies adopted during a migration, the time a user's
sessions were last revoked.
"""

from __future__ import annotations

import abc
import enum
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Final

from ..errors import KeepsakeError

#: How many tombstones :meth:`Store.apply` follows at most (a login and a regenerate within one
#: grace window make two).
MAX_FOLLOW: Final = 8

#: How many unreadable records a store remembers having logged (then it starts again).
_MAX_REPORTED: Final = 10_000

security_logger = logging.getLogger("flask_keepsake.security")


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
    :param remembered: the user asked to be remembered on this device at sign-in ("keep me
        signed in"): the engine treats the session as persistent whatever ``session.permanent``
        says.
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
    remembered: bool = False

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
            self.remembered,
        )


class Rotated:
    """The type of :data:`ROTATED`: what :meth:`Store.load` returns for a rotation tombstone."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ROTATED"


#: Returned by :meth:`Store.load` for a key that :meth:`Store.rename` renamed away less than its
#: grace window ago. The record it now names is not revealed: a request that still carries the
#: old token must not see the signed-in session.
ROTATED: Final = Rotated()


class Outcome(enum.Enum):
    """What a write (:meth:`Store.apply`, :meth:`Store.touch`, :meth:`Store.rename`) did.

    ``bool(outcome)`` is whether something was written: true for :attr:`DONE` and
    :attr:`FOLLOWED`, false for :attr:`ROTATED` and :attr:`GONE`.
    """

    #: Written to the live record under the key given.
    DONE = "done"
    #: The key was renamed away within its grace window: the data delta went to the record it
    #: was renamed to (any touch was dropped). Only :meth:`Store.apply` and :meth:`Store.touch`.
    FOLLOWED = "followed"
    #: The old key of a :meth:`Store.rename` had itself been renamed away within its grace
    #: window; nothing was written.
    ROTATED = "rotated"
    #: No live record (nor a record it was renamed to) exists; nothing was written.
    GONE = "gone"

    def __bool__(self) -> bool:
        return self is Outcome.DONE or self is Outcome.FOLLOWED


@dataclass(slots=True, frozen=True)
class Touch:
    """New expiry values for a record, applied with a delta or alone.

    The caller caps ``expires_at`` at the absolute expiry; stores store both as they are given.

    :param last_seen: the new ``last_seen``.
    :param expires_at: the new ``expires_at``.
    :param absolute_expires_at: a new ``absolute_expires_at`` (the session moved between the
        browser-session and the persistent policy), or ``None`` to keep it.
    :param stale: set ``auth_time`` to ``None``: the session is no longer a fresh sign-in.
    """

    last_seen: float
    expires_at: float
    absolute_expires_at: float | None = None
    stale: bool = False


class Store(abc.ABC):
    """The core protocol every session store implements: what serving requests needs.

    Records (:meth:`create`, :meth:`load`, :meth:`apply`, :meth:`touch`, :meth:`rename`,
    :meth:`delete`), expiry (:meth:`purge_expired`) and markers (:meth:`put_marker`,
    :meth:`get_marker`, which remember-me revocation and migration claims need). A store that
    also lists, counts and revokes sessions implements :class:`AdminStore` as well.

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
    def load(self, key: str, now: float) -> SessionRecord | Rotated | None:
        """Return the live record stored under ``key``, or ``None`` if absent or expired.

        Return :data:`ROTATED` if ``key`` holds a live rotation tombstone (see :meth:`rename`).
        This is the only call a read-only request makes, so loading a live record must be one
        round trip; an absent key may cost a second one to look for a tombstone.
        """

    @abc.abstractmethod
    def apply(
        self,
        key: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        now: float,
        touch: Touch | None = None,
    ) -> Outcome:
        """Apply a per-key delta to the live record under ``key``, atomically.

        Set every key in ``changed`` to its new serialized value, remove every key in
        ``deleted`` (absent keys are ignored), and when ``touch`` is given also apply it (see
        :class:`Touch`). A key in both ``changed`` and ``deleted`` is deleted. Keys that appear
        in neither are left exactly as they are in the store *now*, even if another request
        changed them after this one loaded the record: that is what keeps overlapping requests
        from losing each other's writes.

        If ``key`` holds a rotation tombstone, apply ``changed`` and ``deleted`` (not ``touch``)
        to the live record the tombstone names instead, following up to :data:`MAX_FOLLOW`
        tombstones, and return :attr:`Outcome.FOLLOWED`. Where the backend allows, finding the
        tombstone and writing the record it names is one atomic step; where it does not (Redis
        Cluster), a tombstone is never changed once written, so following it in a second step
        is equivalent.

        Return :attr:`Outcome.DONE` when written to ``key``, and :attr:`Outcome.GONE`, writing
        nothing, if no live record exists (it was deleted, revoked or expired meanwhile): a delta
        never resurrects a session.
        """

    @abc.abstractmethod
    def touch(self, key: str, touch: Touch, now: float) -> Outcome:
        """Apply ``touch`` to the live record under ``key`` (see :class:`Touch`).

        Return :attr:`Outcome.DONE`; :attr:`Outcome.FOLLOWED`, writing nothing, if ``key`` holds
        a rotation tombstone (the record it names is newer than this touch); or
        :attr:`Outcome.GONE`, writing nothing, if no live record exists.
        """

    @abc.abstractmethod
    def rename(
        self,
        old_key: str,
        record: SessionRecord,
        now: float,
        *,
        changed: Mapping[str, str] | None = None,
        deleted: Collection[str] = (),
        grace: float = 0.0,
    ) -> Outcome:
        """Move the live record under ``old_key`` to ``record.key``, atomically, with a delta.

        Used when the token changes (login, privilege change). The new record takes every field
        from ``record`` except ``data`` (which is ignored): its data is the data stored under
        ``old_key`` *at this instant*, with ``changed`` set and ``deleted`` removed as
        :meth:`apply` does. So whatever another request wrote to the old record after the caller
        loaded it survives the rename.

        With ``grace`` above 0, the old key keeps a rotation tombstone naming ``record.key``
        until ``now + grace``: :meth:`load` answers :data:`ROTATED` for it and :meth:`apply`
        follows it. With ``grace`` 0 the old key is simply gone. The old token must stop
        loading the session the moment the new one starts: both happen in the same atomic step.

        Return :attr:`Outcome.DONE`; :attr:`Outcome.ROTATED`, writing nothing, if ``old_key``
        holds a tombstone (another request renamed it first); :attr:`Outcome.GONE`, writing
        nothing, if no live record exists under ``old_key``. If another live record already
        holds ``record.key`` or ``record.handle``, raise ``ValueError`` and change nothing.
        Where the backend cannot make the whole step atomic (a cross-slot rename in Redis
        Cluster) it must create the new record before it turns the old one into a tombstone,
        so there is never a moment with neither, and it must still carry over every write that
        reached the old record before the tombstone.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Delete the record under ``key``, live or expired. Return whether one was deleted.

        A rotation tombstone under ``key`` is left alone (``False``): it is not a record.
        """

    @abc.abstractmethod
    def purge_expired(self, now: float, batch_size: int = 1000) -> int:
        """Delete at most ``batch_size`` expired records, and expired tombstones and markers.

        Return how many records, tombstones and markers were deleted; callers loop until it
        returns 0. A batch must be short enough not to stall concurrent requests for long.
        ``batch_size`` below 1 raises ``ValueError``.
        """

    @abc.abstractmethod
    def put_marker(
        self, name: str, value: str, expires_at: float, now: float, *, replace: bool = True
    ) -> bool:
        """Store the marker ``name`` with ``value`` until ``expires_at``.

        Markers live apart from records: no session key ever equals a marker name, and markers
        are never loaded, listed or counted as sessions. With ``replace`` False, a live marker
        of that name is left as it is and ``False`` returned (so exactly one of several
        concurrent callers gets ``True``: a claim). Otherwise return ``True``.
        """

    @abc.abstractmethod
    def get_marker(self, name: str, now: float) -> str | None:
        """Return the value of the live marker ``name``, or ``None`` if absent or expired."""

    def log_unreadable(self, key: str, reason: object, handle: str | None = None) -> None:
        """Log, once per record, that the record under ``key`` cannot be decoded.

        For implementations: call it where a stored record fails to decode, then treat the
        record as absent. The line names the record by ``handle`` when it could be read, or by a
        salted fingerprint of the key, never the key itself.
        """
        from ..tokens import fingerprint

        reported: set[str] | None = getattr(self, "_reported_unreadable", None)
        if reported is None:
            reported = set()
            self._reported_unreadable = reported
        if key in reported:
            return
        if len(reported) >= _MAX_REPORTED:
            reported.clear()
        reported.add(key)
        name = f"handle {handle}" if handle else f"fingerprint {fingerprint(key)}"
        security_logger.warning(
            "Stored session (%s) in the %s store cannot be read (%s); treating it as absent.",
            name,
            self.name,
            reason,
        )

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections and files. The store is not used after this."""

    def describe(self) -> str:
        """Where the data lives, with any password hidden, for start-up logs and ``stats``."""
        return self.name


class AdminStore(Store):
    """The optional administration protocol: counting, listing and revoking sessions.

    What ``keepsake.sessions()``, ``revoke()``, ``revoke_all()`` and the ``stats``, ``list``
    and ``revoke`` commands use. Every store shipped with Keepsake implements it; a store that
    implements only :class:`Store` serves requests, logins and logouts, and those calls raise
    :class:`~flask_keepsake.errors.KeepsakeError` (see :func:`admin_store`).
    """

    @abc.abstractmethod
    def list_user(self, user_id: str, now: float) -> list[SessionRecord]:
        """Return the live records bound to ``user_id``, oldest first (by ``created``)."""

    @abc.abstractmethod
    def delete_user(self, user_id: str, now: float, *, except_key: str | None = None) -> int:
        """Delete every record bound to ``user_id`` except ``except_key``; return how many live
        records were deleted."""

    @abc.abstractmethod
    def delete_handle(
        self, handle: str, now: float, *, user_id: str | None = None
    ) -> tuple[str, str | None] | None:
        """Delete the live record whose public handle is ``handle``.

        When ``user_id`` is given, only a record bound to that user is deleted. Return the
        deleted record's key and user id (``None`` if anonymous), or ``None`` if there was no
        such live record.
        """

    @abc.abstractmethod
    def count(self, now: float) -> int:
        """Return the number of live records (tombstones and markers are not records)."""

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


def admin_store(store: Store, what: str) -> AdminStore:
    """``store`` as an :class:`AdminStore`, or a :class:`KeepsakeError` naming ``what``."""
    if isinstance(store, AdminStore):
        return store
    raise KeepsakeError(
        f"{what} needs a store that lists and revokes sessions (flask_keepsake.stores.AdminStore);"
        f" the {store.name} store set by KEEPSAKE_STORE implements only the core Store protocol."
    )
