"""``kvmrec run`` as a system service: signals, systemd notifications, watchdog, reloads.

:class:`~kvmrec.service.Service` wires the controller together and knows nothing of the
process it runs in; this module is the process. What systemd (``manifests/kvmrec.service``,
``Type=notify``) and an operator see:

=====================  ==========================================================================
when                   what
=====================  ==========================================================================
started                ``READY=1`` once the first manifest snapshot is applied and the workers
                       run, with a ``STATUS=`` line (``12 objects, 12 converged, 0 manifest
                       errors``), refreshed every ten seconds while it changes
SIGHUP (``reload``)    ``RELOADING=1``; the configuration file is read again: the resync period
                       and the log level change at once, every other change is logged as
                       needing a restart; the manifest directory is rescanned; ``READY=1``. A
                       file that no longer parses is reported and the running configuration
                       kept. Each reload's start and end are counted in ``<state>.reload``
                       (kvmrec/reloads.py), which ``kvmrec reload`` (the unit's
                       ``ExecReload=``) waits on, so ``systemctl reload`` returns once the
                       new settings are in force, or fails with the reason.
``WatchdogSec=``       ``WATCHDOG=1`` every half interval from a thread of its own, but only
                       while :meth:`Service.problems` finds none: every worker thread alive and
                       no reconcile stuck. A controller that cannot make progress goes quiet
                       and systemd restarts it; one that is merely busy keeps petting.
SIGTERM, SIGINT        ``STOPPING=1``, in-flight reconciles drain (8 s budget), exit 0. From
                       the first line of ``run`` on (kvmrec/early_stop.py): one that comes
                       during start-up ends it cleanly, exit 0.
=====================  ==========================================================================

Signals are read from a socket by the main loop rather than handled in their handlers: a
Python signal handler runs between two bytecodes of the main thread, possibly while that
thread holds a lock the handler would need (``Event.set`` in a handler can deadlock the
``Event.wait`` it interrupts). ``signal.set_wakeup_fd`` has the C-level handler write the
signal's number to a socket instead, and the loop acts on it in its own time.

Outside systemd nothing changes but the signals: notifications are no-ops, there is no
watchdog, and no status is computed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType

from kvmrec import early_stop, reloads, systemd
from kvmrec.config import Config, ConfigError
from kvmrec.service import Service

__all__ = ["Daemon"]

log = logging.getLogger(__name__)

STATUS_EVERY = 10.0  # seconds; systemctl status is read by people, not scraped

_STOP = (signal.SIGTERM, signal.SIGINT)
_HANDLED = (*_STOP, signal.SIGHUP)


class Daemon:
    """Runs a :class:`Service` until SIGTERM; see the module docstring."""

    def __init__(self, service: Service, config: Config, load: Callable[[], Config]) -> None:
        """``config`` is what ``service`` was built with; ``load`` reads it again (SIGHUP)
        and raises :class:`ConfigError` when it cannot."""
        self.service = service
        self.config = config
        self._load = load
        self._status = ""
        self._reloads = reloads.Reloads(os.getpid())

    def run(self) -> int:
        """Start the service, serve until asked to stop, stop it. Main thread only."""
        interval = systemd.watchdog_interval()
        watchdog = _Watchdog(interval, self.service.problems) if interval else None
        with _Signals() as signals:
            stop = early_stop.requested()  # noted before these handlers were in place
            if stop is not None:
                early_stop.log_stop(stop)
                self.service.stop()
                return 0
            if watchdog is not None:
                watchdog.start()  # before start(), which may take longer than the interval
            try:
                self.service.start(watch=True)
                if watchdog is not None:
                    watchdog.started.set()
                self._serve(signals)
                systemd.notify("STOPPING=1\nSTATUS=stopping")
            finally:
                if watchdog is not None:
                    watchdog.stop()
            started = time.monotonic()
            drained = self.service.stop()
            log.info(
                "stopped in %.1fs%s",
                time.monotonic() - started,
                "" if drained else " (some reconciles did not finish; the next start resumes them)",
            )
        return 0

    def _serve(self, signals: _Signals) -> None:
        """READY=1, then act on signals until one says stop."""
        settings = self.service.settings
        source = (
            f"host {settings.host} of {settings.store}"
            if settings.host
            else f"manifests {settings.manifests}, state {settings.state}"
        )
        log.info(
            "kvmrec running: %s, libvirt %s, config %s",
            source,
            settings.connect,
            self.config.file.path or "(none)",
        )
        self._overridden(self.config)
        self._record(self._reloads)
        systemd.notify(f"READY=1\nSTATUS={self._refresh_status()}")
        if early_stop.reload_requested():  # a SIGHUP that came while starting
            self.reload()
        # Without a supervisor to read it, the status is not worth computing.
        every = STATUS_EVERY if "NOTIFY_SOCKET" in os.environ else None
        while True:
            received = signals.wait(every)
            stop = [signum for signum in received if signum in _STOP]
            if stop:
                log.info("%s: stopping", signal.Signals(stop[0]).name)
                return
            if signal.SIGHUP in received:
                self.reload()
            elif every is not None and self._refresh_status(changed_only=True):
                systemd.notify(f"STATUS={self._status}")

    def reload(self) -> None:
        """SIGHUP: read the configuration again, apply what can change live, rescan; then
        say it is done, to systemd and in the record ``kvmrec reload`` waits on."""
        systemd.notify(f"RELOADING=1\nMONOTONIC_USEC={systemd.monotonic_usec()}")
        log.info("SIGHUP: reloading the configuration and rescanning the manifests")
        begun = dataclasses.replace(self._reloads, started=self._reloads.started + 1)
        self._record(begun)
        error = self._reload()
        self._record(dataclasses.replace(begun, finished=begun.finished + 1, error=error))
        status = "reload failed, see the log; " if error else ""
        systemd.notify(f"READY=1\nSTATUS={status}{self._refresh_status()}")

    def _record(self, record: reloads.Reloads) -> None:
        self._reloads = record
        try:
            reloads.write(self.service.settings.state, record)
        except OSError as exc:  # `kvmrec reload` then times out and says so; we go on
            log.error("reload: cannot record it for kvmrec reload: %s", exc)

    def _reload(self) -> str | None:
        """The reload itself; why it failed, or None."""
        old = self.config
        try:
            wanted = self._load()
        except ConfigError as exc:
            log.error("reload: %s; keeping the running configuration", exc)
            self.service.reload(old.settings)  # still rescan: that needs no configuration
            return str(exc)
        in_force = self.service.reload(wanted.settings)
        if wanted.log_level != old.log_level:
            logging.getLogger().setLevel(wanted.log_level)
            log.info("reload: log_level %s -> %s", old.log_level, wanted.log_level)
        if wanted.log_format != old.log_format:
            log.warning(
                "reload: log_format %s -> %s needs a restart", old.log_format, wanted.log_format
            )
        for field in dataclasses.fields(in_force):
            before = getattr(old.settings, field.name)
            after = getattr(wanted.settings, field.name)
            if before == after:
                continue
            if getattr(in_force, field.name) == after:
                log.info("reload: %s %s -> %s", field.name, before, after)
            else:
                log.warning("reload: %s %s -> %s needs a restart", field.name, before, after)
        self._overridden(wanted)
        # What is in force, not what was asked for: a change that needs a restart is
        # reported again at the next reload, until the restart.
        self.config = dataclasses.replace(wanted, settings=in_force, log_format=old.log_format)
        return None

    @staticmethod
    def _overridden(config: Config) -> None:
        for key in sorted(config.overridden):
            log.info("%s: %s is set on the command line, which wins", config.file.path, key)

    def _refresh_status(self, *, changed_only: bool = False) -> str:
        """Compute the STATUS line; with ``changed_only``, return "" when it did not change."""
        try:
            done, total = self.service.converged_count()
            errors = len(self.service.store.source_errors())
        except Exception as exc:  # the store is briefly busy or gone; say so, do not die
            status = f"status unavailable: {exc}"
        else:
            status = f"{total} objects, {done} converged, {errors} manifest errors"
        problems = self.service.problems()
        if problems:
            status += "; unhealthy: " + "; ".join(problems)
        if changed_only and status == self._status:
            return ""
        self._status = status
        return status


class _Signals:
    """SIGTERM, SIGINT and SIGHUP, delivered as numbers read from a socket (see the module
    docstring); previous handlers are restored on exit."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._old_fd = -1
        self._old_handlers: dict[int, object] = {}

    def __enter__(self) -> _Signals:
        self._old_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in _HANDLED:
            # A handler must be installed (SIGHUP's default is to terminate), but all the
            # work is done by the wakeup fd.
            self._old_handlers[signum] = signal.signal(signum, _ignore)
        return self

    def wait(self, timeout: float | None) -> set[int]:
        """The signals received within ``timeout`` seconds (None: until one arrives)."""
        readable, _, _ = select.select([self._reader], [], [], timeout)
        received: set[int] = set()
        if readable:
            with contextlib.suppress(BlockingIOError):  # a spurious wake-up: nothing to read
                received.update(self._reader.recv(256))
        return received

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._old_fd)
        self._reader.close()
        self._writer.close()


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    pass


class _Watchdog:
    """Sends ``WATCHDOG=1`` every half ``interval`` while ``problems()`` finds none.

    Until :attr:`started` is set it pets unconditionally: start-up is bounded by systemd's
    ``TimeoutStartSec=``, and the workers it would check do not exist yet.
    """

    def __init__(self, interval: float, problems: Callable[[], list[str]]) -> None:
        self._every = interval / 2
        self._problems = problems
        self.started = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvmrec-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        healthy = True
        while True:
            try:
                found = self._problems() if self.started.is_set() else []
            except Exception as exc:  # a check that cannot tell is not a clean bill of health
                found = [f"the health check failed: {exc}"]
            if not found:
                systemd.notify("WATCHDOG=1")
                if not healthy:
                    log.warning("healthy again: petting the systemd watchdog again")
            elif healthy:
                log.error("not petting the systemd watchdog: %s", "; ".join(found))
            healthy = not found
            if self._stopping.wait(self._every):
                return
