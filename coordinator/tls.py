"""TLS for the coordinator's server and its clients. Plaintext is allowed only on
loopback, or when the operator says `--insecure`."""

from __future__ import annotations

from pathlib import Path

import grpc

from helium.net import is_loopback

__all__ = ["client_credentials", "is_loopback", "server_credentials"]


def server_credentials(host: str, cert: Path | None, key: Path | None, insecure: bool):
    """Server credentials, or None for plaintext (refused off loopback without `insecure`)."""
    if cert or key:
        if not (cert and key):
            raise ValueError("--tls-cert and --tls-key go together")
        return grpc.ssl_server_credentials([(Path(key).read_bytes(), Path(cert).read_bytes())])
    if not (is_loopback(host) or insecure):
        raise ValueError(f"refusing plaintext on {host}: give --tls-cert/--tls-key, or --insecure")
    return None


def client_credentials(target: str, ca: Path | None, insecure: bool):
    """Channel credentials for `target`, or None for plaintext (loopback or `insecure`)."""
    if ca:
        return grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes())
    host = target.rsplit(":", 1)[0]
    if not (is_loopback(host) or insecure):
        raise ValueError(f"refusing plaintext to {target}: give --tls-ca, or --insecure")
    return None
