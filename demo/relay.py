"""Makes the API stand-in (on the demo's 127.0.0.1:PORT) reachable as 127.0.0.1:PORT
inside each node's network namespace, as a real node reaches its API server: the node
agents' Kubernetes feed (Services, EndpointSlices, pods, NetworkPolicies) uses it."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def listen_in_netns(netns_path: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket bound inside the namespace at ``netns_path``; only the
    calling thread enters it, and only for socket() and bind()."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        try:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(128)
            s.setblocking(False)
            return s
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:  # cannot go back: do not go on
                os.abort()
    finally:
        os.close(target)
        os.close(own)


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
