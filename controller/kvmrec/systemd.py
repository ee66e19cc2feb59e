"""The two halves of systemd's service protocol that kvmrec speaks: notify and watchdog.

``Type=notify`` services tell systemd how they are doing by sending short datagrams of
``KEY=value`` lines to the unix socket named in ``$NOTIFY_SOCKET`` (sd_notify(3)):

* ``READY=1``: start-up is finished; ``systemctl start`` returns and units ordered after
  this one start. kvmrec sends it once the first manifest snapshot is applied and the
  workers run, so "started" means "reconciling", not merely "the process exists".
* ``STATUS=...``: one line shown by ``systemctl status``.
* ``RELOADING=1`` ... ``READY=1``: around a reload; systemd shows the unit as reloading
  in between (``MONOTONIC_USEC`` says when the reload began). With ``ExecReload=kill -HUP``
  ``systemctl reload`` returns once the signal is sent; systemd 253's
  ``Type=notify-reload`` would make it wait for ``READY=1``.
* ``STOPPING=1``: shutdown has begun.
* ``WATCHDOG=1``: "still healthy", due at least every ``$WATCHDOG_USEC`` microseconds when
  the unit sets ``WatchdogSec=``; systemd kills and restarts a service that goes quiet.

The protocol is small enough that implementing it beats depending on python-systemd (a C
extension that needs libsystemd headers to build): one datagram per message. A name
starting with ``@`` is in the abstract namespace (no file; the ``@`` stands for a NUL
byte). Outside systemd, ``$NOTIFY_SOCKET`` is unset and every call is a cheap no-op, so
callers never need to ask whether they run under systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import time

__all__ = ["monotonic_usec", "notify", "watchdog_interval"]

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send ``message`` (newline-separated ``KEY=value`` lines) to ``$NOTIFY_SOCKET``.

    Returns whether it was sent. Never raises: a service must not fail because its
    supervisor is gone or was never there; a failed send is logged at debug level.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]  # the abstract namespace: Linux spells '@' as NUL
    elif not address.startswith("/"):
        # Unset, or a transport we do not speak (systemd also knows "vsock:CID:PORT",
        # which only a service inside a VM supervised by its host would be handed).
        if address:
            log.debug("NOTIFY_SOCKET=%r: not a unix socket; not notifying", address)
        return False
    try:
        # A fresh socket per message: messages are rare (every few seconds at most), and
        # nothing is kept that could go stale when systemd re-executes itself.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.debug("notify %r to %s failed: %s", message, os.environ["NOTIFY_SOCKET"], exc)
        return False
    return True


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as ``RELOADING=1`` wants in ``MONOTONIC_USEC``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_interval() -> float | None:
    """Seconds within which systemd wants ``WATCHDOG=1``, or None when it wants none.

    As sd_watchdog_enabled(3): ``$WATCHDOG_USEC`` must be a positive integer and, when
    ``$WATCHDOG_PID`` is set, it must be our pid (the variables may have been inherited
    from a parent that is the one being watched). Anything malformed means no watchdog:
    petting a watchdog that is not there is harmless, but guessing an interval is not.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    try:
        interval = int(usec)
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    return interval / 1_000_000 if interval > 0 else None
