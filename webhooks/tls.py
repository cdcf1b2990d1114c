"""The serving TLS context (TLS 1.2+) and its reload when the cert or key file
changes: new handshakes get the new pair, open connections keep theirs."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable

from webhooks.errors import CertificateError

log = logging.getLogger("stickyip.webhooks.tls")

FileStamp = tuple[int, int, int, int]


def _stamp(path: str) -> FileStamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


def load_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context for ``cert_file``/``key_file``; refuses TLS < 1.2."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise CertificateError(f"cannot load certificate {cert_file!r} with key "
                               f"{key_file!r}: {e}") from e
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class ReloadingContext:
    """The context handed to the server. Its SNI callback (called for every
    ClientHello, with or without SNI) switches each new connection to the most
    recently loaded pair, so swapping the pair never touches open connections."""

    def __init__(self, cert_file: str, key_file: str, *,
                 on_reload: Callable[[bool], None] | None = None) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.on_reload = on_reload
        self._stamps = self._read_stamps()
        self._failed: tuple[FileStamp | None, FileStamp | None] | None = None
        self.current = load_context(cert_file, key_file)
        self.server_context = load_context(cert_file, key_file)
        self.server_context.sni_callback = self._pick

    def _pick(self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
              ctx: ssl.SSLContext) -> None:
        if ctx is not self.current:
            sslobj.context = self.current

    def _read_stamps(self) -> tuple[FileStamp | None, FileStamp | None]:
        return _stamp(self.cert_file), _stamp(self.key_file)

    def check(self) -> bool:
        """Reload when either file changed since the last load. True when reloaded;
        a pair that does not load (e.g. half-written) keeps the old one served."""
        stamps = self._read_stamps()
        if stamps == self._stamps:
            return False
        try:
            fresh = load_context(self.cert_file, self.key_file)
        except CertificateError as e:
            if stamps != self._failed:  # say it once per broken pair, not every interval
                self._failed = stamps
                log.warning("certificate reload failed; serving the previous pair",
                            extra={"reason": str(e)})
                if self.on_reload:
                    self.on_reload(False)
            return False
        self.current = fresh
        self._stamps = stamps
        log.info("certificate reloaded", extra={"cert": self.cert_file})
        if self.on_reload:
            self.on_reload(True)
        return True

    async def watch(self, interval: float) -> None:
        """Check the files every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.check()
            except Exception:
                log.exception("certificate check failed")
