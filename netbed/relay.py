"""Loopback relays: a server on this process's 127.0.0.1:PORT made reachable as
127.0.0.1:PORT inside node namespaces, as a real node reaches its API server (the
agents' Kubernetes feed uses it). :class:`LoopbackRelay` runs in the caller's event
loop; :class:`ThreadedRelay` runs one in its own thread for callers that block."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

from datapath.netlink import entered_netns


def listen_in_netns(netns_path: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket bound inside the namespace at ``netns_path``."""
    with entered_netns(netns_path):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(128)
        s.setblocking(False)
        return s


class LoopbackRelay:
    def __init__(self, port: int) -> None:
        self.port = port
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def add_netns(self, netns_path: str) -> None:
        sock = listen_in_netns(netns_path, "127.0.0.1", self.port)
        self._servers.append(await asyncio.start_server(self._client, sock=sock))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
        except asyncio.CancelledError:
            # Closing the relay: end this connection quietly (a handler task that ends
            # cancelled makes asyncio's stream server log an error).
            up_w.close()
            writer.close()
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        for srv in self._servers:
            srv.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._servers.clear()


class ThreadedRelay:
    """A :class:`LoopbackRelay` on its own event loop thread, usable from code that
    blocks its own loop (synchronous API clients, subprocess reads)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.relay = LoopbackRelay(port)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name=f"relay-{port}")
        self._thread.start()

    def add_netns(self, netns_path: str) -> None:
        asyncio.run_coroutine_threadsafe(self.relay.add_netns(netns_path),
                                         self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.relay.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    except OSError:
        pass
    finally:
        w.close()
