"""The serving certificate is reloaded when its files change: new connections get
the new pair, open keep-alive connections and in-flight requests carry on with the
old one, a half-written pair is not served, and TLS below 1.2 is refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from pathlib import Path

import pytest

from ipam import PoolSpec, RedisIpam
from tests.support.admission import (
    Certs,
    Client,
    der,
    live_webhook,
    review,
    statefulset,
    statefulset_pod,
)


class Conn:
    """One raw keep-alive HTTPS connection, so the test knows it is the same socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, ctx: ssl.SSLContext) -> Conn:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        return cls(r, w)

    def peer(self) -> bytes:
        cert: bytes = self.writer.get_extra_info("ssl_object").getpeercert(True)
        return cert

    def send_head(self, method: str, path: str, length: int = 0) -> None:
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
                          "Connection: keep-alive\r\n\r\n".encode())

    async def answer(self) -> tuple[int, bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(x.split(":")[1]) for x in lines if x.lower().startswith(
            "content-length:"))
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await self.writer.wait_closed()


async def served_cert(port: int, ctx: ssl.SSLContext) -> bytes:
    conn = await Conn.open(port, ctx)
    try:
        return conn.peer()
    finally:
        await conn.close()


async def wait_for_cert(port: int, ctx: ssl.SSLContext, want: bytes) -> None:
    for _ in range(400):  # the server checks every 50 ms; allow it 20 s on a busy box
        if await served_cert(port, ctx) == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the new certificate was never served")


async def reload_failures(client: Client) -> float:
    _, text = await client.get("/metrics")
    for line in text.splitlines():
        if line.startswith('stickyip_webhook_cert_reloads_total{result="failed"}'):
            return float(line.split()[-1])
    return 0.0


async def test_reload_keeps_open_connections_and_in_flight_requests(
        ipam: RedisIpam, tmp_path: Path) -> None:
    await ipam.apply_pool(PoolSpec(name="default", cidr="10.30.0.0/24", block_size=28))
    async with live_webhook(ipam, str(tmp_path)) as (server, _client, certs):
        ctx = certs.client_context()
        first = await served_cert(server.port, ctx)
        old = await Conn.open(server.port, ctx)
        old.send_head("GET", "/healthz")
        assert (await old.answer())[0] == 200
        # A request in flight: headers and half of the body sent.
        body = json.dumps(review(statefulset_pod(statefulset("web"), 0))).encode()
        old.send_head("POST", "/mutate-pods", len(body))
        old.writer.write(body[: len(body) // 2])
        await old.writer.drain()

        second = certs.rotate()
        assert second != first
        await wait_for_cert(server.port, ctx, second)

        old.writer.write(body[len(body) // 2:])
        status, raw = await old.answer()
        assert status == 200 and json.loads(raw)["response"]["allowed"] is True
        old.send_head("GET", "/healthz")
        assert (await old.answer())[0] == 200
        assert old.peer() == first
        await old.close()


async def test_half_written_pair_is_not_served(ipam: RedisIpam, tmp_path: Path) -> None:
    async with live_webhook(ipam, str(tmp_path)) as (server, client, certs):
        ctx = certs.client_context()
        current = await served_cert(server.port, ctx)
        leaf = certs.issue()
        certs.install(leaf, key=False)  # the certificate lands before its key
        for _ in range(400):
            if await reload_failures(client) >= 1:
                break
            await asyncio.sleep(0.05)
        assert await reload_failures(client) >= 1
        assert await served_cert(server.port, ctx) == current
        certs.install(leaf, cert=False)
        await wait_for_cert(server.port, ctx, der(leaf))
        assert (await client.get("/healthz"))[0] == 200


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
async def test_tls_below_1_2_is_refused(ipam: RedisIpam, tmp_path: Path) -> None:
    async with live_webhook(ipam, str(tmp_path)) as (server, _, certs):
        ctx = certs.client_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        assert len(await served_cert(server.port, ctx)) > 0
        ctx = certs.client_context()
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await served_cert(server.port, ctx)


def test_certs_helper_writes_a_matching_pair(tmp_path: Path) -> None:
    """The helper the reload tests rely on: the pair on disk loads, and a pair whose
    key belongs to another certificate does not (so a reload of one is refused)."""
    certs = Certs(str(tmp_path))
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certs.cert_file, certs.key_file)
    other = certs.issue()
    certs.install(other, cert=False)  # a key that matches no certificate on disk
    with pytest.raises(ssl.SSLError):
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certs.cert_file,
                                                                certs.key_file)
    certs.install(other, key=False)
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certs.cert_file, certs.key_file)
    assert certs.rotate() != der(other)
