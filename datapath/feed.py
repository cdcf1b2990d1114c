"""The fan-out tier ("feed"): a few replicas follow the store's change log and node
addresses, and every node agent follows one replica instead of the store — as
Calico's Typha stands between the datastore and thousands of Felix agents, and the
Kubernetes API server's watch cache between etcd and every watcher.

The store then serves a handful of followers whatever the cluster's size; each
replica keeps the routing state in memory (one snapshot, encoded once per revision
when asked for) and the last ``history`` change batches, each encoded once and
written to every follower. A follower that reconnects (to this or another replica)
resumes from its revision when the ring still holds it; otherwise it gets a gap and
asks for a snapshot — from the replica's memory, never from the store. Wire format:
:mod:`datapath.feedwire`.

:class:`FeedServer` is the tier (``stickyip feed``); :class:`FeedSource` is its client,
a :class:`ipam.follow.ChangeSource` an agent's :class:`ipam.follow.Follower` reads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from datapath import feedwire as wire
from datapath.peers import PeerSource
from datapath.status import serve_status
from ipam.changes import ChangeBatch, Gap, RoutingSnapshot
from ipam.errors import StoreUnavailable
from ipam.follow import ChangeSource, Follower, Update, cancel

log = logging.getLogger("stickyip.feed")

#: the longest line a follower accepts (a snapshot of a very large cluster)
LINE_LIMIT = 1 << 28


class FeedMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.clients = Gauge("stickyip_feed_clients", "followers connected", registry=r)
        self.revision = Gauge("stickyip_feed_revision", "store revision the feed is at",
                              registry=r)
        self.ready = Gauge("stickyip_feed_ready", "1 when the feed follows the store",
                           registry=r)
        self.batches = Counter("stickyip_feed_batches", "change batches read from the store",
                               registry=r)
        self.frames = Counter("stickyip_feed_frames_sent", "frames written to followers",
                              ["type"], registry=r)
        self.bytes = Counter("stickyip_feed_bytes_sent", "bytes written to followers",
                             registry=r)
        self.requests = Counter("stickyip_feed_requests", "follower requests by outcome",
                                ["outcome"], registry=r)
        self.dropped = Counter("stickyip_feed_slow_followers_dropped",
                               "followers disconnected because they fell too far behind",
                               registry=r)
        self.store_snapshots = Counter("stickyip_feed_store_snapshots",
                                       "snapshots the feed read from the store", registry=r)


class _Client(asyncio.Protocol):
    """One follower's connection: reads its request line, then only writes."""

    def __init__(self, server: FeedServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.request: wire.Request | None = None
        #: the last revision written to this follower (None: not subscribed yet)
        self.position: int | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.clients.add(self)
        self.server.metrics.clients.set(len(self.server.clients))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.clients.discard(self)
        self.server.metrics.clients.set(len(self.server.clients))

    def data_received(self, data: bytes) -> None:
        if self.request is not None:
            return  # followers send one line only
        self.buf += data
        if b"\n" not in self.buf:
            if len(self.buf) > 4096:
                self.close()
            return
        line, _, _ = self.buf.partition(b"\n")
        self.buf = b""
        try:
            self.request = wire.decode_request(line)
        except wire.WireError as e:
            self.server.metrics.requests.labels("malformed").inc()
            self.send(wire.encode_gap(str(e)), "gap")
            self.close()
            return
        self.server.answer(self)

    def send(self, frame: bytes, kind: str) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.write(frame)
        m = self.server.metrics
        m.frames.labels(kind).inc()
        m.bytes.inc(len(frame))

    def backlog(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport else 0

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()


class FeedServer:
    """One replica of the tier: follows ``source`` (the store) and serves followers on
    ``host:port``; ``/healthz`` and ``/metrics`` on ``status_port`` (0: off).

    ``history``: change batches kept for followers that reconnect; ``max_backlog``:
    bytes queued for one follower before it is dropped (it reconnects and resumes);
    ``ping_interval``: seconds between pings on an idle connection.
    """

    def __init__(self, source: ChangeSource, *, peers: PeerSource | None = None,
                 host: str = "0.0.0.0", port: int = 7470, status_host: str = "0.0.0.0",
                 status_port: int = 0, history: int = 10_000,
                 max_backlog: int = 32 << 20, ping_interval: float = 20.0,
                 block_ms: int = 30_000, wait_ahead: float = 5.0,
                 unix_path: str = "", resnapshot_spread: float = 0.5) -> None:
        self.metrics = FeedMetrics()
        self.follower = Follower(source, on_update=self._on_update, block_ms=block_ms,
                                 resnapshot_spread=resnapshot_spread, name="feed")
        self.peer_source = peers
        self.host, self.port = host, port
        #: also (or, with port -1, only) listen on this unix socket
        self.unix_path = unix_path
        self.status_host, self.status_port = status_host, status_port
        self.history = history
        self.max_backlog = max_backlog
        self.ping_interval = ping_interval
        self.wait_ahead = wait_ahead
        self.clients: set[_Client] = set()
        #: (revision, encoded frame) of the last ``history`` batches
        self.ring: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=history)
        self.peers: wire.Peers = {}
        self._snap_cache: tuple[int, bytes] | None = None
        self._server: asyncio.Server | None = None
        self._unix: asyncio.Server | None = None
        self._status: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._answering: set[asyncio.Task[None]] = set()
        self._advanced = asyncio.Event()
        self._last_sent = time.monotonic()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.peer_source is not None:
            self.peers = await self.peer_source.start(self._on_peers)
        self._tasks = [asyncio.create_task(self.follower.run(), name="feed-follow"),
                       asyncio.create_task(self._pinger(), name="feed-ping")]
        loop = asyncio.get_running_loop()
        if self.port >= 0:
            self._server = await loop.create_server(lambda: _Client(self), self.host,
                                                    self.port, reuse_address=True)
            if self.port == 0:
                self.port = self._server.sockets[0].getsockname()[1]
        if self.unix_path:
            self._unix = await loop.create_unix_server(lambda: _Client(self), self.unix_path)
        if self.status_port:
            self._status = await serve_status(
                self.status_host, self.status_port, metrics=self._metrics_page,
                healthz=self._healthz, livez=self._livez)
        log.info("feed listening", extra={"port": self.port, "status_port": self.status_port})

    async def stop(self) -> None:
        for t in self._tasks:
            await cancel(t)
        for server in (self._server, self._unix):
            if server is not None:
                server.close()
        for c in list(self.clients):
            c.close()
        for server in (self._server, self._unix):
            if server is not None:
                await server.wait_closed()
        if self._status is not None:
            await self._status.cleanup()
        if self.peer_source is not None:
            await self.peer_source.stop()
        await self.follower.source.aclose()

    def ready(self) -> bool:
        return self.follower.ready.is_set() and self.follower.healthy

    async def _healthz(self, _: web.Request) -> web.Response:
        ok = self.ready()
        body = {"ok": ok, "revision": self.follower.revision, "clients": len(self.clients),
                "identity": self.follower.identity}
        return web.json_response(body, status=200 if ok else 503)

    async def _livez(self, _: web.Request) -> web.Response:
        """Liveness without the store: the follower and the pinger still run (a store
        outage makes the feed unready, it must not restart every replica)."""
        alive = all(not t.done() for t in self._tasks)
        return web.json_response({"ok": alive}, status=200 if alive else 503)

    async def _metrics_page(self, _: web.Request) -> web.Response:
        self.metrics.ready.set(1 if self.ready() else 0)
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    # ------------------------------------------------------------- the store side

    def _on_update(self, u: Update) -> None:
        self.metrics.revision.set(u.view.revision)
        if u.fresh:
            self.metrics.store_snapshots.inc()
            self._snap_cache = None
            self.ring.clear()
            if u.reason != "start":
                # the followers' positions cannot be bridged: each takes a snapshot
                for c in list(self.clients):
                    if c.position is not None:
                        self._gap(c, u.reason, "resnapshot")
        else:
            for batch in u.batches:
                frame = wire.encode_batch(batch)
                self.ring.append((batch.revision, frame))
                self.metrics.batches.inc()
                self._fan_out(frame, batch.revision, "ch")
        self._advanced.set()
        self._advanced = asyncio.Event()

    def _fan_out(self, frame: bytes, revision: int, kind: str) -> None:
        self._last_sent = time.monotonic()
        for c in list(self.clients):
            if c.position is None or c.closed:
                continue
            if c.backlog() > self.max_backlog:
                self.metrics.dropped.inc()
                log.info("dropping a follower that fell behind",
                         extra={"node": c.request.node if c.request else "",
                                "revision": c.position})
                c.close()
                continue
            c.send(frame, kind)
            if revision:
                c.position = revision

    def _on_peers(self, set_: wire.Peers, deleted: list[str]) -> None:
        for node, fam in set_.items():
            self.peers[node] = dict(fam)
        for node in deleted:
            self.peers.pop(node, None)
        self._snap_cache = None
        self._fan_out(wire.encode_peer_update(set_, deleted), 0, "peers")

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval / 2)
            if time.monotonic() - self._last_sent >= self.ping_interval:
                self._fan_out(wire.encode_ping(self.follower.revision), 0, "ping")

    # ----------------------------------------------------------- the follower side

    def _gap(self, c: _Client, reason: str, outcome: str) -> None:
        self.metrics.requests.labels(outcome).inc()
        c.send(wire.encode_gap(reason), "gap")
        c.close()

    def _snapshot_frame(self, view: RoutingSnapshot) -> tuple[int, bytes]:
        """The cached snapshot frame, re-encoded when the ring no longer reaches back to
        it or it is older than a quarter of the ring."""
        cached = self._snap_cache
        oldest = self.ring[0][0] if self.ring else view.revision + 1
        if cached is None or cached[0] < oldest - 1 or (
                view.revision - cached[0] > max(1, self.history // 4)):
            cached = (view.revision, wire.encode_snapshot(view, self.peers))
            self._snap_cache = cached
        return cached

    def answer(self, c: _Client) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(c))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, c: _Client) -> None:
        req = c.request
        assert req is not None
        await self.follower.ready.wait()
        view = self.follower.view
        assert view is not None
        if c.closed:
            return
        if req.snapshot:
            rev, frame = self._snapshot_frame(view)
            c.send(frame, "snap")
            self._subscribe(c, rev)
            self.metrics.requests.labels("snapshot").inc()
            return
        if req.identity != view.identity:
            self._gap(c, f"the store's identity changed ({req.identity} -> "
                         f"{view.identity}): restart or failover", "identity")
            return
        if req.after > view.revision:
            # a replica behind the one the follower left: wait for it to catch up
            deadline = time.monotonic() + self.wait_ahead
            while self.follower.revision < req.after and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        await self._advanced.wait()
            view = self.follower.view
            if view is None or view.identity != req.identity or req.after > view.revision:
                self._gap(c, f"the feed is behind revision {req.after}", "behind")
                return
        if c.closed:
            return
        oldest = self.ring[0][0] if self.ring else view.revision + 1
        if req.after < oldest - 1:
            self._gap(c, f"the feed's history no longer holds revision {req.after + 1} "
                         "(trimmed)", "trimmed")
            return
        self._subscribe(c, req.after)
        self.metrics.requests.labels("resume").inc()

    def _subscribe(self, c: _Client, after: int) -> None:
        """Send the ring's batches after ``after``, then every new one (no await in
        between, so nothing is missed or sent twice)."""
        for rev, frame in self.ring:
            if rev > after:
                c.send(frame, "ch")
        c.position = max(after, self.follower.revision)


