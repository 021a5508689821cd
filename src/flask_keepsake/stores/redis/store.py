"""A store shared by many processes and hosts: Redis (or Valkey), through redis-py.

redis-py is an optional dependency (``pip install 'flask-keepsake[redis]'``); this module imports
it only when a store is built, so ``import flask_keepsake`` works without it.

The data model, chosen for the engine's guarantees (see ``docs/stores.md``):

``{prefix}s:{key}``, a HASH per session
    ``h`` the handle, ``u`` the user id (absent while anonymous), ``l`` last seen, ``e`` expires
    at, ``a`` the absolute expiry, ``t`` the auth time (absent when there is none), ``p``
    present (``1``) when the user asked to be remembered at sign-in, ``m`` the
    fields no request changes (created, IP, user agent) as one JSON array, ``v`` a version that
    every delta bumps (absent until the first one; the local cache and the cluster rename use
    it), and one field ``d:{name}`` per session key. Data fields carry the ``d:`` prefix, so no
    session key can overwrite metadata. Loading is one ``HGETALL``; a delta is one Lua script
    that changes only the fields it names, after checking in the same step that the session is
    live, so overlapping requests keep each other's keys and a deleted session is never written
    again. The key carries a native TTL (``PEXPIRE``) for idle and absolute expiry.
``{prefix}s:{key}``, a small HASH after a rename with a grace window: a rotation tombstone
    ``r`` the key the session was renamed to (without the prefix) and ``x`` until when the
    tombstone holds, with a TTL of the grace window. It replaces the session hash in the same
    step as the rename, under the same key, so loading it is the same single ``HGETALL`` (and in
    a cluster it lives in the old key's slot). A tombstone has no ``h`` and no ``e``: every
    script that looks for a live session (``e`` after now) passes over it, and nothing ever
    changes it once written.
``{prefix}u:{user_id}``, a ZSET per user, and ``{prefix}h:{handle}``, a ZSET per handle
    Indexes from a user and from a handle to session keys, scored by the time the entry was
    added, with a TTL that follows the latest absolute expiry among their sessions.
``{prefix}m:{name}``, a HASH per marker
    ``v`` the value and ``x`` its expiry, with a TTL to reclaim the memory. Markers have their
    own prefix, so no marker name is ever read as a session.

The stored times are compared with the caller's ``now`` everywhere, never with the server's
clock, so a fake clock works; TTLs are set relative to real time (``until - now``) and only
reclaim memory.

A single server and a cluster run the same scripts and the same code for create, load, delta,
touch, delete and the rename of a record to its own key; what differs is only the keys a script
may reach. In a cluster every script touches exactly one key (the session, index and marker keys
carry no hash tag, so they hash to different slots), so nothing needs a cross-slot transaction,
and the work on other keys is a round trip of its own, before or after the script as the order
below requires. On a single server the same scripts do it in the same step, with keys built from
the prefix and what the script reads: a create also writes the index entries and checks the
handle; a rename reads the old session, writes the new one with the delta applied, moves the
index entries and leaves the tombstone; a delta that meets a tombstone follows it to the session
it names, and one that moves the absolute expiry raises the TTL of the session's indexes; a
delete also removes the session's index entries. The one path of its own is a rename in a
cluster to a key in another slot: no script can read the old record and write the new one, so
it takes the steps below, with a retry loop checked by the record's version. The session hash
is the truth and the indexes are hints checked against
it: an index entry is always written *before* its session and removed *after* it (or in the same
step), so an index may briefly name a session that is gone (readers skip it and remove it) but
never misses a live one, and ``revoke_all`` cannot overlook a session (a session renamed after it
read the index is found through the tombstone the rename left).

A rename in a cluster, where the old and the new key live in different slots:

1. Read the old session (``HGETALL``): its data and its version ``v``. A tombstone answers
   ``ROTATED`` and an absent or expired session ``GONE``, and nothing is written.
2. Add the new record's index entries, check that no other live session holds its handle (not
   needed when it keeps the old record's handle, as a regenerate does: only another rename of the
   same record could hold it, and step 3 settles which one wins), and create the new record (data
   read in step 1 with the delta applied), refused if a live record holds the key. The old
   session still answers every request meanwhile.
3. In one script on the old key: if it is still live *and* its version is still the one read,
   turn it into the tombstone (or delete it, without grace) and answer; from that instant the
   old token no longer loads the session, and deltas sent to it follow to the new record.
4. If another request changed the old session between steps 1 and 3, the script of step 3
   writes nothing and answers the session as it is now instead. The keys that request changed
   (and that the rename's own delta does not set) are carried over to the new record, and step
   3 runs again with the new version, at most :data:`RENAME_ATTEMPTS` times. No write can reach
   the new record through the old key before the tombstone exists, so once step 3 succeeds the
   new record holds every write the old session acknowledged, exactly as a one-step rename
   would. (If a revocation deleted the new record meanwhile, carrying over writes nothing and the
   rename ends with the session revoked, as if the revocation had come just after it.)
5. If the old session was deleted meanwhile (logout or revocation wins) the new record is
   deleted and the answer is ``GONE``; if another rename got there first, the new record is
   deleted and the answer is ``ROTATED``. If writes kept racing every attempt, the new record is
   deleted, the old one is left as it is (with all its writes) and
   :class:`~flask_keepsake.errors.StoreUnavailable` is raised.

Tombstones never change once written, so a delta on an old key in a cluster, answered "renamed
to X" by the script on that key, follows in a further round trip to X with the same outcome as
following inside one script.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ...errors import StoreUnavailable
from ..base import MAX_FOLLOW, ROTATED, AdminStore, Outcome, Rotated, SessionRecord, Touch
from .cache import DEFAULT_MAX_AGE, CacheUnsupported, LocalCache
from .scripts import (
    FOLLOW,
    FOLLOWED,
    NO_TOUCH,
    RAISE_INDEXES,
    REACH_ALL,
    REACH_ONE,
    TOUCH,
    Scripts,
)

if TYPE_CHECKING:
    from redis import Redis
    from redis.cluster import RedisCluster
    from redis.commands.core import Script

logger = logging.getLogger("flask_keepsake")

#: The extra that brings redis-py, quoted in the error raised when it is missing.
EXTRA: Final = "flask-keepsake[redis]"

#: Default socket timeouts of the clients :meth:`RedisStore.from_url` builds, in seconds. Short,
#: so that an unreachable or stalled server answers 503 quickly instead of holding workers.
DEFAULT_SOCKET_TIMEOUT: Final = 0.5

#: An index entry whose session is missing is only removed once it is this old (seconds), so an
#: entry written just before its session (index first, then session) is never taken for stale.
INDEX_GRACE: Final = 300.0

#: How many times a rename in a cluster tries to retire the old session while other requests
#: keep changing it (each try costs two round trips) before it gives up, changing nothing.
RENAME_ATTEMPTS: Final = 64


#: One command of a pipeline: a script or a command name, its keys and its arguments.
_Call = tuple["Script | str", Sequence[bytes], Sequence[Any]]

_NUMBERS: Final = (float, int)
_OPTIONAL_STR: Final = (str, type(None))

#: Keys asked for per ``SCAN`` call, and keys handled per pipeline by the commands that walk
#: every key of the store (``count``, ``user_counts``, ``delete_all``).
_SCAN_BATCH: Final = 1000

_DUPLICATE_KEY: Final = "a live session record with this key already exists"
_DUPLICATE_HANDLE: Final = "a live session record with this handle already exists"


def _b(text: str) -> bytes:
    # surrogatepass: any Python str (even a lone surrogate in a session key) round-trips.
    return text.encode("utf-8", "surrogatepass")


def _s(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "surrogatepass")


def _num(value: float) -> bytes:
    # repr() of a float is the shortest text that reads back as the same float, in Python and
    # in Lua (both use strtod), so timestamps survive exactly and compare exactly in scripts.
    return repr(float(value)).encode()


def _ttl_ms(until: float, now: float) -> int:
    return max(1, math.ceil((until - now) * 1000))


def _glob_escape(raw: bytes) -> bytes:
    """Escape the glob metacharacters of ``raw`` for a ``SCAN ... MATCH`` pattern."""
    return b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in raw)


def _bytes(value: bytes | str) -> bytes:
    # Clients made with decode_responses=True hand back str.
    return value if isinstance(value, bytes) else _b(value)


def _bytes_hash(raw: Mapping[Any, Any] | Sequence[Any]) -> dict[bytes, bytes]:
    """``HGETALL`` output (a dict, or a script's flat list) with bytes names and values."""
    if isinstance(raw, Mapping):
        items: Iterable[tuple[Any, Any]] = raw.items()
    else:
        items = zip(raw[::2], raw[1::2], strict=True)
    return {_bytes(f): _bytes(v) for f, v in items}


def _data_fields(raw: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    """The ``d:`` fields of a session hash (with their prefix), from bytes-only ``raw``."""
    return {f: v for f, v in raw.items() if f[:2] == b"d:"}


def _flat(pairs: Mapping[bytes, bytes]) -> list[bytes]:
    return [x for pair in pairs.items() for x in pair]


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"The Redis session store needs redis-py: pip install '{EXTRA}'.", name="redis"
        ) from exc
    return redis


class _Tombstone(NamedTuple):
    """A rotation tombstone as read from a session key: the key it names, and until when."""

    successor: bytes
    until: float


class RedisStore(AdminStore):
    """Keep session records in Redis or Valkey, shared by every process and host using it.

    ::

        store = RedisStore(redis.Redis(host="cache", socket_timeout=0.5))
        store = RedisStore.from_url("rediss://:secret@cache:6380/0", prefix="shop:")

    :param client: a redis-py client: ``redis.Redis`` (also as returned by
        ``redis.sentinel.Sentinel.master_for``) or ``redis.cluster.RedisCluster``. Give it a short
        ``socket_timeout`` so that an outage answers 503 quickly. The store does not close a
        client it was given; :meth:`from_url` builds one that :meth:`close` closes.
    :param prefix: the start of every key the store writes, so that several applications can
        share one database.
    :param local_cache: keep up to this many session records in this process and serve reads
        from them, with Redis telling the process at once when another one changes a session
        (server-assisted client-side caching, ``CLIENT TRACKING``; Redis 6 or later, not in a
        cluster). ``0``, the default, reads every session from Redis. See ``docs/stores.md``.
    :param local_cache_ttl: seconds after which a cached record is read from Redis again anyway.
    """

    name = "redis"

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        prefix: str = "keepsake:",
        local_cache: int = 0,
        local_cache_ttl: float = DEFAULT_MAX_AGE,
    ) -> None:
        redis = import_redis()
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if type(local_cache) is not int or local_cache < 0:
            raise ValueError(f"local_cache must be a whole number of records, not {local_cache!r}")
        if (
            type(local_cache_ttl) not in (int, float)
            or not math.isfinite(local_cache_ttl)
            or local_cache_ttl <= 0
        ):
            raise ValueError(f"local_cache_ttl must be seconds > 0, not {local_cache_ttl!r}")
        self.prefix = prefix
        self._client: Any = client
        self._cluster = isinstance(client, redis.cluster.RedisCluster)
        if local_cache and self._cluster:
            raise ValueError("local_cache does not work with Redis Cluster; leave it at 0")
        self._cache = (
            LocalCache(
                client,
                size=local_cache,
                max_age=float(local_cache_ttl),
                response_error=redis.exceptions.ResponseError,
            )
            if local_cache
            else None
        )
        self._error: type[Exception] = redis.exceptions.RedisError
        self._response_error: type[Exception] = redis.exceptions.ResponseError
        self._noscript: type[Exception] = redis.exceptions.NoScriptError
        self._scripts = Scripts(client)
        self._owns_client = False
        self._closed = False
        raw = _b(prefix)
        self._prefix = raw
        self._s_prefix = raw + b"s:"
        self._u_prefix = raw + b"u:"
        self._h_prefix = raw + b"h:"
        self._m_prefix = raw + b"m:"
        # A single server follows tombstones (and raises index TTLs) inside the delta script; a
        # cluster, where those keys may be on other nodes, does it in further round trips.
        self._reach = REACH_ONE if self._cluster else REACH_ALL

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "keepsake:",
        cluster: bool = False,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        socket_connect_timeout: float | None = None,
        local_cache: int = 0,
        local_cache_ttl: float = DEFAULT_MAX_AGE,
        **options: Any,
    ) -> RedisStore:
        """Build a store on a new client for ``url`` (``redis://``, ``rediss://`` for TLS).

        :param url: ``redis[s]://[[user]:password@]host[:port][/db]``; a ``valkey[s]://``
            scheme is read as ``redis[s]://``.
        :param prefix: see :class:`RedisStore`.
        :param cluster: connect with ``redis.cluster.RedisCluster`` (``url`` names any node).
        :param socket_timeout: seconds to wait for an answer before the store raises
            :class:`~flask_keepsake.errors.StoreUnavailable`.
        :param socket_connect_timeout: seconds to wait for a connection; defaults to
            ``socket_timeout``.
        :param local_cache: see :class:`RedisStore`.
        :param local_cache_ttl: see :class:`RedisStore`.
        :param options: more keyword arguments for the redis-py client (``ssl_ca_certs``,
            ``max_connections``, ``retry``, ...). The client does not retry by default: a
            failed call answers 503 at once, and the next request gets a fresh connection.
        """
        redis = import_redis()
        for scheme, replacement in (("valkeys://", "rediss://"), ("valkey://", "redis://")):
            if url.lower().startswith(scheme):
                url = replacement + url[len(scheme) :]
        if socket_connect_timeout is None:
            socket_connect_timeout = socket_timeout
        options.setdefault("retry", redis.retry.Retry(redis.backoff.NoBackoff(), 0))
        options.update(socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout)
        if cluster:
            client: Any = redis.cluster.RedisCluster.from_url(url, **options)
        else:
            client = redis.Redis.from_url(url, **options)
        try:
            store = cls(
                client, prefix=prefix, local_cache=local_cache, local_cache_ttl=local_cache_ttl
            )
        except BaseException:
            client.close()
            raise
        store._owns_client = True
        return store

    @property
    def client(self) -> Redis | RedisCluster:
        """The redis-py client the store sends its commands through.

        For inspection and for tests: commands sent through it bypass the store's checks, so
        anything written under the store's prefix this way is read back as the store finds it
        (a key it cannot decode is treated as absent).
        """
        client: Redis | RedisCluster = self._client
        return client

    def __repr__(self) -> str:
        return f"<RedisStore {self.describe()}>"

    def describe(self) -> str:
        """Return the server (without any password) and the key prefix."""
        client = self._client
        if self._cluster:
            nodes = ",".join(f"{n.host}:{n.port}" for n in client.get_nodes()[:3])
            where = f"redis cluster {nodes}"
        else:
            pool = client.connection_pool
            kwargs = pool.connection_kwargs
            if "path" in kwargs:
                where = f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
            elif "host" in kwargs:
                scheme = "rediss" if "ssl" in pool.connection_class.__name__.lower() else "redis"
                host, port, db = kwargs["host"], kwargs.get("port", 6379), kwargs.get("db", 0)
                where = f"{scheme}://{host}:{port}/{db}"
            else:
                where = f"redis ({type(pool).__name__})"
        cache = "" if self._cache is None else f" local_cache={self._cache.size}"
        return f"{where} prefix={self.prefix!r}{cache}"

    def close(self) -> None:
        """Close the client if :meth:`from_url` built it; a client passed in is left open.

        The local cache's own connection is closed in both cases.
        """
        if self._cache is not None:
            self._cache.close()
        if self._owns_client and not self._closed:
            self._closed = True
            self._client.close()

    # Keys and plumbing.

    def _skey(self, key: str | bytes) -> bytes:
        return self._s_prefix + (key if isinstance(key, bytes) else _b(key))

    def _ukey(self, user_id: str | bytes) -> bytes:
        return self._u_prefix + (user_id if isinstance(user_id, bytes) else _b(user_id))

    def _hkey(self, handle: str | bytes) -> bytes:
        return self._h_prefix + (handle if isinstance(handle, bytes) else _b(handle))

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        if self._cache is not None:
            # Whatever failed may have been a connection that tracked keys: trust nothing cached.
            self._cache.clear()
        return StoreUnavailable(f"Redis session store ({self.describe()}): {exc}")

    def _cache_refused(self, exc: CacheUnsupported) -> None:
        logger.error(
            "KEEPSAKE_STORE local_cache is on, but %s refused client-side caching (%s): it needs "
            "Redis 6 or later (or Valkey) with the CLIENT command allowed. Reading every session "
            "from Redis instead.",
            self.describe(),
            exc,
        )

    def _evict(self, *skeys: bytes) -> None:
        """Drop sessions this process changed outside the local cache's connection."""
        if self._cache is not None:
            self._cache.evict(skeys)

    def _scan(self, start: bytes) -> Iterator[bytes]:
        """Every key that starts with ``start``, by ``SCAN`` (never ``KEYS``), a batch at a time.

        ``start`` is built from the configured prefix, never from client input; its glob
        metacharacters are escaped so that it matches literally. ``SCAN`` sees one server's keys,
        so in a cluster every primary is scanned in turn, each with its own cursor (redis-py's
        ``RedisCluster.scan_iter`` does this when given no node, but naming each primary keeps it
        right whatever the client's default target for ``SCAN``). A key may come back twice.
        """
        pattern = _glob_escape(start) + b"*"
        if not self._cluster:
            for key in self._client.scan_iter(match=pattern, count=_SCAN_BATCH):
                yield _bytes(key)
            return
        for node in self._client.get_primaries():
            for key in self._client.scan_iter(match=pattern, count=_SCAN_BATCH, target_nodes=node):
                yield _bytes(key)

    def _pipeline(self, calls: Sequence[_Call]) -> list[Any]:
        """Run ``calls`` in order, in one round trip per server; errors come back as values.

        On one server redis-py's pipeline makes sure its scripts are loaded before it sends
        them. A cluster pipeline does not: redis-py documents scripts in cluster pipelines as
        unsupported and blocks ``evalsha`` there, but routes a plain ``EVALSHA`` command by its
        first key. So a cluster sends that command, and a call answered ``NOSCRIPT``, which did
        not run, is run again through its ``Script``, which loads it on every primary.
        """
        pipe = self._client.pipeline(transaction=False)
        for what, keys, args in calls:
            if isinstance(what, str):
                pipe.execute_command(what, *keys, *args)
            elif self._cluster:
                pipe.execute_command("EVALSHA", what.sha, len(keys), *keys, *args)
            else:
                what(keys, args, client=pipe)
        results: list[Any] = pipe.execute(raise_on_error=False)
        if self._cluster:
            for index, result in enumerate(results):
                if isinstance(result, self._noscript):
                    script, keys, args = calls[index]
                    assert not isinstance(script, str)
                    results[index] = script(keys, args)
        return results

    def _ordered(self, *batches: Sequence[_Call]) -> list[Any]:
        """Run the batches one after the other and raise the first error.

        On one server a pipeline keeps the order of its commands, so all batches share one
        round trip. A cluster pipeline runs its commands on several nodes in no set order, so
        each batch (indexes, then the session) gets its own.
        """
        if self._cluster:
            results = [r for batch in batches for r in self._pipeline(batch)]
        else:
            results = self._pipeline([call for batch in batches for call in batch])
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def _meta(self, record: SessionRecord) -> list[bytes]:
        """The metadata fields of ``record``'s hash, as field, value, ...; no data fields."""
        meta = json.dumps([record.created, record.ip, record.user_agent], separators=(",", ":"))
        fields = [
            b"h",
            _b(record.handle),
            b"m",
            meta.encode(),
            b"l",
            _num(record.last_seen),
            b"e",
            _num(record.expires_at),
            b"a",
            _num(record.absolute_expires_at),
        ]
        if record.user_id is not None:
            fields += (b"u", _b(record.user_id))
        if record.auth_time is not None:
            fields += (b"t", _num(record.auth_time))
        if record.remembered:
            fields += (b"p", b"1")
        return fields

    def _fields(self, record: SessionRecord) -> list[bytes]:
        """Every field of ``record``'s hash, metadata and data, as field, value, ..."""
        fields = self._meta(record)
        for name, value in record.data.items():
            fields += (b"d:" + _b(name), _b(value))
        return fields

    def _parse(self, key: str, raw: Mapping[Any, Any]) -> SessionRecord | _Tombstone | None:
        """Turn non-empty ``HGETALL`` output into a record or a tombstone.

        ``None`` (logged once, by :meth:`Store.log_unreadable`) if it is neither.
        """
        try:
            if not isinstance(next(iter(raw)), bytes):
                # A client made with decode_responses=True: back to bytes, the one path below.
                raw = {_b(f): _b(v) for f, v in raw.items()}
            # This runs on every request that reads its session, hence one pass and no helpers.
            data = {
                f[2:].decode("utf-8", "surrogatepass"): v.decode("utf-8", "surrogatepass")
                for f, v in raw.items()
                if f[:2] == b"d:"
            }
            created, ip, user_agent = json.loads(raw[b"m"])
            user = raw.get(b"u")
            auth_time = raw.get(b"t")
            record = SessionRecord(
                key,
                raw[b"h"].decode("utf-8", "surrogatepass"),
                data,
                None if user is None else user.decode("utf-8", "surrogatepass"),
                created,
                float(raw[b"l"]),
                float(raw[b"e"]),
                float(raw[b"a"]),
                None if auth_time is None else float(auth_time),
                ip,
                user_agent,
                b"p" in raw,
            )
            if (
                type(created) not in _NUMBERS
                or type(ip) not in _OPTIONAL_STR
                or type(user_agent) not in _OPTIONAL_STR
            ):
                raise TypeError("metadata of the wrong type")
        except KeyError as exc:
            # A tombstone has neither handle nor metadata; it is tried only here, off the path
            # of a live session.
            if b"h" not in raw and b"r" in raw:
                return self._tombstone(key, raw)
            self._unreadable(key, raw, f"no field {_s(exc.args[0])!r}")
            return None
        except (ValueError, TypeError, AttributeError) as exc:
            self._unreadable(key, raw, exc)
            return None
        return record

    def _tombstone(self, key: str, raw: Mapping[bytes, bytes]) -> _Tombstone | None:
        try:
            return _Tombstone(raw[b"r"], float(raw[b"x"]))
        except (KeyError, ValueError) as exc:
            self._unreadable(key, raw, f"a tombstone without a valid expiry ({exc})")
            return None

    def _parse_versioned(
        self, key: str, raw: Mapping[Any, Any]
    ) -> tuple[SessionRecord, int] | _Tombstone | None:
        """:meth:`_parse`, and a record's version (``0`` before its first delta)."""
        parsed = self._parse(key, raw)
        if not isinstance(parsed, SessionRecord):
            return parsed
        version = raw.get(b"v", raw.get("v", 0))
        try:
            return parsed, int(version)
        except ValueError as exc:
            self._unreadable(key, raw, exc)
            return None

    def _cached_form(
        self, key: str, raw: Mapping[Any, Any], now: float
    ) -> tuple[SessionRecord, int] | Rotated | None:
        """What the local cache keeps of ``HGETALL`` output (see :meth:`LocalCache.load`)."""
        parsed = self._parse_versioned(key, raw)
        if isinstance(parsed, _Tombstone):
            # Never cached: only a late request that still carries an old token reads one.
            return ROTATED if parsed.until > now else None
        return parsed

    def _unreadable(self, key: str, raw: Mapping[Any, Any], reason: object) -> None:
        handle = raw.get(b"h")
        self.log_unreadable(
            key, reason, handle.decode("utf-8", "replace") if isinstance(handle, bytes) else None
        )

    @staticmethod
    def _touch_args(touch: Touch | None, now: float) -> Sequence[Any]:
        """The touch part of the delta script's arguments (see ``scripts.APPLY``)."""
        if touch is None:
            return NO_TOUCH
        return (
            _num(touch.last_seen),
            _num(touch.expires_at),
            _ttl_ms(touch.expires_at, now),
            b"" if touch.absolute_expires_at is None else _num(touch.absolute_expires_at),
            b"1" if touch.stale else b"",
        )

    @staticmethod
    def _delta(changed: Mapping[str, str], deleted: Collection[str]) -> list[Any]:
        """A delta as script arguments: 2n, n field/value pairs, the fields to delete."""
        args: list[Any] = [2 * len(changed)]
        for name, value in changed.items():
            args += (b"d:" + _b(name), _b(value))
        args.extend(b"d:" + _b(name) for name in deleted)
        return args

    @staticmethod
    def _grace(grace: float, now: float) -> tuple[bytes, bytes]:
        """A rename's tombstone as script arguments: its TTL in ms (``0``: none), its end."""
        if grace > 0:
            return str(math.ceil(grace * 1000)).encode(), _num(now + grace)
        return b"0", b"0"

    def _members(self, index: bytes) -> list[tuple[bytes, float]]:
        try:
            pairs = self._client.zrange(index, 0, -1, withscores=True)
        except self._response_error:
            # Not a sorted set: someone wrote over the index. It is rebuilt as sessions change.
            return []
        return [
            (member if isinstance(member, bytes) else _b(member), score) for member, score in pairs
        ]

    def _unindex(self, key: bytes, handle: Any, user: Any) -> None:
        calls: list[_Call] = []
        if handle is not None:
            calls.append(("ZREM", [self._hkey(handle)], [key]))
        if user is not None:
            calls.append(("ZREM", [self._ukey(user)], [key]))
        if calls:
            self._pipeline(calls)

    def _index_calls(self, record: SessionRecord, now: float) -> list[_Call]:
        key = _b(record.key)
        ttl = _ttl_ms(max(record.absolute_expires_at, record.expires_at), now)
        calls: list[_Call] = [
            (self._scripts.index_add, [self._hkey(record.handle)], [_num(now), key, ttl, b"1"])
        ]
        if record.user_id is not None:
            calls.append(
                (self._scripts.index_add, [self._ukey(record.user_id)], [_num(now), key, ttl, b"0"])
            )
        return calls

    def _handle_taken(
        self, members: Iterable[Any], handle: str, now: float, mine: set[bytes]
    ) -> bool:
        """Whether a live record other than ``mine`` holds ``handle``."""
        others = [m if isinstance(m, bytes) else _b(m) for m in members]
        others = [m for m in others if m not in mine]
        if not others:
            return False
        calls: list[_Call] = [("HMGET", [self._skey(m)], [b"e", b"h"]) for m in others]
        for result in self._pipeline(calls):
            if isinstance(result, Exception) or result[0] is None or result[1] is None:
                continue
            try:
                live = float(result[0]) > now
            except ValueError:
                continue
            if live and _s(result[1]) == handle:
                return True
        return False

    # The contract.

    def create(self, record: SessionRecord) -> None:
        """Store a new record; see :meth:`Store.create`.

        One script, on a single server and in a cluster alike: the index entries, the check
        that no other live session holds the handle, then the record (refused if a live one has
        the key). In a cluster the indexes live on other nodes, so their entries are written
        first, in a round trip of their own, and the script gets the session key alone; a handle
        collision (which 96 random bits make impossible in practice) is then detected from the
        handle index afterwards, and the record just stored under its unguessable new key is
        deleted again before ``ValueError``.
        """
        now = record.created
        key_b = _b(record.key)
        skey = self._skey(key_b)
        args = self._create_args(record, now, self._fields(record))
        try:
            if self._cluster:
                members = self._ordered(self._index_calls(record, now))[0]
                result = self._scripts.create([skey], args)
                if result == 1 and self._handle_taken(members, record.handle, now, {key_b}):
                    self._client.delete(skey)
                    result = -2
            else:
                result = self._scripts.create(self._create_keys(record), args)
        except self._error as exc:
            raise self._unavailable(exc) from exc
        if result == 0:
            raise ValueError(_DUPLICATE_KEY)
        if result == -2:
            raise ValueError(_DUPLICATE_HANDLE)

    def _create_keys(self, record: SessionRecord) -> list[bytes]:
        """The keys of the create script on a single server: the session and its indexes."""
        keys = [self._skey(record.key), self._hkey(record.handle)]
        if record.user_id is not None:
            keys.append(self._ukey(record.user_id))
        return keys

    def _create_args(self, record: SessionRecord, now: float, fields: list[bytes]) -> list[Any]:
        """The arguments of the create script (see ``CREATE``), ``fields`` last."""
        return [
            _num(now),
            _ttl_ms(record.expires_at, now),
            _ttl_ms(max(record.absolute_expires_at, record.expires_at), now),
            self._s_prefix,
            _b(record.key),
            _b(record.handle),
            *fields,
        ]

    def load(self, key: str, now: float) -> SessionRecord | Rotated | None:
        """Return the live record under ``key`` with one ``HGETALL``; see :meth:`Store.load`.

        The same ``HGETALL`` finds a rotation tombstone (:data:`ROTATED`). A key that holds
        neither (garbage written by hand, a truncated record) is logged once on
        ``flask_keepsake.security`` and treated as absent. With a local cache, a record this
        process already holds is returned without a round trip.
        """
        skey = self._s_prefix + _b(key)
        cache = self._cache
        try:
            if cache is not None and cache.supported:
                try:
                    return cache.load(skey, now, lambda raw: self._cached_form(key, raw, now))
                except CacheUnsupported as exc:
                    self._cache_refused(exc)
            raw = self._client.hgetall(skey)
        except self._response_error as exc:
            if str(exc).startswith("WRONGTYPE"):
                self.log_unreadable(key, "not a hash")
                return None
            raise self._unavailable(exc) from exc
        except self._error as exc:
            raise self._unavailable(exc) from exc
        except UnicodeDecodeError as exc:
            # Only a client made with decode_responses=True decodes, and fails on non-UTF-8.
            self.log_unreadable(key, exc)
            return None
        if not raw:
            return None
        parsed = self._parse(key, raw)
        if isinstance(parsed, SessionRecord):
            return parsed if parsed.expires_at > now else None
        if parsed is None or parsed.until <= now:
            return None
        return ROTATED

    def apply(
        self,
        key: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        now: float,
        touch: Touch | None = None,
    ) -> Outcome:
        """Apply a per-key delta with one Lua script; see :meth:`Store.apply`.

        The script checks that the record is live and changes only the named fields, in one
        atomic step. A key named in both ``changed`` and ``deleted`` ends up deleted. On a
        single server the same script follows a tombstone to the record it names; in a cluster
        it answers the key the tombstone names, and each further hop is one more round trip.
        """
        return self._write(key, changed, deleted, now, touch, FOLLOW)

    def touch(self, key: str, touch: Touch, now: float) -> Outcome:
        """Apply ``touch`` (and the TTL it implies) with one script; see :meth:`Store.touch`."""
        return self._write(key, {}, (), now, touch, TOUCH)

    def _write(
        self,
        key: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        now: float,
        touch: Touch | None,
        mode: bytes,
    ) -> Outcome:
        delta = self._delta(changed, deleted)
        head = [*self._touch_args(touch, now), mode, self._s_prefix, self._reach]
        args = [_num(now), *head, *delta]
        skey = self._s_prefix + _b(key)
        try:
            result = self._run_apply(skey, args, changed, deleted, touch)
            if not isinstance(result, list):
                return Outcome.DONE if result > 0 else Outcome.GONE
            kind = _bytes(result[0])
            if kind == FOLLOWED:
                return Outcome.FOLLOWED
            if kind == RAISE_INDEXES:
                # A cluster, after a touch that moved the absolute expiry: the indexes are on
                # other nodes, and must not expire before the session.
                handle, user, ttl = result[2], result[3], result[4]
                calls: list[_Call] = []
                if handle is not None:
                    calls.append((self._scripts.raise_ttl, [self._hkey(_bytes(handle))], [ttl]))
                if user is not None:
                    calls.append((self._scripts.raise_ttl, [self._ukey(_bytes(user))], [ttl]))
                self._ordered(calls)
                return Outcome.DONE
            # A cluster: the record the tombstone names may be on another node. Tombstones
            # never change, so following it now is what following it in the script would be.
            args = [_num(now), *NO_TOUCH, FOLLOW, self._s_prefix, REACH_ONE, *delta]
            for _ in range(MAX_FOLLOW):
                result = self._scripts.apply([_bytes(result[1])], args)
                if not isinstance(result, list):
                    return Outcome.FOLLOWED if result > 0 else Outcome.GONE
            return Outcome.GONE
        except self._error as exc:
            raise self._unavailable(exc) from exc

    def _run_apply(
        self,
        skey: bytes,
        args: Sequence[Any],
        changed: Mapping[str, str],
        deleted: Collection[str],
        touch: Touch | None,
    ) -> Any:
        """Run the delta script on ``skey``, through the local cache's connection if it has one."""
        cache = self._cache
        if cache is not None and cache.supported:
            try:
                script = ("EVALSHA", self._scripts.apply.sha, 1, skey, *args)
                result = cache.apply(skey, script, changed, deleted, touch)
                if not isinstance(result, self._noscript):
                    if isinstance(result, Exception):
                        raise result
                    return result
                # The server lost the script, so nothing ran (and the cache dropped the entry):
                # run it through redis-py's Script, which loads it, outside the cache.
            except CacheUnsupported as exc:
                # Refused while connecting, before anything was sent: apply it uncached.
                self._cache_refused(exc)
        return self._scripts.apply([skey], args)

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

        On one server the whole rename is one script, atomic and one round trip: the checks
        (old record live, new key and handle free), the new index entries, the new record (the
        old record's data as stored, with the delta), the old index entries, and the tombstone
        (or the old key's removal). In a cluster the two keys live in different slots; the
        steps, and how no write to the old record is lost between them, are in the module
        docstring.
        """
        old_b, new_b = _b(old_key), _b(record.key)
        changed = {} if changed is None else changed
        if self._cluster and old_b != new_b:
            return self._rename_across_slots(old_b, new_b, record, changed, deleted, grace, now)
        old_skey, new_skey = self._skey(old_b), self._skey(new_b)
        keys = [old_skey, new_skey]
        if not self._cluster:
            keys.append(self._hkey(record.handle))
            if record.user_id is not None:
                keys.append(self._ukey(record.user_id))
        meta = self._meta(record)
        args: list[Any] = [
            _num(now),
            _ttl_ms(record.expires_at, now),
            _ttl_ms(max(record.absolute_expires_at, record.expires_at), now),
            self._s_prefix,
            self._h_prefix,
            self._u_prefix,
            old_b,
            new_b,
            _b(record.handle),
            *(self._grace(grace, now) if old_b != new_b else (b"0", b"0")),
            len(meta),
            *meta,
            *self._delta(changed, deleted),
        ]
        try:
            if self._cluster:
                # One key, so one slot for the script; the index entries and the handle check,
                # on other nodes, go first.
                members = self._ordered(self._index_calls(record, now))[0]
                if self._handle_taken(members, record.handle, now, {old_b}):
                    raise ValueError(_DUPLICATE_HANDLE)
            result = self._scripts.rename(keys, args)
        except self._error as exc:
            raise self._unavailable(exc) from exc
        finally:
            self._evict(old_skey, new_skey)
        status = result[0]
        if status == -2:
            raise ValueError(_DUPLICATE_HANDLE)
        if status == -1:
            raise ValueError(_DUPLICATE_KEY)
        return Outcome.DONE if status == 1 else Outcome.ROTATED if status == 2 else Outcome.GONE

    def _rename_across_slots(
        self,
        old_b: bytes,
        new_b: bytes,
        record: SessionRecord,
        changed: Mapping[str, str],
        deleted: Collection[str],
        grace: float,
        now: float,
    ) -> Outcome:
        """A rename in a cluster: steps 1 to 5 of the module docstring."""
        old_skey, new_skey = self._skey(old_b), self._skey(new_b)
        ours = {b"d:" + _b(name): _b(value) for name, value in changed.items()}
        drop = {b"d:" + _b(name) for name in deleted}
        grace_ms, until = self._grace(grace, now)
        try:
            # 1. The old record as it is now.
            try:
                raw = self._client.hgetall(old_skey)
            except self._response_error as exc:
                if not str(exc).startswith("WRONGTYPE"):
                    raise
                self.log_unreadable(_s(old_b), "not a hash")
                return Outcome.GONE
            if not raw:
                return Outcome.GONE
            parsed = self._parse(_s(old_b), raw)
            if isinstance(parsed, _Tombstone):
                return Outcome.ROTATED if parsed.until > now else Outcome.GONE
            if parsed is None or parsed.expires_at <= now:
                return Outcome.GONE
            fields = _bytes_hash(raw)
            version = fields.get(b"v", b"0")
            base = _data_fields(fields)
            # 2. Index entries, handle check, the new record. A record that keeps the old one's
            # handle (a regenerate) needs no check: the old record holds it, so only another
            # rename of the same record can, and the retirement below settles which one wins.
            members = self._ordered(self._index_calls(record, now))[0]
            if record.handle != parsed.handle and self._handle_taken(
                members, record.handle, now, {old_b, new_b}
            ):
                raise ValueError(_DUPLICATE_HANDLE)
            data = {f: v for f, v in (base | ours).items() if f not in drop}
            args = self._create_args(record, now, [*self._meta(record), *_flat(data)])
            if self._scripts.create([new_skey], args) == 0:
                raise ValueError(_DUPLICATE_KEY)
            for _ in range(RENAME_ATTEMPTS):
                # 3. Retire the old record if nothing changed it since it was read.
                result = self._scripts.retire(
                    [old_skey], [_num(now), version, new_b, grace_ms, until]
                )
                status = result[0]
                if status == 1:
                    self._unindex(old_b, result[1], result[2])
                    return Outcome.DONE
                if status != -1:
                    # 5. Logged out or revoked meanwhile (0), or another rename won (2).
                    self._discard(new_b, record)
                    return Outcome.ROTATED if status == 2 else Outcome.GONE
                # 4. Written meanwhile: carry over what that write changed, then try again. If
                # the new record was revoked meanwhile (revoke_all read its index entry), this
                # writes nothing and the rename still ends with the session revoked.
                current = _bytes_hash(result[1])
                version = current.get(b"v", b"0")
                now_data = _data_fields(current)
                put = {
                    f: v
                    for f, v in now_data.items()
                    if f not in ours and f not in drop and base.get(f) != v
                }
                gone = [f for f in base if f not in now_data and f not in ours and f not in drop]
                base = now_data
                if put or gone:
                    delta = [2 * len(put), *_flat(put), *gone]
                    args = [_num(now), *NO_TOUCH, FOLLOW, self._s_prefix, REACH_ONE, *delta]
                    self._scripts.apply([new_skey], args)
            self._discard(new_b, record)
        except self._error as exc:
            raise self._unavailable(exc) from exc
        raise StoreUnavailable(
            f"Redis session store ({self.describe()}): the session changed during each of "
            f"{RENAME_ATTEMPTS} attempts to rename it; it was left as it is, with every change"
        )

    def _discard(self, key: bytes, record: SessionRecord) -> None:
        """Delete the record a cluster rename created, and its index entries: the rename lost."""
        self._client.delete(self._skey(key))
        self._unindex(key, record.handle, record.user_id)

    def delete(self, key: str) -> bool:
        """Delete the record under ``key``, live or expired; see :meth:`Store.delete`."""
        key_b = _b(key)
        try:
            if self._cluster:
                result = self._scripts.delete([self._skey(key_b)], [])
            else:
                # One round trip: the script removes the index entries too.
                args = [self._h_prefix, self._u_prefix, key_b]
                result = self._scripts.delete([self._skey(key_b)], args)
            self._evict(self._skey(key_b))
            if result[0] == 0:
                return False
            if self._cluster:
                self._unindex(key_b, result[1], result[2])
        except self._error as exc:
            raise self._unavailable(exc) from exc
        return True

    def list_user(self, user_id: str, now: float) -> list[SessionRecord]:
        """Return the user's live records, oldest first; see :meth:`Store.list_user`.

        Two round trips: the user's index, then every indexed session. Entries whose session is
        gone (for longer than :data:`INDEX_GRACE`) or belongs to someone else are removed.
        """
        ukey = self._ukey(user_id)
        try:
            members = self._members(ukey)
            if not members:
                return []
            raws = self._pipeline([("HGETALL", [self._skey(m)], []) for m, _ in members])
            records: list[SessionRecord] = []
            stale: list[bytes] = []
            for (member, score), raw in zip(members, raws, strict=True):
                if isinstance(raw, Exception):
                    if not isinstance(raw, self._response_error):
                        raise raw
                    stale.append(member)
                    continue
                if not raw:
                    if score < now - INDEX_GRACE:
                        stale.append(member)
                    continue
                record = self._parse(_s(member), raw)
                if isinstance(record, _Tombstone):
                    # Renamed away: the rename removes this entry (in a cluster, a moment later).
                    stale.append(member)
                    continue
                if record is None:
                    continue
                if record.user_id != user_id:
                    stale.append(member)
                elif record.expires_at > now:
                    records.append(record)
            if stale:
                self._client.zrem(ukey, *stale)
        except self._error as exc:
            raise self._unavailable(exc) from exc
        records.sort(key=lambda record: (record.created, record.key))
        return records

    def delete_user(self, user_id: str, now: float, *, except_key: str | None = None) -> int:
        """Delete the user's records except ``except_key``; see :meth:`Store.delete_user`.

        Each session is deleted by a script that first checks it is bound to ``user_id``, so a
        stale index entry never deletes someone else's session. A session renamed after the
        index was read (a regenerate racing a "log out everywhere") is found through its
        tombstone, so it is deleted too.
        """
        ukey = self._ukey(user_id)
        keep = None if except_key is None else _b(except_key)
        args = [_num(now), b"", b"1", _b(user_id), b"0"]
        live = 0

        def settle(member: bytes, score: float, result: Any) -> tuple[bool, bytes | None]:
            nonlocal live
            status = result[0]
            if status in (1, 2):
                live += status == 2
                if result[1] is not None:
                    cleanup.append(("ZREM", [self._hkey(result[1])], [member]))
                return True, None
            if status == 3:
                successor = _bytes(result[1])
                return True, None if successor == keep else successor
            return status in (-1, -3) or (status == 0 and score < now - INDEX_GRACE), None

        cleanup: list[_Call] = []
        try:
            pending = [(m, s) for m, s in self._members(ukey) if m != keep]
            self._delete_indexed(ukey, pending, args, now, settle, cleanup)
        except self._error as exc:
            raise self._unavailable(exc) from exc
        return live

    def delete_handle(
        self, handle: str, now: float, *, user_id: str | None = None
    ) -> tuple[str, str | None] | None:
        """Delete the live record named ``handle``; see :meth:`Store.delete_handle`.

        As in :meth:`delete_user`, a session renamed after the index was read is found through
        its tombstone (and deleted if it still has this handle).
        """
        hkey = self._hkey(handle)
        args = [
            _num(now),
            _b(handle),
            b"0" if user_id is None else b"1",
            b"" if user_id is None else _b(user_id),
            b"1",
        ]
        found: bytes | None = None
        owner: bytes | None = None

        def settle(member: bytes, score: float, result: Any) -> tuple[bool, bytes | None]:
            nonlocal found, owner
            status = result[0]
            if status == 2:
                if found is None:
                    found, owner = member, result[2]
                if result[2] is not None:
                    cleanup.append(("ZREM", [self._ukey(result[2])], [member]))
                return True, None
            if status == 3:
                return True, _bytes(result[1])
            return status in (-1, -2) or (status == 0 and score < now - INDEX_GRACE), None

        cleanup: list[_Call] = []
        try:
            self._delete_indexed(hkey, self._members(hkey), args, now, settle, cleanup)
        except self._error as exc:
            raise self._unavailable(exc) from exc
        if found is None:
            return None
        return _s(found), None if owner is None else _s(owner)

    def _delete_indexed(
        self,
        index: bytes,
        pending: list[tuple[bytes, float]],
        args: list[bytes],
        now: float,
        settle: Callable[[bytes, float, Any], tuple[bool, bytes | None]],
        cleanup: list[_Call],
    ) -> None:
        """Run ``delete_if`` on every session an index names, following tombstones.

        ``settle`` reads one script result: whether to drop the member from ``index``, and the
        successor to try next when the session was renamed after the index was read. It may add
        calls to ``cleanup``, which goes out with the index's own clean-up in one pipeline.
        """
        remove: list[bytes] = []
        for _ in range(MAX_FOLLOW + 1):
            if not pending:
                break
            results = self._pipeline(
                [(self._scripts.delete_if, [self._skey(m)], args) for m, _ in pending]
            )
            self._evict(*(self._skey(m) for m, _ in pending))
            renamed: list[tuple[bytes, float]] = []
            for (member, score), result in zip(pending, results, strict=True):
                if isinstance(result, Exception):
                    raise result
                drop, successor = settle(member, score, result)
                if drop:
                    remove.append(member)
                if successor is not None:
                    renamed.append((successor, now))
            pending = renamed
        if remove:
            cleanup.append(("ZREM", [index], remove))
        if cleanup:
            self._pipeline(cleanup)

    def purge_expired(self, now: float, batch_size: int = 1000) -> int:
        """Return 0: Redis removes expired records, tombstones and markers itself, by their TTL."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        return 0

    def count(self, now: float) -> int:
        """Return the number of live records; see :meth:`Store.count`.

        This walks every session key with ``SCAN`` (never ``KEYS``), a batch at a time, so it
        costs time in proportion to the number of sessions: it is for ``stats``, not requests.
        """
        live = 0
        try:
            for chunk in _chunks(self._scan(self._s_prefix), _SCAN_BATCH):
                for result in self._pipeline([("HGET", [k], [b"e"]) for k in chunk]):
                    if isinstance(result, Exception) or result is None:
                        continue
                    try:
                        live += float(result) > now
                    except ValueError:
                        continue
        except self._error as exc:
            raise self._unavailable(exc) from exc
        return live

    def count_expired(self, now: float) -> int:
        """Return 0: expired records are removed by Redis as their TTL runs out."""
        return 0

    def user_counts(self, now: float, limit: int) -> list[tuple[str, int]]:
        """Return the users with the most live records; see :meth:`Store.user_counts`.

        Walks the per-user indexes with ``SCAN`` (never ``KEYS``), every primary of a cluster,
        and checks each indexed session as :meth:`list_user` does: an entry counts only if its
        session exists, is live and is bound to that user. Costs time in proportion to the
        number of sessions: it is for ``stats``, not requests. Writes nothing.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        counts: dict[bytes, int] = {}
        try:
            for chunk in _chunks(self._scan(self._u_prefix), _SCAN_BATCH):
                # SCAN may return a key twice; a user is counted once.
                ukeys = [k for k in dict.fromkeys(chunk) if k[len(self._u_prefix) :] not in counts]
                ranges = self._pipeline([("ZRANGE", [k], [0, -1]) for k in ukeys])
                entries: list[tuple[bytes, bytes]] = []
                for ukey, members in zip(ukeys, ranges, strict=True):
                    if isinstance(members, Exception):
                        if not isinstance(members, self._response_error):
                            raise members
                        continue  # not a sorted set: someone wrote over the index
                    user = ukey[len(self._u_prefix) :]
                    counts[user] = 0
                    entries += ((user, _bytes(m)) for m in members)
                for part in _chunks(entries, _SCAN_BATCH):
                    calls: list[_Call] = [("HMGET", [self._skey(m)], [b"e", b"u"]) for _, m in part]
                    for (user, _), result in zip(part, self._pipeline(calls), strict=True):
                        if isinstance(result, Exception):
                            if not isinstance(result, self._response_error):
                                raise result
                            continue
                        expires, owner = result
                        if expires is None or owner is None or _bytes(owner) != user:
                            continue
                        try:
                            counts[user] += float(expires) > now
                        except ValueError:
                            continue
        except self._error as exc:
            raise self._unavailable(exc) from exc
        live = [(_s(user), n) for user, n in counts.items() if n]
        return heapq.nsmallest(limit, live, key=lambda pair: (-pair[1], pair[0]))

    def put_marker(
        self, name: str, value: str, expires_at: float, now: float, *, replace: bool = True
    ) -> bool:
        """Store a marker under its own prefix with one script; see :meth:`Store.put_marker`.

        The script compares a live marker's stored expiry with ``now`` and writes in the same
        step, so of several concurrent claims (``replace`` False) exactly one wins, and an
        expired marker may be claimed again even before Redis has dropped it. The key's TTL
        (``expires_at - now``) only reclaims memory.
        """
        args: list[Any] = [
            _num(now),
            _num(expires_at),
            _ttl_ms(expires_at, now),
            _b(value),
            b"1" if replace else b"0",
        ]
        try:
            return bool(self._scripts.marker([self._m_prefix + _b(name)], args) == 1)
        except self._error as exc:
            raise self._unavailable(exc) from exc

    def get_marker(self, name: str, now: float) -> str | None:
        """Return a live marker's value with one ``HMGET``; see :meth:`Store.get_marker`."""
        try:
            value, until = self._client.hmget(self._m_prefix + _b(name), [b"v", b"x"])
        except self._response_error as exc:
            if str(exc).startswith("WRONGTYPE"):
                return None  # written over by hand: no marker of ours
            raise self._unavailable(exc) from exc
        except self._error as exc:
            raise self._unavailable(exc) from exc
        if value is None or until is None:
            return None
        try:
            if float(until) <= now:
                return None
        except ValueError:
            return None
        return _s(value)

    def delete_all(self) -> int:
        """Delete every record, tombstone, marker and index of this store; see
        :meth:`Store.delete_all`.

        Walks the keys under the store's prefix with ``SCAN`` (never ``KEYS``), every primary of
        a cluster, and unlinks them in pipelined batches, session keys (each by a script that
        says whether it held a record or a tombstone) before the index and marker keys of the
        same batch. Keys under the prefix that are none of these, and keys of other prefixes,
        are left alone. Returns how many session records were unlinked.
        """
        deleted = 0
        if self._cache is not None:
            self._cache.clear()
        others = (self._u_prefix, self._h_prefix, self._m_prefix)
        try:
            for chunk in _chunks(self._scan(self._prefix), _SCAN_BATCH):
                sessions: list[_Call] = [
                    (self._scripts.unlink, [k], []) for k in chunk if k.startswith(self._s_prefix)
                ]
                rest: list[_Call] = [("UNLINK", [k], []) for k in chunk if k.startswith(others)]
                for calls in (sessions, rest):
                    if not calls:
                        continue
                    results = self._pipeline(calls)
                    for result in results:
                        if isinstance(result, Exception):
                            raise result
                    if calls is sessions:
                        deleted += sum(int(result) for result in results)
        except self._error as exc:
            raise self._unavailable(exc) from exc
        return deleted
