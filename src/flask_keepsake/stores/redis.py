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

In a cluster every script touches exactly one key, so nothing needs a cross-slot transaction. On
a single server several scripts do more in one step, with keys built from the prefix and what
the script reads: a create also writes the index entries and checks the handle; a rename reads
the old session, writes the new one with the delta applied, moves the index entries and leaves
the tombstone; a delta that meets a tombstone follows it to the session it names, and one that
moves the absolute expiry raises the TTL of the session's indexes; a delete also removes the
session's index entries. The session hash is the truth and the indexes are hints checked against
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

import hashlib
import heapq
import itertools
import json
import logging
import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ..errors import StoreUnavailable
from .base import MAX_FOLLOW, ROTATED, AdminStore, Outcome, Rotated, SessionRecord, Touch
from .redis_cache import DEFAULT_MAX_AGE, CacheUnsupported, LocalCache

if TYPE_CHECKING:
    from redis import Redis
    from redis.cluster import RedisCluster

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

_LIVE = """
local function live(key, now)
  local e = redis.pcall('HGET', key, 'e')
  if type(e) ~= 'string' then return false end
  e = tonumber(e)
  return e ~= nil and e > now
end
-- The key (without the prefix) that a live rotation tombstone under key names, or false.
local function successor(key, now)
  local r = redis.pcall('HMGET', key, 'r', 'x')
  if r['err'] or not r[1] then return false end
  local x = tonumber(r[2])
  if x == nil or x <= now then return false end
  return r[1]
end
local function hset(key, first, last)
  for i = first, last, 1000 do
    redis.call('HSET', key, unpack(ARGV, i, math.min(i + 999, last)))
  end
end
-- Write a record from ARGV[first..] under key, replacing what is there, with a TTL of ttl_ms.
local function put(key, first, ttl)
  redis.call('DEL', key)
  hset(key, first, #ARGV)
  redis.call('PEXPIRE', key, ttl)
end
-- Replace the session under key by a tombstone naming new until deadline, with a TTL of
-- grace_ms, or, with grace_ms '0', delete it.
local function retire(key, new, grace_ms, deadline)
  redis.call('DEL', key)
  if grace_ms ~= '0' then
    redis.call('HSET', key, 'r', new, 'x', deadline)
    redis.call('PEXPIRE', key, grace_ms)
  end
end
"""

# KEYS: session. ARGV: now, ttl_ms, field, value, ...  Returns 1, or 0 if a live record exists.
_CREATE = (
    _LIVE
    + """
if live(KEYS[1], tonumber(ARGV[1])) then return 0 end
put(KEYS[1], 3, ARGV[2])
return 1
"""
)

# KEYS: session. ARGV: now, last_seen, expires_at, ttl_ms ('' x3: no touch), absolute expiry
# ('': keep it), '1' to drop the auth time, what to do with a tombstone ('touch': nothing,
# 'follow': apply the data delta to the record it names), session prefix, reach ('all' on a
# single server: keys built from the prefix may be used; 'one' in a cluster, where they may be
# on other nodes), 2n, n field/value pairs, fields to delete...
# Returns, when written to KEYS[1], the record's new version (1 or more), or, in reach 'one'
# after a touch that moved the absolute expiry, {'indexes', version, handle, user, ttl_ms}: the
# caller raises the TTL of those indexes, which must outlive the session. Returns 0, writing
# nothing, if there is no live record (nor a live one at the end of at most MAX_FOLLOW
# tombstones). For a tombstone: {'followed', ''} writing nothing ('touch'), {'followed', key
# written} after applying the data delta, not the touch ('follow', reach 'all'), or {'renamed',
# key it names} writing nothing ('follow', reach 'one').
_APPLY = (
    _LIVE
    + f"local MAX_FOLLOW = {MAX_FOLLOW}\n"
    + """
local function raise_ttl(key, ttl)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[10])
local function patch(key)
  if n > 0 then hset(key, 11, 10 + n) end
  for i = 11 + n, #ARGV, 1000 do
    redis.call('HDEL', key, unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
  return redis.call('HINCRBY', key, 'v', 1)
end
local key = KEYS[1]
if live(key, now) then
  if ARGV[2] == '' then return patch(key) end
  redis.call('HSET', key, 'l', ARGV[2], 'e', ARGV[3])
  if ARGV[6] == '1' then redis.call('HDEL', key, 't') end
  redis.call('PEXPIRE', key, ARGV[4])
  if ARGV[5] == '' then return patch(key) end
  redis.call('HSET', key, 'a', ARGV[5])
  local version = patch(key)
  -- The user and handle indexes must live as long as the session may.
  local ttl = math.ceil((math.max(tonumber(ARGV[5]), tonumber(ARGV[3])) - now) * 1000)
  local r = redis.call('HMGET', key, 'h', 'u')
  if ARGV[9] == 'one' then return {'indexes', version, r[1], r[2], ttl} end
  local prefix = string.sub(ARGV[8], 1, -3)
  if r[1] then raise_ttl(prefix .. 'h:' .. r[1], ttl) end
  if r[2] then raise_ttl(prefix .. 'u:' .. r[2], ttl) end
  return version
end
for _ = 1, MAX_FOLLOW do
  local new = successor(key, now)
  if not new then return 0 end
  if ARGV[7] == 'touch' then return {'followed', ''} end
  key = ARGV[8] .. new
  if ARGV[9] == 'one' then return {'renamed', key} end
  if live(key, now) then
    patch(key)
    return {'followed', key}
  end
end
return 0
"""
)

