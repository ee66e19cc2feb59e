"""One watch of etcd's JSON gateway (``/v3/watch``) on a connection of its own.

The gateway streams a watch as one JSON message a line; ``WatchStream`` yields them
decoded as they arrive. Supervising it (read timeouts, compaction, reconnection) is the
caller's job: store/etcd/watch.py.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .gateway import EtcdError, EtcdUnavailable, Gateway, KeyValue, encode, prefix_end


@dataclass(frozen=True)
class WatchEvent:
    type: str  # "PUT" | "DELETE"
    kv: KeyValue


@dataclass(frozen=True)
class WatchMessage:
    """One message of a watch: events, or a notice (created, progress, canceled)."""

    revision: int
    events: Sequence[WatchEvent]
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    reason: str = ""


class WatchStream:
    """One watch on its own connection. Iterating yields messages until the stream ends;
    ``socket.timeout`` (TimeoutError) when nothing arrived for ``timeout`` seconds, and
    EtcdUnavailable when the connection drops. ``close`` from another thread ends it."""

    def __init__(
        self,
        gateway: Gateway,
        key: bytes,
        *,
        prefix: bool,
        start_revision: int,
        timeout: float,
    ) -> None:
        self._gateway = gateway
        request: dict[str, Any] = {"key": encode(key), "progress_notify": True}
        if prefix:
            request["range_end"] = encode(prefix_end(key))
        if start_revision:
            request["start_revision"] = str(start_revision)
        self._body = json.dumps({"create_request": request}).encode()
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None
        self._sock: socket.socket | None = None

    def open(self) -> None:
        last: Exception | None = None
        for host, port in self._gateway.endpoints:
            conn = http.client.HTTPConnection(host, port, timeout=self._timeout)
            try:
                conn.request("POST", "/v3/watch", self._body)
                sock = conn.sock  # the connection forgets it if the response closes it
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                last = exc
                continue
            if response.status != 200:
                conn.close()
                last = EtcdError(f"watch refused: HTTP {response.status}")
                continue
            self._conn, self._response, self._sock = conn, response, sock
            return
        raise EtcdUnavailable(f"cannot watch: {last}") from last

    def close(self) -> None:
        conn, response, sock = self._conn, self._response, self._sock
        self._conn, self._response, self._sock = None, None, None
        # The socket first: a reader blocked in readline() holds the response's buffer
        # lock until its recv returns, so closing the response first would wait for the
        # next message or the read timeout.
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if response is not None:
            response.close()  # its file holds the socket open otherwise
        if conn is not None:
            conn.close()

    def __iter__(self) -> Iterator[WatchMessage]:
        if self._response is None:
            self.open()
        while True:
            response = self._response
            if response is None:
                return
            try:
                line = response.readline()
            except TimeoutError:
                raise
            except (OSError, http.client.HTTPException, ValueError, AttributeError) as exc:
                # AttributeError: http.client, on a chunked stream cut mid-chunk
                raise EtcdUnavailable(f"watch connection lost: {exc!r}") from exc
            if not line:
                if self._response is None:
                    return  # closed by us
                raise EtcdUnavailable("watch connection closed by etcd")
            if not line.strip():
                continue
            yield _watch_message(json.loads(line))


def _watch_message(data: Mapping[str, Any]) -> WatchMessage:
    if "error" in data:
        error = data["error"]
        raise EtcdUnavailable(f"watch failed: {error.get('message', error)}", error.get("code"))
    result = data.get("result", {})
    events = [
        WatchEvent(event.get("type", "PUT"), KeyValue.from_json(event.get("kv", {})))
        for event in result.get("events", ())
    ]
    return WatchMessage(
        revision=int(result.get("header", {}).get("revision", 0)),
        events=events,
        created=bool(result.get("created", False)),
        canceled=bool(result.get("canceled", False)),
        compact_revision=int(result.get("compact_revision", 0)),
        reason=str(result.get("cancel_reason", "")),
    )
