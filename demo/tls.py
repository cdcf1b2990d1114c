"""A throw-away CA and the webhook's serving certificate (``trustme``), as files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from demo.errors import ComponentFailed


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_webhook_pair(directory: Path, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
                      ) -> TlsFiles:
    try:
        import trustme
    except ImportError as e:
        raise ComponentFailed("the 'trustme' package is missing (run 'make setup', which "
                              "installs the dev extras)") from e
    ca = trustme.CA(organization_name="stickyip demo CA")
    leaf = ca.issue_cert(*hosts)
    files = TlsFiles(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    ca.cert_pem.write_to_path(str(files.ca))
    leaf.private_key_pem.write_to_path(str(files.key))
    with open(files.cert, "wb") as f:
        for blob in leaf.cert_chain_pems:
            f.write(blob.bytes())
    files.key.chmod(0o600)
    return files