# KEYS: index. ARGV: ttl_ms. Raises the key's TTL to ttl_ms if it is shorter.
_RAISE_TTL = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 0
"""

# KEYS: session. ARGV, on a single server only: handle index prefix, user index prefix, member.
# Returns {0} if absent or a rotation tombstone (which is not a record, and is left alone), else
# {1, handle, user} after deleting it (and, given ARGV, its entries in the handle and user
# indexes, in the same step; a cluster, where those keys may live on other nodes, passes no ARGV
# and removes them in a second round trip).
_DELETE = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return {0} end
local h, u = false, false
if t == 'hash' then
  local r = redis.call('HMGET', KEYS[1], 'h', 'u', 'r')
  if not r[1] and r[3] then return {0} end
  h, u = r[1], r[2]
end
redis.call('DEL', KEYS[1])
if #ARGV == 3 then
  if h then redis.pcall('ZREM', ARGV[1] .. h, ARGV[3]) end
  if u then redis.pcall('ZREM', ARGV[2] .. u, ARGV[3]) end
end
return {1, h, u}
"""

# KEYS: session. ARGV: now, handle ('' for any), '1' to match the user in ARGV[4], user,
# '1' to delete only a live record. Returns {status, handle, user}; status: 2 deleted a live
# record, 1 deleted an expired one, 0 absent, -1 not a session hash, -2 another handle, -3
# another user, -4 expired and kept; or {3, key} for a live tombstone, which is kept, and the
# key (without the prefix) it names.
_DELETE_IF = (
    _LIVE
    + """
local r = redis.pcall('HMGET', KEYS[1], 'e', 'h', 'u')
if r['err'] then return {-1} end
local e = tonumber(r[1])
if not r[1] and not r[2] then
  local new = successor(KEYS[1], tonumber(ARGV[1]))
  if new then return {3, new} end
  return {0}
end
if ARGV[2] ~= '' and r[2] ~= ARGV[2] then return {-2, r[2], r[3]} end
if ARGV[3] == '1' and r[3] ~= ARGV[4] then return {-3, r[2], r[3]} end
local is_live = e ~= nil and e > tonumber(ARGV[1])
if ARGV[5] == '1' and not is_live then return {-4, r[2], r[3]} end
redis.call('DEL', KEYS[1])
if is_live then return {2, r[2], r[3]} end
return {1, r[2], r[3]}
"""
)

# KEYS: session. Unlinks it; returns 1 if it held a record (anything but a rotation tombstone,
# so that delete_all counts records only), else 0.
_UNLINK = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return 0 end
local record = 1
if t == 'hash' then
  local r = redis.call('HMGET', KEYS[1], 'h', 'r')
  if not r[1] and r[2] then record = 0 end
end
redis.call('UNLINK', KEYS[1])
return record
"""

# Helpers: add an index entry (score now, TTL raised to ttl_ms; any script), and whether a live
# session other than mine1/mine2 holds the handle, read from the handle index (single server
# only: its members are session keys under s_prefix, which a cluster could not reach from here).
_INDEXES = """
local function index_add(key, member, now, ttl)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'zset' and t ~= 'none' then redis.call('DEL', key) end
  redis.call('ZADD', key, now, member)
  if redis.call('PTTL', key) < tonumber(ttl) then redis.call('PEXPIRE', key, ttl) end
