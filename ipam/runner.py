"""Running the IPAM's Lua scripts: registered once, batched per event-loop turn,
confirmed on replicas (``WAIT``), bounded by a deadline; Redis errors become
``StoreUnavailable`` here and nowhere else."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from ipam.errors import IpamError, StoreUnavailable
from ipam.layout import TOUCH

log = logging.getLogger("stickyip.ipam")
T = TypeVar("T")

#: The absolute deadline (event-loop time) of the store calls made in this context.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "stickyip_ipam_deadline", default=None)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(slots=True)
class Script:
    source: str
    sha: str = ""
    #: the same script's many-calls form (``ipam.scripts.MANY``), if it has one
    many: Script | None = None


@dataclass(frozen=True, slots=True)
class Durability:
    """How many replicas must hold a write before it is acknowledged (0: a single
    Redis), and how long to wait for them."""

    replicas: int = 0
    timeout_ms: int = 1000


class NotConfirmed(RedisError):
    """WAIT reported fewer replicas than required (translated to StoreUnavailable)."""


_Item = tuple[Script, str, tuple[Any, ...], "asyncio.Future[Any]"]
#: At most this many calls ride one many-calls EVALSHA (it blocks Redis meanwhile).
MANY_MAX = 32
#: Round trips (pipelines, lone calls) one runner keeps in flight while batching.
MAX_INFLIGHT = 2


def _commands(batch: list[_Item]) -> list[list[_Item]]:
    """The pipeline's commands: calls of a script with a many-calls form go together
    (up to MANY_MAX per command), the rest one per command, in order of first
    appearance. Only calls made concurrently share a batch, so none of them waits
    for another: their relative order was never promised."""
    out: list[list[_Item]] = []
    open_groups: dict[tuple[int, str], list[_Item]] = {}
    for item in batch:
        sc, key = item[0], item[1]
        if sc.many is None:
            out.append([item])
            continue
        group = open_groups.get((id(sc), key))
        if group is None or len(group) >= MANY_MAX:
            group = open_groups[(id(sc), key)] = []
            out.append(group)
        group.append(item)
    return out


class _Batcher:
    """Sends the script calls of concurrent callers as pipelines, at most ``limit``
    round trips (pipelines and lone calls) in flight at once: a call made while they
    are busy waits for the next pipeline, which leaves as soon as one of them is
    answered and carries every call queued meanwhile. Under load that is one round
    trip (and, per script, one many-calls EVALSHA) for many calls, far less client and
    Redis CPU per call; a lone call is sent at once, no added latency. Safe because
    every script is atomic and idempotent, so a pipeline re-sent by the retry policy
    cannot apply a call twice. With replicas required, one WAIT closes the pipeline and
    confirms every write in it."""

    def __init__(self, client: aioredis.Redis, durability: Durability,
                 max_batch: int = 512, limit: int = 2) -> None:
        self._r = client
        self._dur = durability
        self._max = max_batch
        self._limit = max(1, limit)
        self._queue: list[_Item] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: round trips in flight: pipelines sent here and lone calls (begin/end)
        self.inflight = 0

    def busy(self) -> bool:
        """Round trips are in flight or calls wait to leave: a new call joins them (a
        caller going alone again and again would keep the queued ones waiting)."""
        return bool(self.inflight or self._queue)

    def begin(self) -> None:
        """A lone call is sent (it holds one of the ``limit`` round trips)."""
        self.inflight += 1

    def end(self) -> None:
        """A round trip was answered: the calls queued meanwhile leave together (after
        the callers it woke have queued their next calls, in this loop turn)."""
        self.inflight -= 1
        self._schedule()

    def _schedule(self) -> None:
        if self._queue and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def submit(self, sc: Script, key: str, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((sc, key, args, fut))
        if len(self._queue) >= self._max:
            self._flush(force=True)
        else:
            self._schedule()
        return fut

    async def settle(self, *, within: float) -> None:
        """Send what is queued and wait (at most ``within`` s) for pipelines in flight;
        those still running then are cancelled, failing their callers."""
        self._flush(force=True)
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=within)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    def _flush(self, *, force: bool = False) -> None:
        self._scheduled = False
        if not self._queue or (self.inflight >= self._limit and not force):
            return  # sent by end() when a round trip in flight is answered
        # a caller that gave up (deadline, cancellation) before its call left: not sent
        batch = [item for item in self._queue if not item[3].done()]
        self._queue = []
        if not batch:
            return
        self.inflight += 1
        task = asyncio.ensure_future(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.end()

    async def _send(self, batch: list[_Item], *, reload: bool = True) -> None:
        waits = self._dur.replicas > 0
        commands = _commands(batch)
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                for cmd in commands:
                    sc, key, args, _ = cmd[0]
                    if len(cmd) > 1:
                        assert sc.many is not None
                        if not sc.many.sha:
                            sc.many.sha = _s(await self._r.script_load(sc.many.source))
                        args = tuple(x for item in cmd for x in (len(item[2]), *item[2]))
                        sc = sc.many
                    if waits:
                        pipe.evalsha(sc.sha, 2, key, TOUCH, *args)
                    else:
                        pipe.evalsha(sc.sha, 1, key, *args)
                if waits:
                    pipe.wait(self._dur.replicas, self._dur.timeout_ms)
                results = await pipe.execute(raise_on_error=False)
        except BaseException as e:
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else RedisError(str(e)))
            if not isinstance(e, Exception):
                raise
            return
        confirmed: Exception | None = None
        if waits:
            acks = results.pop()
            if isinstance(acks, Exception):
                confirmed = acks
            elif int(acks) < self._dur.replicas:
                confirmed = NotConfirmed(
                    f"only {int(acks)} of {self._dur.replicas} replicas confirmed the write "
                    f"within {self._dur.timeout_ms} ms")
        redo: list[_Item] = []
        reload_scripts: dict[int, Script] = {}
        for cmd, res in zip(commands, results, strict=True):
            if isinstance(res, NoScriptError) and reload:
                redo.extend(cmd)
                stale = cmd[0][0] if len(cmd) == 1 else cmd[0][0].many
                assert stale is not None
                reload_scripts[id(stale)] = stale
                continue
            if len(cmd) == 1:
                replies = [res]
            elif isinstance(res, Exception):
                replies = [res] * len(cmd)  # the command failed: so did each call of it
            elif not isinstance(res, list) or len(res) != len(cmd):
                replies = [ResponseError(f"the many-calls script answered {len(cmd)} calls "
                                         f"with {res!r:.200}")] * len(cmd)
            else:
                replies = res
            for item, reply in zip(cmd, replies, strict=True):
                fut = item[3]
                if fut.done():
                    continue
                if isinstance(reply, Exception):
                    fut.set_exception(reply)
                elif confirmed is not None:
                    fut.set_exception(confirmed)
                else:
                    fut.set_result(reply)
        if redo:
            try:
                for sc in reload_scripts.values():
                    sc.sha = _s(await self._r.script_load(sc.source))
            except (RedisError, OSError) as e:
                for *_, fut in redo:
                    fut.set_exception(e)
                return
            await self._send(redo, reload=False)


class ScriptRunner:
    """Calls scripts (and guards plain reads) for the IPAM.

    - Concurrent calls ride one pipeline (``batching``), at most ``max_inflight`` round
      trips in flight; a lone call is sent alone, at once.
    - ``durability.replicas`` > 0: every mutating call is followed by ``WAIT`` on the
      same connection, and fewer acknowledgements fail the call with StoreUnavailable.
    - Deadlines: ``call_timeout`` bounds every call, :meth:`deadline` bounds all the
      calls made inside it (a whole admission request, retries included). Expiry is
      StoreUnavailable, never a hang.
    """

    def __init__(self, client: aioredis.Redis, *, batching: bool = True,
                 durability: Durability | None = None,
                 call_timeout: float | None = None,
                 many: Mapping[str, str] | None = None,
                 max_inflight: int = MAX_INFLIGHT) -> None:
        self.redis = client
        #: script source -> its many-calls form (batched calls of it share one EVALSHA)
        self._many = dict(many or {})
        self.durability = durability or Durability()
        self.call_timeout = call_timeout
        self._batcher = (_Batcher(client, self.durability, limit=max_inflight)
                         if batching else None)
        self._scripts: dict[str, Script] = {}

    # ------------------------------------------------------------- deadlines

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Every store call made inside (in this task and the tasks it starts) must
        finish within ``seconds`` from now, all retries included."""
        now = asyncio.get_running_loop().time()
        current = _deadline.get()
        limit = now + seconds if current is None else min(current, now + seconds)
        token = _deadline.set(limit)
        try:
            yield
        finally:
            _deadline.reset(token)

    def _limit(self) -> float | None:
        limit = _deadline.get()
        if self.call_timeout is not None:
            own = asyncio.get_running_loop().time() + self.call_timeout
            limit = own if limit is None else min(limit, own)
        return limit

    async def bounded(self, aw: Awaitable[T]) -> T:
        """Await a store operation within the current deadline; translate errors."""
        limit = self._limit()
        try:
            if limit is None:
                return await aw
            async with asyncio.timeout_at(limit) as cm:
                try:
                    return await aw
                finally:
                    expired = cm.expired()
        except IpamError:
            raise
        except NotConfirmed as e:
            raise StoreUnavailable(
                f"the store did not confirm the write on enough replicas ({e}); it is not "
                "acknowledged: retry (safe) once the replicas are reachable") from e
        except ResponseError as e:
            raise StoreUnavailable(f"IPAM script failed: {e}") from e
        except (RedisError, OSError) as e:
            if limit is not None and expired:
                raise StoreUnavailable(
                    "the IPAM store did not answer within the call's deadline; a write may "
                    "or may not have happened (retrying is safe)") from e
            raise StoreUnavailable(f"Redis store error: {e}") from e
        finally:
            if isinstance(aw, asyncio.Future | asyncio.Task) and not aw.done():
                aw.cancel()

    # ---------------------------------------------------------------- scripts

    def script(self, source: str) -> Script:
        sc = self._scripts.get(source)
        if sc is None:
            many = self._many.get(source)
            sc = self._scripts[source] = Script(source, many=Script(many) if many else None)
        return sc

    async def call(self, source: str, key: str, *args: Any, write: bool = True) -> list[str]:
        """Run a script; a ``write`` is confirmed on the required replicas."""
        reply = await self.bounded(self._call(self.script(source), key, args, write))
        return [_s(x) for x in reply]

    async def raw(self, source: str, key: str, *args: Any) -> Any:
        """Run a read-only script and return its reply undecoded."""
        return await self.bounded(self._call(self.script(source), key, args, False))

    async def _call(self, sc: Script, key: str, args: tuple[Any, ...], write: bool) -> Any:
        if not sc.sha:
            sc.sha = _s(await self.redis.script_load(sc.source))
        b = self._batcher
        if write and b is not None:
            if b.busy():
                # others are waiting on Redis (or queued): ride along in the next pipeline
                return await b.submit(sc, key, args)
            b.begin()
            try:
                return await self._direct(sc, key, args, write)
            finally:
                b.end()
        return await self._direct(sc, key, args, write)

    async def _direct(self, sc: Script, key: str, args: tuple[Any, ...], write: bool) -> Any:
        try:
            return await self._once(sc, key, args, write)
        except NoScriptError:
            sc.sha = _s(await self.redis.script_load(sc.source))
            return await self._once(sc, key, args, write)

    async def _once(self, sc: Script, key: str, args: tuple[Any, ...], write: bool) -> Any:
        if not (write and self.durability.replicas > 0):
            return await self.redis.evalsha(sc.sha, 1, key, *args)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(sc.sha, 2, key, TOUCH, *args)
            pipe.wait(self.durability.replicas, self.durability.timeout_ms)
            reply, acks = await pipe.execute(raise_on_error=False)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(acks, Exception):
            raise acks
        if int(acks) < self.durability.replicas:
            raise NotConfirmed(
                f"only {int(acks)} of {self.durability.replicas} replicas confirmed the "
                f"write within {self.durability.timeout_ms} ms")
        return reply

    async def settle(self, *, within: float) -> None:
        if self._batcher is not None:
            await self._batcher.settle(within=within)
