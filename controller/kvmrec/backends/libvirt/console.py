"""A guest's serial console through libvirt, as ``virsh console`` attaches to it.

``virDomainOpenConsole`` joins the guest's console to a ``virStream``; what the guest writes
comes out of the stream, what is sent into it reaches the guest's serial port. Through
libvirtd, so it works wherever the connection reaches, remote hosts included, and libvirt
keeps one session per console (``force`` takes it over from another).

``Console`` is only the two byte streams: ``read`` (blocking, b"" once the console has
closed: the guest stopped, or someone forced it away) and ``write``. The terminal side
(raw mode, the escape key) is the command's.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import libvirt

from kvmrec.backends.errors import BackendError, NotFound, Unavailable


class Console:
    """An open serial console of one domain."""

    def __init__(self, uri: str, name: str, *, force: bool = False) -> None:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        try:
            self._conn: Any = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise Unavailable(f"cannot connect to {uri}: {exc.get_error_message()}") from exc
        self._send = threading.Lock()
        try:
            try:
                dom = self._conn.lookupByName(name)
            except libvirt.libvirtError as exc:
                raise NotFound(f"no domain named {name} at {uri}") from exc
            if not dom.isActive():
                raise BackendError(f"{name} is not running")
            self._stream = self._conn.newStream(0)
            flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0
            flags |= libvirt.VIR_DOMAIN_CONSOLE_SAFE
            try:
                dom.openConsole(None, self._stream, flags)
            except libvirt.libvirtError as exc:
                raise BackendError(
                    f"cannot open the serial console of {name}: {exc.get_error_message()}"
                ) from exc
        except BaseException:
            self._conn.close()
            raise
        self._closed = False

    def read(self, size: int = 4096) -> bytes:
        """What the guest wrote; b"" once the console has closed."""
        try:
            data = self._stream.recv(size)
        except libvirt.libvirtError:
            return b""
        return data if isinstance(data, bytes) else b""

    def write(self, data: bytes) -> None:
        with self._send:
            while data:
                sent = self._stream.send(data)
                if sent < 0:
                    raise BackendError("the console stream refused the input")
                data = data[sent:]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.abort()
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()
