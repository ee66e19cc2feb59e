"""The manifest directory, watched: a :class:`Snapshot` of it whenever it changes.

Operators drop manifests into one directory, by hand, with an editor, with ``cp`` or
``rsync``, or through a Kubernetes ConfigMap volume. :class:`DirectorySource` turns that
directory into a stream of snapshots (``sources/scanning.py`` says what one holds and
promises), delivered whole to one consumer.

Why whole snapshots and not events. Filesystem events are hints, not facts. Editors write a
temporary file and rename it over the original; ``cp`` produces a burst of modify events and
the first of them sees half a file; inotify drops events silently when its queue overflows;
a ConfigMap update is a single rename of the ``..data`` symlink that changes every file at
once without touching any of them; NFS produces no events at all. So every event means
only "something changed": the source waits for the burst to settle (the *debounce*), lists
and hashes the whole directory, and delivers the result if it differs from the last
snapshot it delivered. A periodic full rescan repairs whatever the events missed.

Threads. watchdog's observer threads only stamp the time of the event and wake the worker;
one dedicated worker thread does everything else: it (re)schedules the inotify watch, scans,
and calls ``on_change``, so callbacks never run concurrently. When idle the worker sleeps in
``Event.wait`` until the next periodic rescan, so an idle source costs no CPU.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog import events as fs_events
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from kvmrec.sources.scanning import DEFAULT_MAX_FILE_BYTES, Snapshot, scan

__all__ = ["DirectorySource", "burst_deadline"]

logger = logging.getLogger(__name__)

RETRY_DELIVERY = 2.0
"""Seconds before a snapshot the consumer failed to take is offered again."""

# The parts of a snapshot that decide whether it is news: contents by digest, per-file
# errors and completeness. ``error`` is left out on purpose: an unmounted directory whose
# error text changes (ENOENT, then ENOTDIR) is not worth waking the consumer for.
_Fingerprint = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], bool]


def _fingerprint(snapshot: Snapshot) -> _Fingerprint:
    return (
        tuple(sorted((path, f.digest) for path, f in snapshot.files.items())),
        tuple(sorted(snapshot.errors.items())),
        snapshot.complete,
    )


def burst_deadline(first_event: float, last_event: float, debounce: float) -> float:
    """When to scan after a burst of events, in the clock of the arguments.

    ``debounce`` after the last event, so a ``cp`` or an editor save is scanned once it is
    finished; but never later than ``max(2, 10 * debounce)`` after the first event, so a
    file that is appended to forever (a log written into the wrong directory, a slow
    ``rsync``) still gets scanned now and then.
    """
    return min(last_event + debounce, first_event + max(2.0, 10.0 * debounce))


# Our own scan opens and reads every file, which inotify reports as IN_OPEN and
# IN_CLOSE_NOWRITE. Were those delivered, every scan would schedule the next one, forever.
# Listing only the events that mean a change keeps those out of the kernel mask entirely.
_CHANGE_EVENTS: list[type[fs_events.FileSystemEvent]] = [
    fs_events.FileCreatedEvent,
    fs_events.DirCreatedEvent,
    fs_events.FileModifiedEvent,
    fs_events.DirModifiedEvent,
    fs_events.FileDeletedEvent,
    fs_events.DirDeletedEvent,
    fs_events.FileMovedEvent,
    fs_events.DirMovedEvent,
    fs_events.FileClosedEvent,  # close after write: the end of most writes
    fs_events.FileAttribEvent,  # chmod can make a file readable or unreadable
    fs_events.DirAttribEvent,
]
_READ_ONLY_EVENT_TYPES = frozenset({"opened", "closed_no_write"})


class _Nudge(fs_events.FileSystemEventHandler):
    """The event handler given to watchdog: it only tells the source that something changed."""

    def __init__(self, poke: Callable[[], None]) -> None:
        self._poke = poke

    def dispatch(self, event: fs_events.FileSystemEvent) -> None:
        # Belt and braces to the event filter: a read never means a change.
        if event.event_type not in _READ_ONLY_EVENT_TYPES:
            self._poke()


class DirectorySource:
    """Watches ``root`` and calls ``on_change`` with a :class:`Snapshot` whenever it changes.

    ``debounce``: seconds of quiet after the last event before scanning; 0.3 s covers an
    editor's write-and-rename and a ``cp`` of a few files, yet feels immediate to an operator.
    ``rescan_interval``: seconds between full rescans when no event comes; 60 s bounds how
    long a dropped event (inotify overflow, NFS, symlink targets outside the directory) can
    go unnoticed, at the cost of one listing and hashing per minute. It is also how often a
    missing directory is looked for again.
    ``max_file_bytes``: larger files are reported in :attr:`Snapshot.errors`, not read.
    ``vet``: applied to every scan before it is compared with the last one delivered (the
    service passes sources/trust.py's check): a ``chmod`` that changes only the verdict on a
    file, not its bytes, is then news like any edit.
    """

    def __init__(
        self,
        root: Path,
        on_change: Callable[[Snapshot], None],
        *,
        debounce: float = 0.3,
        rescan_interval: float = 60.0,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        vet: Callable[[Snapshot], Snapshot] | None = None,
    ) -> None:
        if debounce < 0:
            raise ValueError(f"debounce must not be negative, got {debounce}")
        if rescan_interval <= 0:
            raise ValueError(f"rescan_interval must be positive, got {rescan_interval}")
        self._root = Path(root).absolute()
        self._on_change = on_change
        self._debounce = debounce
        self._rescan_interval = rescan_interval
        self._max_file_bytes = max_file_bytes
        self._vet = vet

        # Shared between watchdog's threads, the caller's and the worker, under _lock.
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._burst_start: float | None = None
        self._last_event = 0.0
        self._forced = False
        self._stopping = False
        self._started = False

        # Worker thread only.
        self._next_rescan = 0.0
        self._delivered: _Fingerprint | None = None
        self._observer: BaseObserver | None = None
        self._watch: ObservedWatch | None = None
        self._watched_dir: tuple[int, int] | None = None
        self._watch_error: str | None = None

        self._first: Snapshot | None = None
        self._first_failure: BaseException | None = None
        self._first_done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"kvmrec-directory-source:{self._root}", daemon=True
        )

    def start(self) -> Snapshot:
        """Scan, deliver the result to ``on_change`` (on the worker thread), return it, watch.

        The watch is placed before the first scan, so nothing written during ``start`` is
        missed. A missing directory is not an error: the snapshot is incomplete and the
        source keeps looking for the directory every ``rescan_interval``.
        """
        with self._lock:
            if self._started or self._stopping:
                raise RuntimeError("a DirectorySource can only be started once, before stop")
            self._started = True
        try:
            observer = Observer()
            observer.start()
            self._observer = observer
        except OSError as e:
            # Out of inotify instances (fs.inotify.max_user_instances): the periodic rescan
            # still keeps us correct, only slower to notice.
            logger.error("cannot watch %s, relying on periodic rescans: %s", self._root, e)
        self._thread.start()
        self._first_done.wait()
        if self._first is None:
            self._thread.join()  # it has stopped the observer on its way out
            raise RuntimeError(f"initial scan of {self._root} failed") from self._first_failure
        return self._first

    def rescan(self) -> None:
        """Scan now, without waiting for the debounce (e.g. on SIGHUP), and deliver the
        snapshot even if it did not change: what the consumer makes of it may have (a
        mass deletion approved with ``kvmrec prune``). Returns immediately."""
        with self._lock:
            self._forced = True
        self._wake.set()

    def stop(self) -> None:
        """Stop watching and wait for the worker; a callback in progress is allowed to finish.

        Safe to call more than once, before ``start``, and from within ``on_change``.
        """
        with self._lock:
            self._stopping = True
        self._wake.set()
        # The worker stops the observer on its way out. From within on_change we are the
        # worker: it will exit as soon as the callback returns, and cannot join itself.
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    # -- watchdog's threads --------------------------------------------------------------

    def _on_event(self) -> None:
        now = time.monotonic()
        with self._lock:
            new_burst = self._burst_start is None
            if new_burst:
                self._burst_start = now
            self._last_event = now
        # Only the first event of a burst wakes the worker: later ones can only push the
        # deadline back, and the worker re-reads it when its wait runs out.
        if new_burst:
            self._wake.set()

    # -- the worker ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._stop_observer()

    def _loop(self) -> None:
        try:
            self._first = self._cycle()
        except Exception as e:
            self._first_failure = e
            return
        finally:
            self._first_done.set()
        while True:
            # Cleared before looking at the state, so a wake-up that arrives while we look
            # makes the wait below return at once instead of being lost.
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                if self._stopping:
                    return
                forced = self._forced
                due = forced or now >= self._next_rescan
                timeout = self._next_rescan - now
                if self._burst_start is not None:
                    deadline = burst_deadline(self._burst_start, self._last_event, self._debounce)
                    due = due or now >= deadline
                    timeout = min(timeout, deadline - now)
                if due:
                    # Reset before scanning: events that arrive during the scan start a new
                    # burst and so a new scan, which sees what this one may have missed.
                    self._burst_start = None
                    self._forced = False
            if not due:
                self._wake.wait(timeout)
                continue
            try:
                self._cycle(deliver=forced)
            except Exception:
                logger.exception(
                    "scanning %s failed; retrying at the next event or rescan", self._root
                )

    def _cycle(self, *, deliver: bool = False) -> Snapshot:
        self._next_rescan = time.monotonic() + self._rescan_interval
        self._sync_watch()
        snapshot = scan(self._root, max_file_bytes=self._max_file_bytes)
        if self._vet is not None:
            snapshot = self._vet(snapshot)
        fingerprint = _fingerprint(snapshot)
        if deliver or fingerprint != self._delivered:
            self._log_transition(snapshot)
            try:
                self._on_change(snapshot)
            except Exception:
                # Not remembered as delivered: the next scan that finds the same state
                # offers it again, so a consumer that failed midway gets another chance.
                logger.exception("on_change failed for %s; will offer it again", self._root)
                # Soon, not at the next rescan a minute away: the failure (a locked, full
                # or read-only state file) is usually transient, and no event may come.
                self._next_rescan = min(self._next_rescan, time.monotonic() + RETRY_DELIVERY)
            else:
                self._delivered = fingerprint
        return snapshot

    def _log_transition(self, snapshot: Snapshot) -> None:
        was_complete = self._delivered is None or self._delivered[2]
        if not snapshot.complete:
            logger.warning("manifest directory incomplete: %s", snapshot.error)
        elif not was_complete:
            logger.info("manifest directory %s is complete again", self._root)
        for path, reason in snapshot.errors.items():
            logger.debug("manifest %s/%s: %s", self._root, path, reason)

    def _sync_watch(self) -> None:
        """Make the inotify watch cover the directory that is at ``root`` now.

        watchdog keeps a watch on the directory inode, not the path: after ``root`` is
        removed its emitter stops itself, and after ``root`` is replaced the watch follows
        the old inode. Both are repaired here, before every scan.
        """
        observer = self._observer
        if observer is None:
            return
        try:
            st = os.stat(self._root)
            current = (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
        except OSError:
            current = None
        if self._watch is not None and (current != self._watched_dir or not self._watch_alive()):
            # A stopped emitter stays registered under the same key, and schedule() would
            # hand it back instead of a new one: it must be unscheduled first.
            try:
                observer.unschedule(self._watch)
            except (KeyError, OSError):
                logger.debug("unscheduling the old watch on %s failed", self._root, exc_info=True)
            self._watch = None
            self._watched_dir = None
        if self._watch is None and current is not None:
            try:
                self._watch = observer.schedule(
                    _Nudge(self._on_event),
                    os.fspath(self._root),
                    recursive=True,
                    event_filter=_CHANGE_EVENTS,
                )
            except OSError as e:
                # Gone again since the stat, or fs.inotify.max_user_watches reached (ENOSPC):
                # periodic rescans cover us until the next attempt.
                if str(e) != self._watch_error:
                    logger.warning(
                        "cannot watch %s, relying on periodic rescans: %s", self._root, e
                    )
                self._watch_error = str(e)
                return
            self._watched_dir = current
            self._watch_error = None

    def _watch_alive(self) -> bool:
        observer = self._observer
        if observer is None:
            return False
        return any(
            e.watch == self._watch and not e.stopped_event.is_set() for e in list(observer.emitters)
        )

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join()
