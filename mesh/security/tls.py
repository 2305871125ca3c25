"""TLS credentials from PEM files: a server's (optionally requiring client certificates) and a
client channel's. A file that cannot be read is a ``TlsError`` naming the setting, never the
file's content."""

from __future__ import annotations

import grpc


class TlsError(ValueError):
    """A certificate or key file named by a setting cannot be read."""


def read_pem(path: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise TlsError(f"{setting}={path}: {exc.strerror or exc}") from exc
    if b"-----BEGIN" not in data:
        raise TlsError(f"{setting}={path}: not a PEM file")
    return data


def server_credentials(
    cert_file: str, key_file: str, client_ca_file: str
) -> grpc.ServerCredentials:
    """TLS with the server's certificate chain and key; with ``client_ca_file``, every client
    must present a certificate that CA signed (grpc's Python API cannot make one optional)."""
    chain = read_pem(cert_file, "TLS_CERT_FILE")
    key = read_pem(key_file, "TLS_KEY_FILE")
    if not client_ca_file:
        return grpc.ssl_server_credentials([(key, chain)])
    roots = read_pem(client_ca_file, "TLS_CLIENT_CA_FILE")
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=roots, require_client_auth=True
    )


def channel_credentials(
    ca_file: str = "", cert_file: str = "", key_file: str = "", *, prefix: str = ""
) -> grpc.ChannelCredentials:
    """A client's TLS: the server's CA (the system's roots when empty) and, for mutual TLS, the
    client's certificate chain and key. ``prefix`` names the settings in errors."""
    if bool(cert_file) != bool(key_file):
        raise TlsError(f"set both {prefix}CERT_FILE and {prefix}KEY_FILE, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca_file, f"{prefix}CA_FILE") if ca_file else None,
        private_key=read_pem(key_file, f"{prefix}KEY_FILE") if key_file else None,
        certificate_chain=read_pem(cert_file, f"{prefix}CERT_FILE") if cert_file else None,
    )
