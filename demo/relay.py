"""Makes the API stand-in (on the demo's 127.0.0.1:PORT) reachable as 127.0.0.1:PORT
inside each node's network namespace, as a real node reaches its API server: the node
agents' Kubernetes feed (Services, EndpointSlices, pods, NetworkPolicies) uses it."""

from __future__ import annotations

import asyncio
import contextlib
import socket

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


async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    except OSError:
        pass
    finally:
        w.close()