end
local function handle_taken(index, s_prefix, handle, now, mine1, mine2)
  for _, m in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    if m ~= mine1 and m ~= mine2 then
      local r = redis.pcall('HMGET', s_prefix .. m, 'e', 'h')
      if not r['err'] and r[1] and r[2] == handle then
        local e = tonumber(r[1])
        if e and e > now then return true end
      end
    end
  end
  return false
end
"""

# A create on a single server, in one step: the index entries, the handle check, the record.
# KEYS: session, handle index, [user index]. ARGV: now, ttl_ms, index ttl_ms, session prefix,
# member, handle, then field, value, ... Returns 1, 0 if a live record has the key, -2 if another
# live session holds the handle (in both cases only the index entries, which are hints, exist).
_CREATE_ONE = (
    _LIVE
    + _INDEXES
    + """
local now = tonumber(ARGV[1])
index_add(KEYS[2], ARGV[5], ARGV[1], ARGV[3])
if KEYS[3] then index_add(KEYS[3], ARGV[5], ARGV[1], ARGV[3]) end
if handle_taken(KEYS[2], ARGV[4], ARGV[6], now, ARGV[5], ARGV[5]) then return -2 end
if live(KEYS[1], now) then return 0 end
put(KEYS[1], 7, ARGV[2])
return 1
"""
)

# A rename in one step: read the old record, write the new one (its metadata from ARGV, the old
# record's data fields with the delta applied), and retire the old key. On a single server it
# also checks the handle and moves the index entries (KEYS[3], KEYS[4] and keys built from the
# prefixes); a cluster passes only the two session keys, which must then be one key.
# KEYS: old session, new session, [handle index, [user index]]. ARGV: now, ttl_ms, index ttl_ms,
# session prefix, handle index prefix, user index prefix, old member, new member, handle,
# grace_ms ('0': no tombstone), tombstone until, 2m, m metadata field/value pairs, 2n, n changed
# field/value pairs, fields to delete... Returns {1, old handle, old user}; {0} if the old record
# is not live, {2} if the old key is a tombstone, {-1} if a live record holds the new key, {-2} if
# another live session holds the handle; in all four cases nothing was written.
_RENAME = (
    _LIVE
    + _INDEXES
    + """
local now = tonumber(ARGV[1])
local old, new = KEYS[1], KEYS[2]
if not live(old, now) then
  if successor(old, now) then return {2} end
  return {0}
end
if old ~= new and live(new, now) then return {-1} end
if KEYS[3] then
  if handle_taken(KEYS[3], ARGV[4], ARGV[9], now, ARGV[7], ARGV[8]) then return {-2} end
  index_add(KEYS[3], ARGV[8], ARGV[1], ARGV[3])
  if KEYS[4] then index_add(KEYS[4], ARGV[8], ARGV[1], ARGV[3]) end
