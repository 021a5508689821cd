"""A store that keeps records in a dict of this process: for tests and development.

Records vanish when the process exits and are not shared between processes, so a server with
several worker processes must use :class:`~flask_keepsake.stores.sqlite.SQLiteStore` or Redis.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Collection, Mapping

from .base import SessionRecord, Store, Touch


class MemoryStore(Store):
    """Keep session records in memory, guarded by one lock.

    Indexes by user and by handle keep :meth:`list_user`, :meth:`delete_user` and
    :meth:`delete_handle` independent of the total number of sessions. Expired records stay until
    :meth:`purge_expired` removes them, exactly as in the persistent stores.
    """

    name = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, SessionRecord] = {}
        self._by_user: dict[str, set[str]] = {}
        self._by_handle: dict[str, str] = {}

    # Helpers below expect the lock to be held.

    def _live(self, key: str, now: float) -> SessionRecord | None:
        record = self._records.get(key)
        if record is None or record.expires_at <= now:
            return None
        return record

    def _insert(self, record: SessionRecord) -> None:
        self._records[record.key] = record
        self._by_handle[record.handle] = record.key
        if record.user_id is not None:
            self._by_user.setdefault(record.user_id, set()).add(record.key)

    def _remove(self, key: str) -> SessionRecord | None:
        record = self._records.pop(key, None)
        if record is None:
            return None
        if self._by_handle.get(record.handle) == key:
            del self._by_handle[record.handle]
        if record.user_id is not None:
            keys = self._by_user.get(record.user_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_user[record.user_id]
        return record

    def _make_room(self, record: SessionRecord, now: float) -> None:
        """Raise ``ValueError`` if ``record``'s key or handle is live; drop expired holders."""
        existing = self._records.get(record.key)
        if existing is not None and existing.expires_at > now:
            raise ValueError("a live session record with this key already exists")
        holder = self._by_handle.get(record.handle)
        holder_record = self._records.get(holder) if holder is not None else None
        if holder_record is not None and holder_record.expires_at > now:
            raise ValueError("a live session record with this handle already exists")
        if existing is not None:
            self._remove(record.key)
        if holder is not None:
            self._remove(holder)

    # The contract.

    def create(self, record: SessionRecord) -> None:
        """Store a new record; see :meth:`Store.create`.

        ``create`` receives no clock, so a record under the same key or handle counts as expired
        when its ``expires_at`` is at or before the new record's ``created``.
        """
        with self._lock:
            self._make_room(record, record.created)
            self._insert(record.copy())

    def load(self, key: str, now: float) -> SessionRecord | None:
        """Return a copy of the live record under ``key``; see :meth:`Store.load`."""
        with self._lock:
            record = self._live(key, now)
            return None if record is None else record.copy()

    def apply(
        self,
        key: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        now: float,
        touch: Touch | None = None,
    ) -> bool:
        """Apply a per-key delta; see :meth:`Store.apply`.

        A key named in both ``changed`` and ``deleted`` ends up deleted.
        """
        with self._lock:
            record = self._live(key, now)
            if record is None:
                return False
            record.data.update(changed)
            for name in deleted:
                record.data.pop(name, None)
            if touch is not None:
                record.last_seen = touch.last_seen
                record.expires_at = touch.expires_at
            return True

    def touch(self, key: str, touch: Touch, now: float) -> bool:
        """Refresh ``last_seen`` and ``expires_at``; see :meth:`Store.touch`."""
        with self._lock:
            record = self._live(key, now)
            if record is None:
                return False
            record.last_seen = touch.last_seen
            record.expires_at = touch.expires_at
            return True

    def rename(self, old_key: str, record: SessionRecord, now: float) -> bool:
        """Replace the live record under ``old_key`` by ``record``; see :meth:`Store.rename`.

        Raise ``ValueError``, changing nothing, if another live record already holds
        ``record.key`` or ``record.handle``.
        """
        with self._lock:
            old = self._live(old_key, now)
            if old is None:
                return False
            self._remove(old_key)
            try:
                self._make_room(record, now)
            except ValueError:
                self._insert(old)
                raise
            self._insert(record.copy())
            return True

    def delete(self, key: str) -> bool:
        """Delete the record under ``key``; see :meth:`Store.delete`.

        ``delete`` receives no clock, so the result says whether any record, live or expired but
        not yet purged, was removed.
        """
        with self._lock:
            return self._remove(key) is not None

    def list_user(self, user_id: str, now: float) -> list[SessionRecord]:
        """Return copies of the user's live records, oldest first; see :meth:`Store.list_user`."""
        with self._lock:
            records = [
                record.copy()
                for key in self._by_user.get(user_id, ())
                if (record := self._records[key]).expires_at > now
            ]
        records.sort(key=lambda record: (record.created, record.key))
        return records

    def delete_user(self, user_id: str, now: float, *, except_key: str | None = None) -> int:
        """Delete the user's records except ``except_key``; see :meth:`Store.delete_user`."""
        with self._lock:
            live = 0
            for key in list(self._by_user.get(user_id, ())):
                if key == except_key:
                    continue
                record = self._remove(key)
                if record is not None and record.expires_at > now:
                    live += 1
            return live

    def delete_handle(self, handle: str, now: float, *, user_id: str | None = None) -> str | None:
        """Delete the live record named ``handle``; see :meth:`Store.delete_handle`."""
        with self._lock:
            key = self._by_handle.get(handle)
            if key is None:
                return None
            record = self._live(key, now)
            if record is None or (user_id is not None and record.user_id != user_id):
                return None
            self._remove(key)
            return key

    def purge_expired(self, now: float, batch_size: int = 1000) -> int:
        """Delete up to ``batch_size`` expired records; see :meth:`Store.purge_expired`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        with self._lock:
            expired: list[str] = []
            for key, record in self._records.items():
                if record.expires_at <= now:
                    expired.append(key)
                    if len(expired) == batch_size:
                        break
            for key in expired:
                self._remove(key)
            return len(expired)

    def count(self, now: float) -> int:
        """Return the number of live records; see :meth:`Store.count`."""
        with self._lock:
            return sum(1 for record in self._records.values() if record.expires_at > now)

    def count_expired(self, now: float) -> int:
        """Return the number of expired records; see :meth:`Store.count_expired`."""
        with self._lock:
            return sum(1 for record in self._records.values() if record.expires_at <= now)

    def user_counts(self, now: float, limit: int) -> list[tuple[str, int]]:
        """Return the users with the most live records; see :meth:`Store.user_counts`."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        with self._lock:
            counts = [
                (user_id, live)
                for user_id, keys in self._by_user.items()
                if (live := sum(1 for key in keys if self._records[key].expires_at > now))
            ]
        return heapq.nsmallest(limit, counts, key=lambda pair: (-pair[1], pair[0]))

    def delete_all(self) -> int:
        """Delete every record and index entry; see :meth:`Store.delete_all`."""
        with self._lock:
            deleted = len(self._records)
            self._records.clear()
            self._by_user.clear()
            self._by_handle.clear()
            return deleted

    def close(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records.clear()
            self._by_user.clear()
            self._by_handle.clear()
