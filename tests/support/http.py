"""A tiny HTTP client for the metrics and health endpoint, over TCP or a unix socket."""

from __future__ import annotations

import socket


def http_get(listen: str, path: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET ``path`` from the endpoint at ``listen`` (host:port or unix:PATH): (status, body)."""
    if listen.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(listen.removeprefix("unix:"))
    else:
        host, _, port = listen.rpartition(":")
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    with sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: kvmrec\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()