end
local all = redis.call('HGETALL', old)
local h, u, data = false, false, {}
for i = 1, #all, 2 do
  local f = all[i]
  if f == 'h' then h = all[i + 1]
  elseif f == 'u' then u = all[i + 1]
  elseif string.sub(f, 1, 2) == 'd:' then
    data[#data + 1] = f
    data[#data + 1] = all[i + 1]
  end
end
redis.call('DEL', old, new)
local m = tonumber(ARGV[12])
hset(new, 13, 12 + m)
for i = 1, #data, 1000 do
  redis.call('HSET', new, unpack(data, i, math.min(i + 999, #data)))
end
local c = 13 + m
local n = tonumber(ARGV[c])
if n > 0 then hset(new, c + 1, c + n) end
for i = c + 1 + n, #ARGV, 1000 do
  redis.call('HDEL', new, unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('PEXPIRE', new, ARGV[2])
if old ~= new then
  if KEYS[3] then
    if h then redis.pcall('ZREM', ARGV[5] .. h, ARGV[7]) end
    if u then redis.pcall('ZREM', ARGV[6] .. u, ARGV[7]) end
  end
  retire(old, ARGV[8], ARGV[10], ARGV[11])
end
return {1, h, u}
"""
)

# Step 3 of a rename in a cluster (see the module docstring), on the old key alone.
# KEYS: old session. ARGV: now, the version read, new key (without the prefix), grace_ms ('0':
# no tombstone), tombstone until. Returns {1, handle, user} once retired; {0} if no live record
# is there, {2} if a tombstone is (another rename won), {-1, fields} if the version differs:
# the whole record as it is now (HGETALL), and nothing written.
_RETIRE = (
    _LIVE
    + """
local now = tonumber(ARGV[1])
if not live(KEYS[1], now) then
  if successor(KEYS[1], now) then return {2} end
  return {0}
end
local r = redis.call('HMGET', KEYS[1], 'v', 'h', 'u')
if (r[1] or '0') ~= ARGV[2] then return {-1, redis.call('HGETALL', KEYS[1])} end
retire(KEYS[1], ARGV[3], ARGV[4], ARGV[5])
return {1, r[2], r[3]}
"""
)

# KEYS: marker. ARGV: now, expires_at, ttl_ms, value, '0' to keep a live marker (a claim).
# Returns 1 when written, 0 when a live marker was kept. Anything else under the key (garbage
# written by hand) is replaced.
_MARKER = """
if ARGV[5] == '0' then
  local x = redis.pcall('HGET', KEYS[1], 'x')
  if type(x) == 'string' then
    x = tonumber(x)
    if x ~= nil and x > tonumber(ARGV[1]) then return 0 end
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[4], 'x', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: index. ARGV: score, member, ttl_ms, '1' to return the members.
_INDEX_ADD = (
    _INDEXES
    + """
index_add(KEYS[1], ARGV[2], ARGV[1], ARGV[3])
if ARGV[4] == '1' then return redis.call('ZRANGE', KEYS[1], 0, -1) end
return 0
"""
)


class _Lua:
    """A Lua script run by its SHA1 (``EVALSHA``), loaded again when the server lost it."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


_SCRIPTS: Final = {
    name: _Lua(text)
    for name, text in (
        ("create", _CREATE),
        ("apply", _APPLY),
        ("rename", _RENAME),
        ("retire", _RETIRE),
        ("create_one", _CREATE_ONE),
        ("delete", _DELETE),
        ("delete_if", _DELETE_IF),
        ("unlink", _UNLINK),
        ("marker", _MARKER),
        ("index_add", _INDEX_ADD),
        ("raise_ttl", _RAISE_TTL),
    )
}
_S_CREATE: Final = _SCRIPTS["create"]
_S_APPLY: Final = _SCRIPTS["apply"]
_S_RENAME: Final = _SCRIPTS["rename"]
_S_RETIRE: Final = _SCRIPTS["retire"]
_S_CREATE_ONE: Final = _SCRIPTS["create_one"]
_S_DELETE: Final = _SCRIPTS["delete"]
_S_DELETE_IF: Final = _SCRIPTS["delete_if"]
_S_UNLINK: Final = _SCRIPTS["unlink"]
_S_MARKER: Final = _SCRIPTS["marker"]
_S_INDEX_ADD: Final = _SCRIPTS["index_add"]
_S_RAISE_TTL: Final = _SCRIPTS["raise_ttl"]

#: What the delta script does when it meets a tombstone, and which keys it may reach (see
#: ``_APPLY``).
_TOUCH: Final = b"touch"
_FOLLOW: Final = b"follow"
_REACH_ALL: Final = b"all"
_REACH_ONE: Final = b"one"
#: The delta script's answers that are not a version.
_FOLLOWED: Final = b"followed"
_RAISE_INDEXES: Final = b"indexes"
#: The touch part of the delta script's arguments when there is no touch.
_NO_TOUCH: Final = (b"", b"", b"", b"", b"")

#: One command of a pipeline: a script or a command name, its keys and its arguments.
_Call = tuple[_Lua | str, Sequence[bytes], Sequence[Any]]

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


def _import_redis() -> Any:
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
        redis = _import_redis()
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
        self._reach = _REACH_ONE if self._cluster else _REACH_ALL

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
        redis = _import_redis()
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

    def _load_scripts(self) -> None:
        for script in _SCRIPTS.values():
            script.sha = _s(self._client.script_load(script.text))

    def _eval(self, script: _Lua, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        try:
            return self._client.evalsha(script.sha, len(keys), *keys, *args)
        except self._noscript:
            self._load_scripts()
            return self._client.evalsha(script.sha, len(keys), *keys, *args)

    def _pipeline(self, calls: Sequence[_Call]) -> list[Any]:
        """Run ``calls`` in order, in one round trip per server; errors come back as values."""
        pipe = self._client.pipeline(transaction=False)
        for what, keys, args in calls:
            if isinstance(what, _Lua):
                pipe.execute_command("EVALSHA", what.sha, len(keys), *keys, *args)
            else:
                pipe.execute_command(what, *keys, *args)
        results: list[Any] = pipe.execute(raise_on_error=False)
        if any(isinstance(result, self._noscript) for result in results):
            # The server lost its scripts (restart, SCRIPT FLUSH): those calls did not run, so
            # running them now, in their order, runs each exactly once.
            self._load_scripts()
            for index, result in enumerate(results):
                if isinstance(result, self._noscript):
                    what, keys, args = calls[index]
                    assert isinstance(what, _Lua)
                    results[index] = self._eval(what, keys, args)
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
        """The touch part of the delta script's arguments (see ``_APPLY``)."""
        if touch is None:
            return _NO_TOUCH
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
            (_S_INDEX_ADD, [self._hkey(record.handle)], [_num(now), key, ttl, b"1"])
        ]
        if record.user_id is not None:
            calls.append((_S_INDEX_ADD, [self._ukey(record.user_id)], [_num(now), key, ttl, b"0"]))
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

        One script on a single server: the index entries, the check that no other live session
        holds the handle, then the record (refused if a live one has the key). In a cluster, two
        round trips: the index entries, then the session, whose script refuses a live key; a
        handle collision (which 96 random bits make impossible in practice) is detected from the
        handle index afterwards, and the record just stored under its unguessable new key is
        deleted again before ``ValueError``.
        """
        now = record.created
        if not self._cluster:
            return self._create_in_one_step(record, now)
        try:
            args = [_num(now), _ttl_ms(record.expires_at, now), *self._fields(record)]
            results = self._ordered(
                self._index_calls(record, now), [(_S_CREATE, [self._skey(record.key)], args)]
            )
            if results[-1] == 0:
                raise ValueError(_DUPLICATE_KEY)
            if self._handle_taken(results[0], record.handle, now, {_b(record.key)}):
                self._client.delete(self._skey(record.key))
                raise ValueError(_DUPLICATE_HANDLE)
        except self._error as exc:
            raise self._unavailable(exc) from exc

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
        return self._write(key, changed, deleted, now, touch, _FOLLOW)

    def touch(self, key: str, touch: Touch, now: float) -> Outcome:
        """Apply ``touch`` (and the TTL it implies) with one script; see :meth:`Store.touch`."""
        return self._write(key, {}, (), now, touch, _TOUCH)

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
            if kind == _FOLLOWED:
                return Outcome.FOLLOWED
            if kind == _RAISE_INDEXES:
                # A cluster, after a touch that moved the absolute expiry: the indexes are on
                # other nodes, and must not expire before the session.
                handle, user, ttl = result[2], result[3], result[4]
                calls: list[_Call] = []
                if handle is not None:
                    calls.append((_S_RAISE_TTL, [self._hkey(_bytes(handle))], [ttl]))
                if user is not None:
                    calls.append((_S_RAISE_TTL, [self._ukey(_bytes(user))], [ttl]))
                self._ordered(calls)
                return Outcome.DONE
            # A cluster: the record the tombstone names may be on another node. Tombstones
            # never change, so following it now is what following it in the script would be.
            args = [_num(now), *_NO_TOUCH, _FOLLOW, self._s_prefix, _REACH_ONE, *delta]
            for _ in range(MAX_FOLLOW):
                result = self._eval(_S_APPLY, [_bytes(result[1])], args)
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
                script = ("EVALSHA", _S_APPLY.sha, 1, skey, *args)
                result = cache.apply(skey, script, changed, deleted, touch)
                if isinstance(result, self._noscript):
                    self._load_scripts()
                    result = cache.apply(skey, script, changed, deleted, touch)
                if isinstance(result, Exception):
                    raise result
                return result
            except CacheUnsupported as exc:
                # Refused while connecting, before anything was sent: apply it uncached.
                self._cache_refused(exc)
        return self._eval(_S_APPLY, [skey], args)

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
        args = [
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
            result = self._eval(_S_RENAME, keys, args)
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
            args = [_num(now), _ttl_ms(record.expires_at, now), *self._meta(record), *_flat(data)]
            if self._eval(_S_CREATE, [new_skey], args) == 0:
                raise ValueError(_DUPLICATE_KEY)
            for _ in range(RENAME_ATTEMPTS):
                # 3. Retire the old record if nothing changed it since it was read.
                result = self._eval(
                    _S_RETIRE, [old_skey], [_num(now), version, new_b, grace_ms, until]
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
                    args = [_num(now), *_NO_TOUCH, _FOLLOW, self._s_prefix, _REACH_ONE, *delta]
                    self._eval(_S_APPLY, [new_skey], args)
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

    def _create_in_one_step(self, record: SessionRecord, now: float) -> None:
        key_b = _b(record.key)
        keys = [self._skey(key_b), self._hkey(record.handle)]
        if record.user_id is not None:
            keys.append(self._ukey(record.user_id))
        args = [
            _num(now),
            _ttl_ms(record.expires_at, now),
            _ttl_ms(max(record.absolute_expires_at, record.expires_at), now),
            self._s_prefix,
            key_b,
            _b(record.handle),
            *self._fields(record),
        ]
        try:
            result = self._eval(_S_CREATE_ONE, keys, args)
        except self._error as exc:
            raise self._unavailable(exc) from exc
        if result == 0:
            raise ValueError(_DUPLICATE_KEY)
        if result == -2:
            raise ValueError(_DUPLICATE_HANDLE)

    def delete(self, key: str) -> bool:
        """Delete the record under ``key``, live or expired; see :meth:`Store.delete`."""
        key_b = _b(key)
        try:
            if self._cluster:
                result = self._eval(_S_DELETE, [self._skey(key_b)], [])
            else:
                # One round trip: the script removes the index entries too.
                args = [self._h_prefix, self._u_prefix, key_b]
                result = self._eval(_S_DELETE, [self._skey(key_b)], args)
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
        try:
            pending = [(m, s) for m, s in self._members(ukey) if m != keep]
            live = 0
            remove: list[bytes] = []
            cleanup: list[_Call] = []
            for _ in range(MAX_FOLLOW + 1):
                if not pending:
                    break
                results = self._pipeline(
                    [(_S_DELETE_IF, [self._skey(m)], args) for m, _ in pending]
                )
                self._evict(*(self._skey(m) for m, _ in pending))
                renamed: list[tuple[bytes, float]] = []
                for (member, score), result in zip(pending, results, strict=True):
                    if isinstance(result, Exception):
                        raise result
                    status = result[0]
                    if status in (1, 2):
                        live += status == 2
                        remove.append(member)
                        if result[1] is not None:
                            cleanup.append(("ZREM", [self._hkey(result[1])], [member]))
                    elif status == 3:
                        remove.append(member)
                        if (successor := _bytes(result[1])) != keep:
                            renamed.append((successor, now))
                    elif status in (-1, -3) or (status == 0 and score < now - INDEX_GRACE):
                        remove.append(member)
                pending = renamed
            if remove:
                cleanup.append(("ZREM", [ukey], remove))
            if cleanup:
                self._pipeline(cleanup)
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
        try:
            pending = self._members(hkey)
            found: bytes | None = None
            owner: bytes | None = None
            remove: list[bytes] = []
            cleanup: list[_Call] = []
            for _ in range(MAX_FOLLOW + 1):
                if not pending:
                    break
                results = self._pipeline(
                    [(_S_DELETE_IF, [self._skey(m)], args) for m, _ in pending]
                )
                self._evict(*(self._skey(m) for m, _ in pending))
                renamed: list[tuple[bytes, float]] = []
                for (member, score), result in zip(pending, results, strict=True):
                    if isinstance(result, Exception):
                        raise result
                    status = result[0]
                    if status == 2:
                        if found is None:
                            found, owner = member, result[2]
                        remove.append(member)
                        if result[2] is not None:
                            cleanup.append(("ZREM", [self._ukey(result[2])], [member]))
                    elif status == 3:
                        remove.append(member)
                        renamed.append((_bytes(result[1]), now))
                    elif status in (-1, -2) or (status == 0 and score < now - INDEX_GRACE):
                        remove.append(member)
                pending = renamed
            if remove:
                cleanup.append(("ZREM", [hkey], remove))
            if cleanup:
                self._pipeline(cleanup)
        except self._error as exc:
            raise self._unavailable(exc) from exc
        if found is None:
            return None
        return _s(found), None if owner is None else _s(owner)

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
        args = [
            _num(now),
            _num(expires_at),
            _ttl_ms(expires_at, now),
            _b(value),
            b"1" if replace else b"0",
        ]
        try:
            return bool(self._eval(_S_MARKER, [self._m_prefix + _b(name)], args) == 1)
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
                    (_S_UNLINK, [k], []) for k in chunk if k.startswith(self._s_prefix)
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
