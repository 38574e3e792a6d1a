"""The Lua scripts: every read-check-write on presence is one script, so it is
atomic on the Redis server (EVALSHA; reloaded by the client after a restart).

They run on a single Redis primary (or Valkey); they touch keys derived in
the script (the owner's lease, the instance sets), which Redis Cluster would
refuse, so a sharded Redis Cluster is not supported.

Time is always Redis's ``TIME``: node clocks never matter.
"""

from __future__ import annotations

# enc() must match _protocol.encode_identity (urllib.parse.quote(s, safe="")):
# every byte outside A-Z a-z 0-9 _ . - ~ becomes %XX (upper-case hex).
_PRELUDE = r"""
local function enc(s)
  return (string.gsub(s, '[^%w_%.%-~]', function(c)
    return string.format('%%%02X', string.byte(c))
  end))
end
local function now()
  local t = redis.call('TIME')
  return t, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function alive(p, node, inst)
  return node and inst and redis.call('GET', p .. ':node:' .. node) == inst
end
local function event(p, kind, identity, node, proto, t)
  redis.call('PUBLISH', p .. ':events', cjson.encode({
    v = 1, k = kind, identity = identity, node = node, proto = proto or '', ts = {t[1], t[2]}
  }))
end
"""

#: KEYS: lease, nodes. ARGV: instance, lease_ms, expected current lease value
#: ('' for none). -> 1 joined, 0 the node id is held by another live instance.
JOIN = _PRELUDE + r"""
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[3] then return 0 end
local _, ms = now()
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ms + tonumber(ARGV[2]), ARGV[1])
return 1
"""

#: KEYS: lease, nodes. ARGV: instance, lease_ms, prefix, reap budget.
#: -> {renewed 1/0, registrations reaped}. Also reaps instances whose lease
#: expired (any node does it; each registration once, atomically), publishing
#: "disconnected" for their registrations.
RENEW = _PRELUDE + r"""
local p = ARGV[3]
local t, ms = now()
local renewed = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], ms + tonumber(ARGV[2]), ARGV[1])
  renewed = 1
end
local budget = tonumber(ARGV[4])
local reaped = 0
for _, inst in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ms, 'LIMIT', 0, 10)) do
  local set = p .. ':inst:' .. inst
  local members = redis.call('SPOP', set, budget)
  for _, identity in ipairs(members) do
    local rk = p .. ':id:' .. enc(identity)
    local cur = redis.call('HMGET', rk, 'node', 'inst', 'proto')
    if cur[2] == inst then
      redis.call('DEL', rk)
      event(p, 'disconnected', identity, cur[1], cur[3], t)
    end
  end
  reaped = reaped + #members
  budget = budget - #members
  if redis.call('SCARD', set) == 0 then redis.call('ZREM', KEYS[2], inst) end
  if budget <= 0 then break end
end
return {renewed, reaped}
"""

#: KEYS: registration, own lease, own instance set.
#: ARGV: node, instance, connection, protocol, prefix, identity.
#: -> {'nolease'} | {'ok'} | {'ok', previous node, previous connection} (a live
#: previous owner; if it is another node, it is told to close that connection).
REGISTER = _PRELUDE + r"""
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {'nolease'} end
local p = ARGV[5]
local cur = redis.call('HMGET', KEYS[1], 'node', 'inst', 'conn')
local prev = nil
if cur[1] then
  if alive(p, cur[1], cur[2]) then prev = {cur[1], cur[3]} end
  if cur[2] ~= ARGV[2] then redis.call('SREM', p .. ':inst:' .. cur[2], ARGV[6]) end
end
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'inst', ARGV[2], 'conn', ARGV[3], 'proto', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[6])
local t = now()
if prev and prev[1] ~= ARGV[1] then
  redis.call('PUBLISH', p .. ':inbox:' .. prev[1], cjson.encode({
    v = 1, k = 'replace', identity = ARGV[6], conn = prev[2], by = ARGV[1]
  }))
end
event(p, 'connected', ARGV[6], ARGV[1], ARGV[4], t)
if prev then return {'ok', prev[1], prev[2]} end
return {'ok'}
"""

