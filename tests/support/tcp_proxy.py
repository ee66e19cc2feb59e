"""A TCP forwarder a test can cut: the network between a host and etcd, made breakable.

``TcpProxy(("127.0.0.1", 2379))`` listens on a free loopback port and forwards every
connection to the target, one thread per connection. ``cut()`` drops the connections it
carries and treats new ones as a partition would: ``"blackhole"`` (the default) accepts
them and never answers, so a client waits until its own timeout, as behind a dead
switch; ``"refuse"`` resets them at once, as a host that is down. ``restore()`` forwards
again. Use it as a context manager, or through a fixture that closes it.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from types import TracebackType
from typing import Literal

CutMode = Literal["blackhole", "refuse"]


def _reset(sock: socket.socket) -> None:
    """Close with a RST, so the peer sees the connection drop at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` until cut."""

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        self._listener = socket.create_server((host, 0))
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._mode: CutMode | None = None  # None: forwarding
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._held: set[socket.socket] = set()  # accepted while blackholed
        self._closed = False
        self.accepted = 0  # connections seen, whatever happened to them
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> tuple[str, int]:
        """(host, port), as kvmrec's Gateway takes an endpoint."""
        return (self.host, self.port)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def is_cut(self) -> bool:
        return self._mode is not None

    def cut(self, mode: CutMode = "blackhole") -> None:
        """Drop every connection carried now; new ones are blackholed or refused."""
        with self._lock:
            self._mode = mode
            pairs, self._pairs = self._pairs, set()
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)

    def restore(self) -> None:
        """Forward new connections again (the ones held while cut are dropped)."""
        with self._lock:
            self._mode = None
            held, self._held = self._held, set()
        for sock in held:
            _reset(sock)

    def close(self) -> None:
        self._closed = True
        self.cut("refuse")
        self.restore()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            with self._lock:
                mode = self._mode
                if mode == "blackhole":
                    self._held.add(client)
                    continue
            if mode == "refuse":
                _reset(client)
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        pair = (client, upstream)
        with self._lock:
            if self._mode is not None:  # cut while connecting
                _reset(client)
                _reset(upstream)
                return
            self._pairs.add(pair)
        self._pump(pair)

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        """Copy bytes both ways until either side closes or the pair is dropped."""
        client, upstream = pair
        peers = {client: upstream, upstream: client}
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 1.0)
                with self._lock:
                    if pair not in self._pairs:
                        return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return  # dropped by cut() under us
        finally:
            with self._lock:
                self._pairs.discard(pair)
            # An orderly close: a reset would discard what is still on its way.
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.close()