class FeedSource:
    """A follower's side of the feed: a :class:`ipam.follow.ChangeSource` over one TCP
    connection to a replica (``addresses``: ``HOST:PORT`` entries, one picked at random
    per connection; a Kubernetes Service is one entry).

    ``on_peers`` is told of node address changes as they arrive; :attr:`peers` holds
    the node addresses of the last snapshot with every update applied.
    ``silence``: seconds without any frame (the tier pings idle connections) after
    which the connection is taken for dead and opened again. ``owners``: the
    reservations whose re-homes this follower needs (an agent: those it serves);
    others are skipped unread (None: all).
    """

    def __init__(self, addresses: Sequence[str], *, node: str = "",
                 on_peers: Callable[[wire.Peers, list[str]], None] | None = None,
                 owners: Callable[[str], bool] | None = None,
                 silence: float = 90.0, connect_timeout: float = 5.0,
                 rng: random.Random | None = None) -> None:
        if not addresses:
            raise ValueError("the feed needs at least one HOST:PORT address")
        self.addresses = [wire.parse_address(a) for a in addresses]
        self.node = node
        self.on_peers = on_peers
        self.owners = owners
        self.silence = silence
        self.connect_timeout = connect_timeout
        self.rng = rng or random.Random()
        self.peers: wire.Peers = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        #: the revision the open connection has delivered up to
        self._position: int | None = None
        self._identity = ""
        self._last_frame = 0.0

    async def _connect(self, req: wire.Request) -> None:
        await self._disconnect()
        where = self.rng.choice(self.addresses)
        try:
            async with asyncio.timeout(self.connect_timeout):
                if isinstance(where, str):
                    reader, writer = await asyncio.open_unix_connection(where,
                                                                        limit=LINE_LIMIT)
                else:
                    reader, writer = await asyncio.open_connection(*where, limit=LINE_LIMIT)
            writer.write(req.encode())
            await writer.drain()
        except (OSError, TimeoutError) as e:
            raise StoreUnavailable(f"cannot reach the feed at {where}: {e}") from e
        self._reader, self._writer = reader, writer
        self._last_frame = time.monotonic()

    async def _disconnect(self) -> None:
        w, self._writer, self._reader, self._position = self._writer, None, None, None
        if w is not None:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()

    async def _frame(self, wait: float) -> dict[str, Any] | None:
        """The next frame, or None when none came within ``wait`` seconds."""
        assert self._reader is not None
        try:
            async with asyncio.timeout(wait):
                line = await self._reader.readline()
        except TimeoutError:
            if time.monotonic() - self._last_frame > self.silence:
                await self._disconnect()
                raise StoreUnavailable(f"the feed sent nothing for {self.silence:.0f} s") \
                    from None
            return None
        except (OSError, ValueError) as e:  # ValueError: a line over the limit
            await self._disconnect()
            raise StoreUnavailable(f"reading the feed failed: {e}") from e
        if not line:
            await self._disconnect()
            raise StoreUnavailable("the feed closed the connection")
        self._last_frame = time.monotonic()
        try:
            return wire.decode_frame(line)
        except wire.WireError as e:
            await self._disconnect()
            raise StoreUnavailable(f"the feed sent {e}") from e

    def _peers(self, d: dict[str, Any]) -> None:
        set_ = wire.decode_peers(d.get("set", {}))
        deleted = [str(n) for n in d.get("del", ())]
        for node, fam in set_.items():
            self.peers[node] = fam
        for node in deleted:
            self.peers.pop(node, None)
        if self.on_peers is not None:
            self.on_peers(set_, deleted)

    async def snapshot(self) -> RoutingSnapshot:
        await self._connect(wire.Request(snapshot=True, node=self.node))
        while True:
            d = await self._frame(self.silence)
            if d is None:
                continue
            if d["t"] == "snap":
                snap, peers = wire.decode_snapshot(d)
                self._position, self._identity = snap.revision, snap.identity
                changed = {n: a for n, a in peers.items() if self.peers.get(n) != a}
                gone = [n for n in self.peers if n not in peers]
                self.peers = peers
                if (changed or gone) and self.on_peers is not None:
                    self.on_peers(changed, gone)
                return snap
            if d["t"] == "gap":
                await self._disconnect()
                raise StoreUnavailable(f"the feed refused a snapshot: {d.get('reason')}")

    async def changes(self, after: int, *, identity: str,
                      block_ms: int) -> list[ChangeBatch] | Gap:
        if self._reader is None or self._position != after or self._identity != identity:
            await self._connect(wire.Request(snapshot=False, after=after, identity=identity,
                                             node=self.node))
            self._position, self._identity = after, identity
        # Wait up to block_ms for a frame; after a batch, take the batches whose lines
        # are already buffered (one update for a burst), without waiting for more.
        deadline = time.monotonic() + block_ms / 1000
        out: list[ChangeBatch] = []
        while True:
            if out:
                line = self._buffered_line()
                if line is None:
                    return out
                d = self._decode(line)
            else:
                got = await self._frame(max(0.0, deadline - time.monotonic()))
                if got is None:
                    return []
                d = got
            t = d["t"]
            if t == "ch":
                batch = wire.decode_batch(d, self.owners)
                self._position = batch.revision
                out.append(batch)
            elif t == "peers":
                self._peers(d)
            elif t == "gap":
                await self._disconnect()
                if out:
                    return out  # the next read asks again from the new position
                return Gap(after=after, reason=str(d.get("reason", "")))
            elif t == "snap":  # never sent on a resume
                await self._disconnect()
                return Gap(after=after, reason="the feed sent a snapshot on a resume")
            elif not out and time.monotonic() >= deadline:
                return []

    def _buffered_line(self) -> bytes | None:
        """A whole line the reader already holds, or None — without waiting. (The
        stream reader has no public peek; redis-py reads its buffer the same way.)"""
        r = self._reader
        buf: bytearray | None = getattr(r, "_buffer", None)
        if r is None or buf is None:
            return None
        end = buf.find(b"\n")
        if end < 0:
            return None
        line = bytes(buf[:end + 1])
        del buf[:end + 1]
        r._maybe_resume_transport()  # type: ignore[attr-defined]
        return line

    def _decode(self, line: bytes) -> dict[str, Any]:
        self._last_frame = time.monotonic()
        return wire.decode_frame(line)

    async def aclose(self) -> None:
        await self._disconnect()