#: KEYS: registration. ARGV: node, connection, prefix, identity.
#: Compare-and-delete: -> 1 removed, 0 the registration is not (node, connection).
UNREGISTER = _PRELUDE + r"""
local cur = redis.call('HMGET', KEYS[1], 'node', 'inst', 'conn', 'proto')
if cur[1] ~= ARGV[1] or cur[3] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[3] .. ':inst:' .. cur[2], ARGV[4])
event(ARGV[3], 'disconnected', ARGV[4], cur[1], cur[4], (now()))
return 1
"""

#: KEYS: own lease, own instance set. ARGV: node, instance, prefix, then
#: (identity, connection, protocol) triples. Re-registers each one unless a
#: live other owner took it meanwhile. -> {'nolease'} | {'ok', lost identity,
#: lost connection, ...}.
REASSERT = _PRELUDE + r"""
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return {'nolease'} end
local p = ARGV[3]
local t = now()
local out = {'ok'}
for i = 4, #ARGV, 3 do
  local identity, conn, proto = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local rk = p .. ':id:' .. enc(identity)
  local cur = redis.call('HMGET', rk, 'node', 'inst', 'conn')
  local mine = cur[1] == ARGV[1] and cur[3] == conn
  if mine and cur[2] == ARGV[2] then
    redis.call('SADD', KEYS[2], identity)
  elseif (not mine) and alive(p, cur[1], cur[2]) then
    table.insert(out, identity)
    table.insert(out, conn)
  else
    if cur[2] and cur[2] ~= ARGV[2] then redis.call('SREM', p .. ':inst:' .. cur[2], identity) end
    redis.call('HSET', rk, 'node', ARGV[1], 'inst', ARGV[2], 'conn', conn, 'proto', proto)
    redis.call('SADD', KEYS[2], identity)
    event(p, 'connected', identity, ARGV[1], proto, t)
  end
end
return out
"""

#: KEYS: own instance set. ARGV: node, instance, prefix, then identities this
#: node no longer holds. -> how many registrations were removed.
PRUNE = _PRELUDE + r"""
local p = ARGV[3]
local t = now()
local n = 0
for i = 4, #ARGV do
  local identity = ARGV[i]
  local rk = p .. ':id:' .. enc(identity)
  local cur = redis.call('HMGET', rk, 'node', 'inst', 'proto')
  if cur[1] == ARGV[1] and cur[2] == ARGV[2] then
    redis.call('DEL', rk)
    event(p, 'disconnected', identity, cur[1], cur[3], t)
    n = n + 1
  end
  redis.call('SREM', KEYS[1], identity)
end
return n
"""

#: KEYS: registration. ARGV: prefix. -> {node, instance} if the owner's lease
#: is alive, else nil.
LOCATE = _PRELUDE + r"""
local cur = redis.call('HMGET', KEYS[1], 'node', 'inst')
if alive(ARGV[1], cur[1], cur[2]) then return {cur[1], cur[2]} end
return false
"""

#: KEYS: registration. ARGV: prefix, message. Looks the owner up and publishes
#: the call to its inbox in one step. -> {node, instance, receivers} or nil
#: (connected nowhere).
ROUTE = _PRELUDE + r"""
local cur = redis.call('HMGET', KEYS[1], 'node', 'inst')
if not alive(ARGV[1], cur[1], cur[2]) then return false end
local n = redis.call('PUBLISH', ARGV[1] .. ':inbox:' .. cur[1], ARGV[2])
return {cur[1], cur[2], n}
"""

#: KEYS: lease, nodes, own instance set. ARGV: node, instance, prefix.
#: A clean leave: the lease and every registration still held go at once.
LEAVE = _PRELUDE + r"""
local p = ARGV[3]
local t = now()
if redis.call('GET', KEYS[1]) == ARGV[2] then redis.call('DEL', KEYS[1]) end
for _, identity in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local rk = p .. ':id:' .. enc(identity)
  local cur = redis.call('HMGET', rk, 'node', 'inst', 'proto')
  if cur[1] == ARGV[1] and cur[2] == ARGV[2] then
    redis.call('DEL', rk)
    event(p, 'disconnected', identity, cur[1], cur[3], t)
  end
end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""
