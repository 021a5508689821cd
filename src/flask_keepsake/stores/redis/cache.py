"""A per-process cache of session records that Redis keeps honest (server-assisted caching).

Opt-in, for :class:`~flask_keepsake.stores.redis.RedisStore` on a single server (or a Sentinel
master): ``RedisStore(client, local_cache=10_000)`` or ``?local_cache=10000`` in the store URL.
It uses only public redis-py API (``Connection.connect``, ``send_command``, ``read_response``,
``can_read``, ``disconnect``, ``register_connect_callback``), and holds its lock only around
work in memory, never across a round trip to Redis.

How it stays correct (see ``docs/stores.md``, "Local cache"):

- One **listener** connection per process, ``L``, subscribed to ``__redis__:invalidate``, hears
  every invalidation. The cache's **reader** connections (a small pool of its own, one per
  thread that is using it at that moment) each run ``CLIENT TRACKING ON REDIRECT <L> NOLOOP``:
  Redis remembers each session key a reader read and, when any other connection (another
  worker, another host, this process's own store pool) changes or deletes it, or it expires,
  publishes the key to ``L``. The messages waiting on ``L`` are read, without waiting, before
  a cached record is served and after every reply a reader receives.
- A record is cached with the reader that read it. A miss marks the key as pending before it
  asks Redis and caches the answer only if no invalidation of the key arrived meanwhile, so an
  answer that a change overtook is never kept. A hit first checks, without waiting, that the
  record's reader is still connected (Redis forgets what a closed connection tracked); a reader
  busy in another thread is checked by that thread, which drops the reader's records as soon as
  a call on it fails.
- A change made through the reader that tracks the key sends no message (``NOLOOP``), so a
  request's own delta keeps the cache warm: the delta script returns the record's new version
  (field ``v``, bumped by every delta), and a ``HGET v`` sent with it re-registers the key (a
  write ends Redis's tracking of it). The cached copy is updated only if that version is exactly
  one more than the cached one and the ``HGET`` returns it: any other writer in between makes
  the versions disagree, and the entry is dropped. A delta through another reader, or one that
  followed a rotation tombstone (which wrote another key that no message will report), drops
  the entries it touched.
- Rotation tombstones are never cached. If ``L`` breaks, the server flushes its database, or
  the process forks, the whole cache is dropped; if a reader breaks or reconnects, the records
  it tracked are. Every Redis error raised by the store drops the cache too. An entry is also
  read again after ``max_age`` seconds, whatever happens, which bounds how long a silently dead
  network path could serve an old copy.

Another process's change is seen by this process as soon as Redis's message reaches ``L``'s
socket, which Redis writes in the same event-loop pass as its reply to the writer: on one
machine, before the writer's own request can finish. Across hosts it is the network delay from
Redis to this host.
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
#: The channel Redis publishes invalidations on, for connections that redirect them.
CHANNEL: Final = "__redis__:invalidate"


class CacheUnsupported(Exception):
    """The server refused what the cache needs (``CLIENT TRACKING``); nothing was sent."""


class _Entry:
    __slots__ = ("reader", "record", "stored", "version")

    def __init__(self, record: SessionRecord, version: int, reader: Any, stored: float) -> None:
        self.record = record
        self.version = version
        self.reader = reader
        self.stored = stored


class LocalCache:
    """Session records of one process, kept by session key, invalidated by Redis.

    :param client: the store's ``redis.Redis`` client; the cache's own connections are built from
        its connection pool's settings (host or socket, TLS, password, timeouts, Sentinel).
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
        #: Keys being read from Redis, each with the token of its latest reader.
        self._pending: dict[bytes, object] = {}
        self._listener: Any = None
        self._listener_id: int | None = None
        #: Bumped whenever the listener changes: readers of an older one track nothing useful.
        self._generation = 0
        self._generations: dict[Any, int] = {}
        self._idle: list[Any] = []
        #: Readers made but not yet connected (each is touched only by the thread holding it).
        self._fresh: set[Any] = set()
        self._pid = os.getpid()
        #: ``False`` once the server refused client-side caching: the store then reads Redis.
        self.supported = True
        #: Loads served from memory and loads that asked Redis (for tests and benchmarks).
        self.hits = 0
        self.misses = 0

    # -- connections (the caller holds the lock unless it says otherwise) ---------------------

    def _new_connection(self) -> Any:
        kwargs = dict(self._pool.connection_kwargs)
        # RESP2, whatever the client speaks: the listener then gets plain pub/sub messages
        # (redirected invalidations), and no reader ever gets a push between two replies.
        kwargs["protocol"] = 2
        return self._pool.connection_class(**kwargs)

    def _forked(self) -> None:
        if self._pid != os.getpid():
            # A forked child shares the parent's sockets: never read from nor close them here.
            self._pid = os.getpid()
            self._listener = self._listener_id = None
            self._idle, self._generations, self._fresh = [], {}, set()
            self._entries.clear()
            self._pending.clear()
            self._generation += 1

    def _drain(self) -> bool:
        """Apply every invalidation waiting on ``L``, without waiting for more.

        ``False`` (and an empty cache) if there is no listener or it broke.
        """
        listener = self._listener
        if listener is None:
            return False
        try:
            while listener.can_read(timeout=0):
                self._on_message(listener.read_response())
        except Exception:
            self._drop_listener()
            return False
        return True

    def _on_message(self, message: Any) -> None:
        if not isinstance(message, list) or len(message) < 3:
            return
        kind = message[0]
        if kind not in (b"message", "message"):
            return
        keys = message[2]
        if keys is None:
            # FLUSHDB / FLUSHALL, or the server's tracking table overflowed: forget everything.
            self._entries.clear()
            self._pending.clear()
            return
        if not isinstance(keys, list):
            return
        pop, unpend = self._entries.pop, self._pending.pop
        for key in keys:
            raw = key if isinstance(key, bytes) else key.encode("utf-8", "surrogatepass")
            pop(raw, None)
            unpend(raw, None)

    def _drop_listener(self) -> None:
        listener, self._listener, self._listener_id = self._listener, None, None
        self._generation += 1
        self._entries.clear()
        self._pending.clear()
        idle, self._idle = self._idle, []
        for conn in idle:
            self._generations.pop(conn, None)
            conn.disconnect()
        if listener is not None:
            listener.disconnect()

    def _drop_reader(self, reader: Any) -> None:
        self._generations.pop(reader, None)
        for key in [k for k, e in self._entries.items() if e.reader is reader]:
            del self._entries[key]
        reader.disconnect()

    def _open_listener(self) -> tuple[Any, int]:
        """Connect ``L``, learn its id, subscribe it. Network; the caller holds no lock."""
        listener = self._new_connection()
        try:
            listener.connect()
            listener.send_command("CLIENT", "ID")
            client_id = int(listener.read_response())
            listener.send_command("SUBSCRIBE", CHANNEL)
            listener.read_response()
        except self._response_error as exc:
            # CLIENT renamed away or refused by an ACL (or no tracking: Redis before 6).
            listener.disconnect()
            self.supported = False
            raise CacheUnsupported(str(exc)) from exc
        except BaseException:
            listener.disconnect()
            raise
        return listener, client_id

    def _ready(self) -> None:
        """Make sure ``L`` is there. Takes the lock itself, but not across the network."""
        with self._lock:
            self._forked()
            if self._listener is not None and self._drain():
                return
        listener, client_id = self._open_listener()
        with self._lock:
            if self._listener is None:
                self._listener, self._listener_id = listener, client_id
                self._generation += 1
                self._entries.clear()
                self._pending.clear()
                return
        listener.disconnect()  # another thread was quicker

    def _checkout(self, preferred: Any = None) -> Any:
        """An idle reader of the current listener (``preferred`` if idle), or a new one."""
        if preferred is not None and preferred in self._idle:
            self._idle.remove(preferred)
            return preferred
        while self._idle:
            reader = self._idle.pop()
            if self._generations.get(reader) == self._generation:
                return reader
            self._drop_reader(reader)
        reader = self._new_connection()
        self._generations[reader] = self._generation
        reader.register_connect_callback(self._on_connect)
        self._fresh.add(reader)
        return reader

    def _checkin(self, reader: Any) -> None:
        if self._generations.get(reader) == self._generation and self._pid == os.getpid():
            self._idle.append(reader)
        else:
            self._drop_reader(reader)

    def _on_connect(self, reader: Any) -> None:
        # Runs inside every (re)connect of a reader, which holds a checkout: a new connection
        # has tracked nothing yet, and its invalidations go to the listener of now.
        with self._lock:
            for key in [k for k, e in self._entries.items() if e.reader is reader]:
                del self._entries[key]
            listener_id = self._listener_id
            # With no listener (it broke a moment ago), this reader's answers are not cached.
            self._generations[reader] = -1 if listener_id is None else self._generation
        if listener_id is None:
            return
        reader.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", listener_id, "NOLOOP")
        try:
            reader.read_response()
        except self._response_error as exc:
            self.supported = False
            raise CacheUnsupported(str(exc)) from exc

    def _alive(self, reader: Any) -> bool:
        """Whether an idle reader is still connected: nothing may be waiting on it but EOF."""
        try:
            return not reader.can_read(timeout=0)
        except Exception:
            return False

    def _call(self, reader: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` on a checked-out reader in one round trip; the lock is not held.

        Replies come back in order, error replies as values. A reader that fails is dropped
        with the records it tracked.
        """
        try:
            if reader in self._fresh:
                self._fresh.discard(reader)
                reader.connect()
            reader.send_packed_command(reader.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(reader.read_response())
                except self._response_error as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            with self._lock:
                self._drop_reader(reader)
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
            self._forked()
            if self._drain():
                entry = self._entries.get(skey)
                if entry is not None and time.monotonic() - entry.stored < self.max_age:
                    if entry.record.expires_at <= now:
                        del self._entries[skey]
                        return None
                    reader = entry.reader
                    # A busy reader is checked by the thread using it, which drops its records
                    # the moment it fails (a closed connection fails at once, not at a timeout).
                    if reader not in self._idle or self._alive(reader):
                        self._entries.move_to_end(skey)
                        self.hits += 1
                        return entry.record.copy()
                    self._idle.remove(reader)
                    self._drop_reader(reader)
            self.misses += 1
        self._ready()
        with self._lock:
            token = self._pending[skey] = object()
            reader = self._checkout()
        try:
            (raw,) = self._call(reader, [("HGETALL", skey)])
        except BaseException:
            with self._lock:
                if self._pending.get(skey) is token:
                    del self._pending[skey]
            raise
        with self._lock:
            self._checkin(reader)
            self._drain()
            mine = self._pending.get(skey) is token
            if mine:
                del self._pending[skey]
            if isinstance(raw, Exception):
                raise raw
            if isinstance(raw, list):
                # RESP2 answers HGETALL with a flat list of fields and values.
                raw = dict(zip(raw[::2], raw[1::2], strict=True))
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
            if mine and self._generations.get(reader) == self._generation:
                self._store(skey, record.copy(), version, reader)
            return record

    def apply(
        self,
        skey: bytes,
        script: tuple[Any, ...],
        changed: Mapping[str, str],
        deleted: Collection[str],
        touch: Touch | None,
    ) -> Any:
        """Run the delta ``script`` on a reader with a ``HGET v`` behind it; keep the cache in step.

        Returns the script's reply (the new version, 0 if the record was not live, or a list
        naming the key it wrote instead when ``skey`` was a tombstone), or the exception it
        raised (``NOSCRIPT``: the caller runs it through redis-py's ``Script`` instead).
        """
        self._ready()
        with self._lock:
            before = self._entries.get(skey)
            reader = self._checkout(None if before is None else before.reader)
        result, version = self._call(reader, [script, ("HGET", skey, "v")])
        with self._lock:
            self._checkin(reader)
            self._drain()
            entry = self._entries.get(skey)
            if (
                isinstance(result, int)
                and result > 0
                and entry is not None
                and entry is before
                and entry.reader is reader
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
                self._pending.pop(skey, None)
                if isinstance(result, list):
                    # Written through a reader with NOLOOP: Redis reports that change to no one.
                    for other in result[1:]:
                        raw = other if isinstance(other, bytes) else other.encode()
                        self._entries.pop(raw, None)
                        self._pending.pop(raw, None)
            return result

    def _store(self, skey: bytes, record: SessionRecord, version: int, reader: Any) -> None:
        entries = self._entries
        entries[skey] = _Entry(record, version, reader, time.monotonic())
        entries.move_to_end(skey)
        while len(entries) > self.size:
            entries.popitem(last=False)

    def evict(self, skeys: Collection[bytes]) -> None:
        """Forget ``skeys`` now (this process changed or deleted them outside the readers)."""
        with self._lock:
            for skey in skeys:
                self._entries.pop(skey, None)
                self._pending.pop(skey, None)

    def clear(self) -> None:
        """Forget every record (after any Redis error, or when every session was deleted)."""
        with self._lock:
            self._entries.clear()
            self._pending.clear()

    def close(self) -> None:
        """Forget every record and close the listener and the idle readers."""
        with self._lock:
            self._forked()
            self._drop_listener()

    def __len__(self) -> int:
        return len(self._entries)
