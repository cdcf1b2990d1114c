"""An https:// API server is verified against STICKYIP_KUBE_CA_FILE (or the system
bundle) and gets the bearer token of STICKYIP_KUBE_TOKEN_FILE; a server the CA did not
sign is refused with a line that says so. Real TLS on loopback (a trustme CA)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from plumbing.kube.client import KubeSettings, api_client
from plumbing.kube.errors import Unavailable
from plumbing.kube.rest import RestClient


@pytest.fixture
async def https_api(tmp_path: Path) -> AsyncIterator[tuple[str, str, list[str]]]:
    """(url, CA file, Authorization headers received) of an HTTPS /version server."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    seen: list[str] = []

    async def version(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"major": "1", "minor": "31", "gitVersion": "v1.31.0"})

    app = web.Application()
    app.router.add_get("/version", version)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}", str(ca_file), seen
    finally:
        await runner.cleanup()


def version(settings: KubeSettings) -> dict[str, str]:
    rest = RestClient(api_client(settings), timeout=5)
    try:
        return rest.get("/version")
    finally:
        rest.api.close()  # type: ignore[no-untyped-call]


async def test_the_ca_file_verifies_the_server_and_the_token_is_sent(
        https_api: tuple[str, str, list[str]], tmp_path: Path) -> None:
    url, ca_file, seen = https_api
    token = tmp_path / "token"
    token.write_text("tok-123\n")
    answer = await asyncio.to_thread(version, KubeSettings(
        kube_host=url, kube_ca_file=ca_file, kube_token_file=str(token)))
    assert answer["gitVersion"] == "v1.31.0"
    assert seen == ["Bearer tok-123"]


async def test_without_the_ca_the_server_is_refused_not_trusted(
        https_api: tuple[str, str, list[str]]) -> None:
    url, _, seen = https_api
    with pytest.raises(Unavailable) as info:
        await asyncio.to_thread(version, KubeSettings(kube_host=url))  # system bundle
    assert "TLS verification of the API server failed" in str(info.value)
    assert "\n" not in str(info.value)
    assert seen == [], "no request reached a server that was not verified"


async def test_another_ca_does_not_verify_the_server(
        https_api: tuple[str, str, list[str]], tmp_path: Path) -> None:
    url, _, seen = https_api
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    with pytest.raises(Unavailable, match="TLS verification of the API server failed"):
        await asyncio.to_thread(version, KubeSettings(kube_host=url, kube_ca_file=str(other)))
    assert seen == []
