"""Re-asserting live addresses after the store changed identity (issue 16.2): a node
agent names the endpoints it serves (owner, kind, addresses, pod, epoch) and the store
checks each one, in one atomic script:

- ``ok``: the record holds exactly those addresses;
- ``moved``: a sticky record holds them but is homed on another node at a newer epoch
  (the agent fences its endpoint: this is a re-home, not a loss);
- ``restored``: no record, and every address is free: the record is written again
  (the addresses are taken for that owner, never for anyone else), its block claimed
  for the node if unclaimed, routed like any record;
- ``conflict``: an address is held by another owner (``other`` names it), excluded,
  or the owner's record names other addresses: nothing is written; the agent reports it.

The script validates an endpoint completely before writing it, and is idempotent: a
retry finds the record and answers ``ok``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from ipam import layout, scripts
from ipam.errors import InvalidAddress, IpamError
from ipam.ranges import IPAddress
from ipam.redis_store import RedisIpam

# KEYS[1] layout; ARGV: node, now, actor, n, then per endpoint: owner, kind, holder, pod,
#   epoch, naddr, then per address: pool, block hex, offset.
# Reply: one JSON object per endpoint: {s=status, other=owner or reason}.
REASSERT = scripts.lean(scripts.PRELUDE + """
local node, now, actor = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if not layout_ok() then return {'err', 'layout'} end
local out = {}
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  local owner, kind, holder, pod = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local epoch, naddr = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  i = i + 6
  local want = {}
  for k = 1, naddr do
    want[k] = {pool=ARGV[i], b=ARGV[i + 1], o=tonumber(ARGV[i + 2])}
    i = i + 3
  end
  local res
  local cur = redis.call('HGET', REC, owner)
  if cur then
    local r = cjson.decode(cur)
    local same = true
    for _, w in ipairs(want) do
      local p = pool(w.pool)
      local a = p and r['ip'..p.f]
      if not (a and a.p == w.pool and a.b == w.b and a.o == w.o) then same = false end
    end
    if not same then
      res = {s='conflict', other='the record of '..owner..' names other addresses'}
    elseif r.kind == 'sticky' and r.node ~= node and r.epoch > epoch then
      res = {s='moved', other=r.node}
    else
      touch(); res = {s='ok'}
    end
  else
    -- validate every address first
    local plan = {}
    for _, w in ipairs(want) do
      local p = pool(w.pool)
      if not p then res = {s='conflict', other='pool '..w.pool..' is gone'}; break end
      local f = 'ip'..p.f
      if plan[f] then res = {s='conflict', other='two addresses of one family'}; break end
      if redis.call('SISMEMBER', p.K..'ex', w.b..':'..w.o) == 1 then
        res = {s='conflict', other='the address is excluded from pool '..w.pool}; break
      end
      local h = redis.call('HGET', p.K..'o:'..w.b, w.o)
      if h and h ~= owner then res = {s='conflict', other=h}; break end
      if not h and redis.call('HEXISTS', p.K..'bf', w.b) == 1
          and redis.call('GETBIT', p.K..'u:'..w.b, w.o) == 1 then
        res = {s='conflict', other='?'}; break
      end
      plan[f] = {p=p, b=w.b, o=w.o, held=(h == owner)}
    end
    if not res then
      local r = {owner=owner, kind=kind, node=node, epoch=epoch, holder=holder, pod=pod,
                 state='bound', retain=0, policy='migrate', expires=0, created=now,
                 updated=now}
      for f, x in pairs(plan) do
        if not x.held then take(x.p, x.b, x.o, owner) end
        r[f] = {p=x.p.name, g=x.p.g, b=x.b, o=x.o}
        if redis.call('HEXISTS', x.p.K..'blk', x.b) == 0 then claim_block(x.p, x.b, node) end
        audit(x.p, x.b, x.o, 'restore', owner, node, epoch, now, actor)
      end
      route(r, false)
      save(nil, r)
      res = {s='restored'}
    end
  end
  out[#out + 1] = cjson.encode(res)
end
commit()
return out
""")


@dataclass(frozen=True, slots=True)
class Asserted:
    """An endpoint a node serves, as it asserts it to the store."""

    owner: str
    kind: str
    addresses: tuple[IPAddress, ...]
    #: the pool of each address (same order); "" looks the pool up by address
    pools: tuple[str, ...] = ()
    holder: str = ""
    pod: str = ""
    epoch: int = 1


@dataclass(frozen=True, slots=True)
class Reasserted:
    endpoint: Asserted
    #: ok | moved | restored | conflict
    status: str
    #: conflict: the other owner (or why); moved: the node now home
    other: str = ""


async def reassert(ipam: RedisIpam, node: str, endpoints: Sequence[Asserted], *,
                   now: float | None = None) -> list[Reasserted]:
    """Check (and restore when missing) every endpoint ``node`` serves, in one script."""
    if not endpoints:
        return []
    args: list[str] = [node, str(ipam.clock() if now is None else now), ipam.actor,
                       str(len(endpoints))]
    for ep in endpoints:
        args += [ep.owner, ep.kind, ep.holder, ep.pod, str(ep.epoch), str(len(ep.addresses))]
        for k, address in enumerate(ep.addresses):
            name = ep.pools[k] if k < len(ep.pools) else ""
            ref = await ipam.pool(name) if name else await ipam.pool_for_address(address)
            if not ref.geo.contains(address):
                raise InvalidAddress(f"{address} is not in pool {name!r}")
            b, o = ref.geo.locate(address)
            args += [ref.spec.name, ref.geo.block_hex(b), str(o)]
    reply = await ipam.runner.call(REASSERT, layout.LAYOUT, *args)
    if reply and reply[0] == "err":
        raise IpamError(f"re-asserting endpoints failed: {reply[1:]}")
    out = []
    for ep, raw in zip(endpoints, reply, strict=True):
        d = json.loads(raw)
        out.append(Reasserted(endpoint=ep, status=str(d["s"]), other=str(d.get("other", ""))))
    return out
