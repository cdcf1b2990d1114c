"""plumbing.redact: Redis and Sentinel URLs lose their passwords wherever they are
shown, and every log line is scrubbed (message, extra fields, traceback)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from plumbing import logs
from plumbing.redact import one_line, redact_url, scrub

SECRET = "s3cr3t-Pw"


@pytest.mark.parametrize(("url", "shown"), [
    (f"redis://:{SECRET}@10.0.0.1:6379/0", "redis://***@10.0.0.1:6379/0"),
    (f"rediss://app:{SECRET}@redis:6380/1", "rediss://***@redis:6380/1"),
    (f"redis://:{SECRET}@@ss@redis:6379", "redis://***@redis:6379"),  # '@' in a password
    (f"redis+sentinel://:{SECRET}@h1:26379,h2:26379/mymaster/2?sentinel_password={SECRET}&x=1",
     "redis+sentinel://***@h1:26379,h2:26379/mymaster/2?sentinel_password=***&x=1"),
    (f"unix:///run/redis.sock?db=0&password={SECRET}", "unix:///run/redis.sock?db=0&password=***"),
    ("redis://redis:6379/0", "redis://redis:6379/0"),
])
def test_urls_lose_their_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert scrub(f"cannot reach {url} (refused)") == f"cannot reach {shown} (refused)"
    assert redact_url(redact_url(url)) == shown, "redacting twice changes nothing"


def test_reprs_headers_and_parameters_lose_their_values() -> None:
    text = (f"Authorization: Bearer {SECRET} {{'password': '{SECRET}', 'sentinel_password': "
            f"'{SECRET}'}} token={SECRET} client_secret: {SECRET}")
    assert SECRET not in scrub(text)
    assert "tokens=5 retries" in scrub("tokens=5 retries"), "no false alarm on look-alikes"


def test_one_line_is_short_and_scrubbed() -> None:
    text = one_line(f"a\nmultiline   redis://:{SECRET}@h:1 " + "x" * 500)
    assert "\n" not in text and SECRET not in text and len(text) == 300


@pytest.mark.parametrize("json_logs", [True, False])
def test_log_lines_are_scrubbed(json_logs: bool) -> None:
    logs.setup("debug", json_logs=json_logs)
    root = logging.getLogger()
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    log = logging.getLogger("stickyip.test")
    url = f"redis://:{SECRET}@redis:6379/0"
    log.info("store at %s", url, extra={"store": url, "nested": {"url": url}})
    try:
        raise ConnectionError(f"cannot reach {url}")
    except ConnectionError:
        log.exception("failed")
    out = stream.getvalue()
    assert SECRET not in out
    assert "redis://***@redis:6379/0" in out
    if json_logs:
        first = json.loads(out.splitlines()[0])
        assert first["store"] == "redis://***@redis:6379/0"
