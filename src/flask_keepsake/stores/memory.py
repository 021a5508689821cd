"""A store that keeps records in a dict of this process: for tests and development.

Records vanish when the process exits and are not shared between processes, so a server with
several worker processes must use :class:`~flask_keepsake.stores.sqlite.SQLiteStore` or Redis.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Collection, Mapping

from .base import MAX_FOLLOW, ROTATED, AdminStore, Outcome, Rotated, SessionRecord, Touch


class MemoryStore(AdminStore):
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
        #: Rotation tombstones: old key -> (new key, expires_at).
        self._tombstones: dict[str, tuple[str, float]] = {}
        self._markers: dict[str, tuple[str, float]] = {}

    # Helpers below expect the lock to be held.

    def _successor(self, key: str, now: float) -> str | None:
        entry = self._tombstones.get(key)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    @staticmethod
    def _patch(record: SessionRecord, changed: Mapping[str, str], deleted: Collection[str]) -> None:
        record.data.update(changed)
        for name in deleted:
            record.data.pop(name, None)

    @staticmethod
    def _touch(record: SessionRecord, touch: Touch) -> None:
        record.last_seen = touch.last_seen
        record.expires_at = touch.expires_at
        if touch.absolute_expires_at is not None:
            record.absolute_expires_at = touch.absolute_expires_at
        if touch.stale:
            record.auth_time = None

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

    def load(self, key: str, now: float) -> SessionRecord | Rotated | None:
        """Return a copy of the live record under ``key``; see :meth:`Store.load`."""
        with self._lock:
            record = self._live(key, now)
            if record is not None:
                return record.copy()
            return ROTATED if self._successor(key, now) is not None else None

    def apply(
        self,
        key: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        now: float,
        touch: Touch | None = None,
    ) -> Outcome:
        """Apply a per-key delta; see :meth:`Store.apply`.

        A key named in both ``changed`` and ``deleted`` ends up deleted.
        """
        with self._lock:
            record = self._live(key, now)
            if record is not None:
                self._patch(record, changed, deleted)
                if touch is not None:
                    self._touch(record, touch)
                return Outcome.DONE
            for _ in range(MAX_FOLLOW):
                successor = self._successor(key, now)
                if successor is None:
                    return Outcome.GONE
                key = successor
                record = self._live(key, now)
                if record is not None:
                    self._patch(record, changed, deleted)
                    return Outcome.FOLLOWED
            return Outcome.GONE

    def touch(self, key: str, touch: Touch, now: float) -> Outcome:
        """Apply ``touch``; see :meth:`Store.touch`."""
        with self._lock:
            record = self._live(key, now)
            if record is None:
                return Outcome.FOLLOWED if self._successor(key, now) else Outcome.GONE
            self._touch(record, touch)
            return Outcome.DONE

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
        """Move the live record under ``old_key`` to ``record.key``; see :meth:`Store.rename`.

        Raise ``ValueError``, changing nothing, if another live record already holds
        ``record.key`` or ``record.handle``.
        """
        with self._lock:
            old = self._live(old_key, now)
            if old is None:
                return Outcome.ROTATED if self._successor(old_key, now) else Outcome.GONE
            self._remove(old_key)
            try:
                self._make_room(record, now)
            except ValueError:
                self._insert(old)
                raise
            new = record.copy()
            new.data = old.data
            self._patch(new, changed or {}, deleted)
            self._insert(new)
            if grace > 0 and old_key != record.key:
                self._tombstones[old_key] = (record.key, now + grace)
            return Outcome.DONE

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

    def delete_handle(
        self, handle: str, now: float, *, user_id: str | None = None
    ) -> tuple[str, str | None] | None:
        """Delete the live record named ``handle``; see :meth:`Store.delete_handle`."""
        with self._lock:
            key = self._by_handle.get(handle)
            if key is None:
                return None
            record = self._live(key, now)
            if record is None or (user_id is not None and record.user_id != user_id):
                return None
            self._remove(key)
            return key, record.user_id

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
            purged = len(expired)
            for entries in (self._tombstones, self._markers):
                names = [n for n, (_, until) in entries.items() if until <= now]
                for name in names[: batch_size - purged]:
                    del entries[name]
                purged += min(len(names), batch_size - purged)
            return purged

    def put_marker(
        self, name: str, value: str, expires_at: float, now: float, *, replace: bool = True
    ) -> bool:
        """Store a marker; see :meth:`Store.put_marker`."""
        with self._lock:
            current = self._markers.get(name)
            if not replace and current is not None and current[1] > now:
                return False
            self._markers[name] = (value, expires_at)
            return True

    def get_marker(self, name: str, now: float) -> str | None:
        """Return a live marker's value; see :meth:`Store.get_marker`."""
        with self._lock:
            current = self._markers.get(name)
            return None if current is None or current[1] <= now else current[0]

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
            self._clear()
            return deleted

    def close(self) -> None:
        """Forget every record, tombstone and marker."""
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self._records.clear()
        self._by_user.clear()
        self._by_handle.clear()
        self._tombstones.clear()
        self._markers.clear()
