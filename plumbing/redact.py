"""Keeping secrets out of what people and log collectors see: passwords and tokens
are removed from URLs (``redis://:PASSWORD@``, ``rediss://user:PASSWORD@``,
``redis+sentinel://...?sentinel_password=...``), Authorization values and
``password=``/``token=`` parameters before any text is printed, logged or served."""

from __future__ import annotations

import re

MASK = "***"

# Greedy up to the last '@' before the host: a password may itself contain '@'.
_USERINFO = re.compile(r"(?<=://)[^/\s\"'<>]*@")
_AUTH_HEADER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
#: ``password=``, ``sentinel_password=``, ``access_token=``, ``client_secret=``, ...
#: in query strings, reprs and messages (``key=value`` and ``key: value``).
_SECRET_PARAM = re.compile(
    r"(?i)(\b\w*(?:password|passwd|token|secret)['\"]?\s*[=:]\s*['\"]?)([^&\s'\",;)>]+)")


def scrub(text: str) -> str:
    """``text`` with every credential replaced by ``***`` (layout kept, newlines too)."""
    if "://" in text:
        text = _USERINFO.sub(MASK + "@", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _SECRET_PARAM.sub(lambda m: m.group(1) + MASK, text)


def one_line(text: str, *, limit: int = 300) -> str:
    """``text`` scrubbed, on one line, at most ``limit`` characters long."""
    text = scrub(" ".join(text.split()))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def redact_url(url: str) -> str:
    """A store or API URL as it may be shown: user name and password, and secret query
    parameters, replaced by ``***`` (``redis://***@redis:6379/0``)."""
    return scrub(url)
