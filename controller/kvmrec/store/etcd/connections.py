"""Keep-alive HTTP connections to etcd's endpoints, shared by threads.

A request borrows an idle connection to its endpoint (or opens one) and gives it back when
the answer is read, so a few connections serve every thread and ``close`` reaches them
all. An idle connection the server has closed meanwhile (its idle timeout, a restart) is
replaced once, transparently.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Sequence


class Connections:
    def __init__(self, endpoints: Sequence[tuple[str, int]], timeout: float) -> None:
        self._endpoints = endpoints
        self._timeout = timeout
        self._idle: list[tuple[int, http.client.HTTPConnection]] = []
        self._lock = threading.Lock()

    def send(self, index: int, path: str, payload: bytes) -> tuple[int, bytes]:
        """POST ``payload`` to endpoint ``index``: the HTTP status and body."""
        conn = self._take(index)
        reused = conn is not None
        while True:
            if conn is None:
                host, port = self._endpoints[index]
                conn = http.client.HTTPConnection(host, port, timeout=self._timeout)
            try:
                conn.request("POST", path, payload, {"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = response.status, response.read()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                conn.close()
                if not reused:
                    raise
                # Closed by the server while idle: nothing was answered on it, so once more
                # on a new connection.
                conn, reused = None, False
                continue
            except BaseException:
                conn.close()
                raise
            with self._lock:
                self._idle.append((index, conn))
            return answer

    def _take(self, index: int) -> http.client.HTTPConnection | None:
        with self._lock:
            for position, (where, conn) in enumerate(self._idle):
                if where == index:
                    del self._idle[position]
                    return conn
        return None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.close()
