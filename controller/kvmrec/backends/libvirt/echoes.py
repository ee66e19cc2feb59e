"""Lifecycle events that only echo kvmrec's own calls, dropped on the event thread.

Defining a domain makes libvirt send DEFINED, starting it STARTED. The reconcile that made
the call reads the domain back afterwards and stores what it found, so the echo has
nothing to tell; handed on, it would reconcile every domain it started a second time.
Before such a call the backend notes the event it expects; the first event of that kind
for that domain within ``WINDOW`` seconds is dropped, once. Everything else still wakes the
domain: a guest destroyed or started by hand, a crash, another define. A call that fails
takes its expectation back, and one whose echo never came lapses after the window.
"""

from __future__ import annotations

import threading
import time

import libvirt

DEFINED = libvirt.VIR_DOMAIN_EVENT_DEFINED
STARTED = libvirt.VIR_DOMAIN_EVENT_STARTED

# libvirt delivers a call's lifecycle event within milliseconds of the call returning; a
# short window keeps a lost echo from hiding a later event of someone else's for long.
WINDOW = 5.0


class Echoes:
    """The lifecycle events kvmrec's own calls are about to cause, per domain."""

    def __init__(self, *, enabled: bool = True) -> None:
        """``enabled``: events are watched at all (else nothing would ever use up an
        expectation)."""
        self._enabled = enabled
        self._lock = threading.Lock()
        self._expected: dict[tuple[str, int], list[float]] = {}

    def expect(self, name: str, event: int) -> None:
        if not self._enabled:
            return
        with self._lock:
            self._expected.setdefault((name, event), []).append(time.monotonic() + WINDOW)

    def withdraw(self, name: str, event: int) -> None:
        """The call failed: its echo is not coming."""
        with self._lock:
            deadlines = self._expected.get((name, event))
            if deadlines:
                deadlines.pop()
                if not deadlines:
                    del self._expected[(name, event)]

    def is_echo(self, name: str, event: int) -> bool:
        """Whether this event is the expected echo of a call (it is then used up)."""
        with self._lock:
            deadlines = self._expected.get((name, event))
            if not deadlines:
                return False
            now = time.monotonic()
            while deadlines and deadlines[0] < now:
                deadlines.pop(0)  # lapsed
            echo = bool(deadlines)
            if echo:
                deadlines.pop(0)
            if not deadlines:
                del self._expected[(name, event)]
            return echo
