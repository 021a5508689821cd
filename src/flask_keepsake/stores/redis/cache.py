"""A per-process cache of session records that Redis keeps honest (server-assisted caching).

Opt-in, for :class:`~flask_keepsake.stores.redis.RedisStore` on a single server (or a Sentinel
master): ``RedisStore(client, local_cache=10_000)`` or ``?local_cache=10000`` in the store URL.

How it stays correct (see ``docs/stores.md``, "Local cache"):

- Every cached read and every cached write of a session goes through one dedicated connection
  per process, ``T``, speaking RESP3 with ``CLIENT TRACKING ON NOLOOP``. Redis remembers each
  session key ``T`` read and, when any other connection (another worker, another host, this
  process's own pool) changes or deletes it, or it expires, pushes an ``invalidate`` message to
  ``T``. Before serving a cached record, the pending messages are read from ``T``'s socket without
  waiting; on one connection Redis sends every such message before the reply to any later command,
  so a change made before one of our commands is always seen before that command's answer.
- A change made through ``T`` itself sends no message (``NOLOOP``), so a request's own delta
  keeps the cache warm: the delta script returns the record's new version (field ``v``, bumped
  by every delta), and a ``HGET v`` pipelined behind it re-registers the key for tracking (a write
  clears Redis's tracking entry). The cached copy is updated only if that version is exactly one
  more than the cached one and the ``HGET`` returns it: any other writer in between makes the
  versions disagree, and the entry is dropped. A delta that followed a rotation tombstone wrote
  another key through ``T``, which no message will ever report: the entries of both keys are
  dropped.
- Rotation tombstones are never cached: a load that meets one answers ``ROTATED`` from Redis (only
  a late request with an old token reads one). A rename, made on the store's own connections,
  is reported by Redis like any other change, and the store drops both keys as well.
- If ``T`` breaks or reconnects, the server flushes its database, or the process forks, the whole
  cache is dropped (the server forgot what ``T`` tracked). Every Redis error raised by the store
  drops it too. An entry is also re-read after ``max_age`` seconds, whatever happens, which bounds
  how long a silently dead network path could serve an old copy.

Another process's change is seen by this process as soon as Redis's push reaches ``T``'s socket,
which Redis writes in the same event-loop pass as its reply to the writer: on one machine, before
the writer's own request can finish. Across hosts it is the network delay from Redis to this host.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

from ..base import Rotated, SessionRecord, Touch

logger = logging.getLogger("flask_keepsake")

#: Default number of session records one process keeps.
DEFAULT_SIZE: Final = 10_000
#: Default age (seconds) after which a cached record is read again from Redis in any case.
DEFAULT_MAX_AGE: Final = 30.0


class CacheUnsupported(Exception):
    """The server refused what the cache needs (RESP3, ``CLIENT TRACKING``); nothing was sent."""


class _Entry:
    __slots__ = ("record", "stored", "version")

    def __init__(self, record: SessionRecord, version: int, stored: float) -> None:
        self.record = record
        self.version = version
        self.stored = stored


class LocalCache:
    """Session records of one process, kept by session key, invalidated by Redis.

    :param client: the store's ``redis.Redis`` client; the tracking connection is built from its
        connection pool's settings (host or socket, TLS, password, timeouts, Sentinel).
    :param size: at most this many records are kept (least recently used go first).
    :param max_age: seconds after which a record is read from Redis again.
    :param response_error: redis-py's ``ResponseError``: an error reply to one command, which
        leaves the connection usable (anything else raised while reading breaks it).
    """

    def __init__(
        self,
        client: Any,
        *,
        size: int = DEFAULT_SIZE,
        max_age: float = DEFAULT_MAX_AGE,
        response_error: type[Exception],
    ) -> None:
        self.size = size
        self.max_age = max_age
        self._pool = client.connection_pool
        self._response_error = response_error
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._conn: Any = None
        self._pid = os.getpid()
        #: ``False`` once the server refused client-side caching: the store then reads Redis.
        self.supported = True
        #: Loads served from memory and loads that asked Redis (for tests and benchmarks).
        self.hits = 0
        self.misses = 0

    # -- the tracking connection ------------------------------------------------------------

    def _connection(self) -> Any:
        """``T``, connected and tracking; built on first use and again in a forked child."""
        if self._pid != os.getpid():
            # A forked child shares the parent's socket: never read from it here.
            self._pid = os.getpid()
            self._conn = None
            self._entries.clear()
        conn = self._conn
        if conn is None:
            kwargs = dict(self._pool.connection_kwargs)
            kwargs["protocol"] = 3
            conn = self._pool.connection_class(**kwargs)
            conn.register_connect_callback(self._on_connect)
            self._conn = conn
        return conn

    def _on_connect(self, conn: Any) -> None:
        # Runs inside every (re)connect of T: a new connection has tracked nothing yet.
        self._entries.clear()
        conn._parser.set_invalidation_push_handler(self._on_invalidate)
        conn.send_command("CLIENT", "TRACKING", "ON", "NOLOOP")
        conn.read_response()

    def _on_invalidate(self, message: list[Any]) -> None:
        keys = message[1] if len(message) > 1 else None
        if keys is None:
            # FLUSHDB / FLUSHALL, or the server's tracking table overflowed: forget everything.
            self._entries.clear()
            return
        pop = self._entries.pop
        for key in keys:
            pop(key if isinstance(key, bytes) else key.encode("utf-8", "surrogatepass"), None)

    def _drain(self, conn: Any) -> None:
        """Read every invalidation already waiting on ``T``'s socket, without waiting."""
        while conn.can_read(timeout=0):
            conn.read_response(push_request=True, timeout=0)

    def _alive(self, conn: Any) -> bool:
        """Drain ``T``; ``False`` (and an empty cache) if it broke, as after a server restart.

        The caller then reads from Redis on a new connection, which fails only if Redis does.
        """
        try:
            self._drain(conn)
        except Exception:
            self._broken()
            return False
        return conn._sock is not None

    def _broken(self) -> None:
        self._entries.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()

    def _call(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` on ``T`` in one round trip; return replies (errors as values)."""
        conn = self._connection()
        if conn._sock is not None and not self._alive(conn):
            # Broken since its last use (a server restart, an idle timeout): start afresh, so
            # that a request after a restart gets an answer rather than this stale socket's error.
            conn = self._connection()
        if conn._sock is None:
            try:
                conn.connect()
            except self._response_error as exc:
                # Redis before 6 (no HELLO 3), or CLIENT renamed or not allowed by the ACL.
                self._broken()
                self.supported = False
                raise CacheUnsupported(str(exc)) from exc
            except BaseException:
                self._broken()
                raise
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except self._response_error as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            self._broken()
            raise

    # -- the store's operations ----------------------------------------------------------------

    def load(
        self,
        skey: bytes,
        now: float,
        parse: Callable[[Mapping[Any, Any]], tuple[SessionRecord, int] | Rotated | None],
    ) -> SessionRecord | Rotated | None:
        """Return a copy of the live record under ``skey``, from memory or with one ``HGETALL``.

        ``parse`` turns ``HGETALL`` output into the record and its version, or into what the
        load answers without caching anything (a tombstone's ``ROTATED``, or ``None``).
        """
        with self._lock:
            if self._conn is not None and self._pid == os.getpid() and self._alive(self._conn):
                entry = self._entries.get(skey)
                if entry is not None and time.monotonic() - entry.stored < self.max_age:
                    if entry.record.expires_at <= now:
                        del self._entries[skey]
                        return None
                    self._entries.move_to_end(skey)
                    self.hits += 1
                    return entry.record.copy()
            self.misses += 1
            (raw,) = self._call([("HGETALL", skey)])
            if isinstance(raw, Exception):
                raise raw
            if not raw:
                self._entries.pop(skey, None)
                return None
            parsed = parse(raw)
            if parsed is None or isinstance(parsed, Rotated):
                self._entries.pop(skey, None)
                return parsed
            record, version = parsed
            if record.expires_at <= now:
                self._entries.pop(skey, None)
                return None
            self._store(skey, record.copy(), version)
            return record

    def apply(
        self,
        skey: bytes,
        script: tuple[Any, ...],
        changed: Mapping[str, str],
        deleted: Collection[str],
        touch: Touch | None,
    ) -> Any:
        """Run the delta ``script`` on ``T`` with a ``HGET v`` behind it; keep the cache in step.

        Returns the script's reply (the new version, 0 if the record was not live, or a list
        naming the key it wrote instead when ``skey`` was a tombstone), or the exception it
        raised (``NOSCRIPT``: the caller loads the scripts and calls again).
        """
        with self._lock:
            before = self._entries.get(skey)
            result, version = self._call([script, ("HGET", skey, "v")])
            entry = self._entries.get(skey)
            if (
                isinstance(result, int)
                and result > 0
                and entry is not None
                and entry is before
                and not isinstance(version, Exception)
                and version is not None
                and int(version) == result == entry.version + 1
            ):
                record = entry.record
                data = record.data
                data.update(changed)
                for name in deleted:
                    data.pop(name, None)
                if touch is not None:
                    record.last_seen = touch.last_seen
                    record.expires_at = touch.expires_at
                    if touch.absolute_expires_at is not None:
                        record.absolute_expires_at = touch.absolute_expires_at
                    if touch.stale:
                        record.auth_time = None
                entry.version = result
                self._entries.move_to_end(skey)
            else:
                self._entries.pop(skey, None)
                if isinstance(result, list):
                    # Written through T: Redis reports that change to no one here.
                    for other in result[1:]:
                        self._entries.pop(
                            other if isinstance(other, bytes) else other.encode(), None
                        )
            return result

    def _store(self, skey: bytes, record: SessionRecord, version: int) -> None:
        entries = self._entries
        entries[skey] = _Entry(record, version, time.monotonic())
        entries.move_to_end(skey)
        while len(entries) > self.size:
            entries.popitem(last=False)

    def evict(self, skeys: Collection[bytes]) -> None:
        """Forget ``skeys`` now (this process changed or deleted them outside ``T``)."""
        with self._lock:
            for skey in skeys:
                self._entries.pop(skey, None)

    def clear(self) -> None:
        """Forget every record (after any Redis error, or when every session was deleted)."""
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        """Forget every record and close ``T``."""
        with self._lock:
            self._broken()

    def __len__(self) -> int:
        return len(self._entries)
