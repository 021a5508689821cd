"""The Lua scripts of the Redis store, run through redis-py's ``Script`` (``register_script``).

Each script is one atomic step on the server. ``Script`` runs it by its SHA1 (``EVALSHA``) and,
when the server answers ``NOSCRIPT`` (after a restart, a failover or ``SCRIPT FLUSH``), loads it
and runs it again; in a pipeline of one server, redis-py loads the pipeline's scripts before
sending it. What each script takes and answers is written above it; the data model they work on
is in the docstring of :mod:`flask_keepsake.stores.redis.store`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ..base import MAX_FOLLOW

if TYPE_CHECKING:
    from redis.commands.core import Script

LIVE = """
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
APPLY = (
    LIVE
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
RAISE_TTL = """
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
DELETE = """
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
DELETE_IF = (
    LIVE
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
UNLINK = """
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
INDEXES = """
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

# A create, on a single server in one step: the index entries, the handle check, the record. A
# cluster, where the indexes live on other nodes, passes the session key alone: it writes the
# index entries first, in a round trip of their own, and checks the handle afterwards.
# KEYS: session, [handle index, [user index]]. ARGV: now, ttl_ms, index ttl_ms, session prefix,
# member, handle, then field, value, ... Returns 1, 0 if a live record has the key, -2 if another
# live session holds the handle (in both cases only the index entries, which are hints, exist).
CREATE = (
    LIVE
    + INDEXES
    + """
local now = tonumber(ARGV[1])
if KEYS[2] then
  index_add(KEYS[2], ARGV[5], ARGV[1], ARGV[3])
  if KEYS[3] then index_add(KEYS[3], ARGV[5], ARGV[1], ARGV[3]) end
  if handle_taken(KEYS[2], ARGV[4], ARGV[6], now, ARGV[5], ARGV[5]) then return -2 end
end
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
RENAME = (
    LIVE
    + INDEXES
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
RETIRE = (
    LIVE
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
MARKER = """
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
INDEX_ADD = (
    INDEXES
    + """
index_add(KEYS[1], ARGV[2], ARGV[1], ARGV[3])
if ARGV[4] == '1' then return redis.call('ZRANGE', KEYS[1], 0, -1) end
return 0
"""
)


#: What the delta script does when it meets a tombstone, and which keys it may reach (see
#: ``APPLY``).
TOUCH: Final = b"touch"
FOLLOW: Final = b"follow"
REACH_ALL: Final = b"all"
REACH_ONE: Final = b"one"
#: The delta script's answers that are not a version.
FOLLOWED: Final = b"followed"
RAISE_INDEXES: Final = b"indexes"
#: The touch part of the delta script's arguments when there is no touch.
NO_TOUCH: Final = (b"", b"", b"", b"", b"")


class Scripts:
    """The store's scripts, registered on its client with ``register_script``.

    redis-py computes each SHA1 with the client's encoder and keeps it on the ``Script``.
    """

    __slots__ = (
        "apply",
        "create",
        "delete",
        "delete_if",
        "index_add",
        "marker",
        "raise_ttl",
        "rename",
        "retire",
        "unlink",
    )

    def __init__(self, client: Any) -> None:
        register = client.register_script
        self.create: Script = register(CREATE)
        self.apply: Script = register(APPLY)
        self.rename: Script = register(RENAME)
        self.retire: Script = register(RETIRE)
        self.delete: Script = register(DELETE)
        self.delete_if: Script = register(DELETE_IF)
        self.unlink: Script = register(UNLINK)
        self.marker: Script = register(MARKER)
        self.index_add: Script = register(INDEX_ADD)
        self.raise_ttl: Script = register(RAISE_TTL)
