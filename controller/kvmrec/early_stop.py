"""A stop asked for while ``kvmrec run`` is still starting.

The daemon reads SIGTERM and SIGINT from a socket of its own (kvmrec/daemon.py), but that
is set up only after the imports, the configuration file and the state lock: a few hundred
milliseconds in which SIGTERM's default action would kill the process mid-import (systemd
sees a failure) and SIGINT would end it with a KeyboardInterrupt traceback. So the first
thing ``kvmrec run`` does (cli/main.py, before the heavy imports) is :func:`guard`: a
handler that only notes the signal. Start-up looks at :func:`requested` between its steps
and ends cleanly (exit 0, one log line) instead of going on; the daemon checks it once its
own handling is in place, so a signal noted just before is not lost. SIGHUP, whose default
action also ends the process, is noted too (``kvmrec prune`` sends it to the state's
holder, which may be starting): the daemon reloads once it serves. ``run --once`` is a
command, not a service: it gives the signals back their defaults with :func:`release`
(as main() does when ``run`` returns).
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

__all__ = ["guard", "log_stop", "release", "reload_requested", "requested"]

log = logging.getLogger(__name__)

_STOP = (signal.SIGTERM, signal.SIGINT)
_GUARDED = (*_STOP, signal.SIGHUP)

_noted: list[signal.Signals] = []
_reload: list[bool] = []
_previous: dict[int, Any] = {}


def _note(signum: int, _frame: FrameType | None) -> None:
    if signum == signal.SIGHUP:
        _reload[:] = [True]
    elif not _noted:
        _noted.append(signal.Signals(signum))


def guard() -> None:
    """From now on SIGTERM, SIGINT and SIGHUP are noted, not acted on. Main thread only."""
    _noted.clear()
    _reload.clear()
    for signum in _GUARDED:
        previous = signal.signal(signum, _note)
        if previous is not _note:
            _previous[signum] = previous


def requested() -> signal.Signals | None:
    """The stop signal received since :func:`guard`, if any."""
    return _noted[0] if _noted else None


def reload_requested() -> bool:
    """Whether SIGHUP came since :func:`guard` (and since this was last asked)."""
    asked = bool(_reload)
    _reload.clear()
    return asked


def log_stop(signum: signal.Signals) -> None:
    log.info("%s during start-up: exiting before the service started", signum.name)


def release() -> None:
    """The guarded signals act as they did before :func:`guard` (a signal noted stays
    noted)."""
    for signum, handler in _previous.items():
        if signal.getsignal(signum) is _note:
            signal.signal(signum, handler)
    _previous.clear()
