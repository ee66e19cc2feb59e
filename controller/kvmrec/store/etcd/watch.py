"""A supervised watch of key prefixes in etcd: it never hangs and never drops a change.

Each prefix is followed by a thread of its own that remembers the revision after the
last change it delivered, so that every way a watch can fail ends in a new watch from
exactly there:

- nothing arrived for the read timeout: a count-only range probes etcd; if it answers,
  the watch is opened again at once (a stream can stall without the socket noticing),
  if not, the dropped connection is handled as below;
- the connection dropped, or etcd restarted: reconnect with a backoff (0.2 s doubling to
  5 s) from that revision;
- etcd canceled the watch because the revision was compacted: changes are lost, so the
  consumer is told to re-read the prefix at the current revision (``on_relist``), and the
  watch carries on from the revision after it.

Callbacks run one at a time, in order per prefix. One that raises is logged and the same
changes are delivered again after the backoff: delivery is at least once, never lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from kvmrec.store.etcd.gateway import EtcdError, EtcdUnavailable, Gateway
from kvmrec.store.etcd.watch_stream import WatchEvent, WatchStream
from kvmrec.store.fleet import Change, ChangeCallback, RelistCallback

log = logging.getLogger(__name__)

READ_TIMEOUT = 30.0  # a quiet watch is probed and re-opened this often
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0


class _Again(Exception):
    """The watch must be opened again (after the backoff)."""


class _CallbackFailed(Exception):
    """The consumer's callback raised: the same changes are delivered again."""


class SupervisedWatch:
    """A running watch (a Subscription): ``stop`` ends it and joins its threads."""

    def __init__(
        self,
        gateway: Gateway,
        prefixes: Sequence[str],
        start_revision: int,
        on_changes: ChangeCallback,
        on_relist: RelistCallback,
        *,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self._gateway = gateway
        self._on_changes = on_changes
        self._on_relist = on_relist
        self._read_timeout = read_timeout
        self._deliver = threading.Lock()
        self._cond = threading.Condition()
        self._stopped = False
        self._streams: set[WatchStream] = set()
        self._threads = [
            threading.Thread(
                target=self._follow,
                args=(prefix, start_revision),
                name=f"watch {prefix}",
                daemon=True,
            )
            for prefix in prefixes
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            streams = list(self._streams)
            self._cond.notify_all()
        for stream in streams:
            stream.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    def _follow(self, prefix: str, start_revision: int) -> None:
        try:
            self._follow_until_stopped(prefix, start_revision)
        finally:
            self._gateway.close()  # this thread's connection

    def _follow_until_stopped(self, prefix: str, start_revision: int) -> None:
        key = prefix.encode()
        next_revision = start_revision
        delay = BACKOFF_FIRST
        while not self._is_stopped():
            stream = WatchStream(
                self._gateway,
                key,
                prefix=True,
                start_revision=next_revision,
                timeout=self._read_timeout,
            )
            with self._cond:
                if self._stopped:
                    return
                self._streams.add(stream)
            try:
                stream.open()
                if self._is_stopped():  # stopped while opening: close did not see it open
                    return
                for message in stream:
                    if message.canceled:
                        if not message.compact_revision:
                            raise _Again(f"canceled by etcd: {message.reason or 'no reason'}")
                        log.warning("watch %s: revision %d compacted", prefix, next_revision)
                        next_revision = self._relist(prefix)
                        break
                    if message.created:
                        delay = BACKOFF_FIRST
                    fresh = [e for e in message.events if e.kv.mod_revision >= next_revision]
                    if fresh:
                        self._changes(prefix, fresh)
                        next_revision = fresh[-1].kv.mod_revision + 1
                    elif not message.events and not message.created:
                        # A progress notification: everything up to it was delivered.
                        next_revision = max(next_revision, message.revision + 1)
                continue
            except TimeoutError:
                if self._probe(key):
                    continue
                log.warning("watch %s: etcd does not answer", prefix)
            except (EtcdUnavailable, _Again) as exc:
                if self._is_stopped():
                    return  # the stream was closed under the reader by stop()
                log.warning("watch %s: %s; watching again from %d", prefix, exc, next_revision)
            except EtcdError as exc:
                log.warning("watch %s: %s", prefix, exc)
            except _CallbackFailed as exc:
                log.error("watch %s: %s; delivering again", prefix, exc.__cause__, exc_info=exc)
            finally:
                stream.close()
                with self._cond:
                    self._streams.discard(stream)
            self._sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _changes(self, prefix: str, events: Sequence[WatchEvent]) -> None:
        changes = [
            Change(
                type=event.type,
                key=event.kv.key.decode(),
                value=event.kv.value,
                revision=event.kv.mod_revision,
            )
            for event in events
        ]
        with self._deliver:
            if not self._is_stopped():
                try:
                    self._on_changes(changes)
                except Exception as exc:
                    raise _CallbackFailed("the change callback failed") from exc

    def _relist(self, prefix: str) -> int:
        """The consumer re-reads at the current revision; the watch goes on after it."""
        revision = self._gateway.range(prefix.encode(), prefix=True, count_only=True).revision
        with self._deliver:
            try:
                self._on_relist(prefix, revision)
            except Exception as exc:
                raise _CallbackFailed("the re-list callback failed") from exc
        return revision + 1

    def _probe(self, key: bytes) -> bool:
        try:
            self._gateway.range(key, prefix=True, count_only=True)
        except EtcdError:
            return False
        return True

    def _is_stopped(self) -> bool:
        with self._cond:
            return self._stopped

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            if not self._stopped:
                self._cond.wait(seconds)


class EtcdWatching:
    """Watching over one etcd."""

    def __init__(self, gateway: Gateway, *, read_timeout: float = READ_TIMEOUT) -> None:
        self._gateway = gateway
        self._read_timeout = read_timeout

    def watch(
        self,
        prefixes: Sequence[str],
        start_revision: int,
        on_changes: ChangeCallback,
        on_relist: RelistCallback,
    ) -> SupervisedWatch:
        return SupervisedWatch(
            self._gateway,
            prefixes,
            start_revision,
            on_changes,
            on_relist,
            read_timeout=self._read_timeout,
        )
