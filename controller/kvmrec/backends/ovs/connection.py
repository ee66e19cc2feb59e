"""The connection to one OVSDB server: its replica, change events, and surviving restarts.

``Connection`` opens the replica (ovs/idl.py) and keeps it: reads and transactions go
through ``call``, which maps ovsdbapp's errors to ours and refuses at once while the server
is known to be down.

Events: every monitor update passes through the IDL's ``notify`` on the IDL thread, where
the replica is consistent, so a Port or Interface row is traced to its bridge there (the
ovsdbapp ``RowEventHandler`` would run handlers on another thread against a replica the
IDL thread keeps changing). ``on_bridge_event`` gets only the bridge's name; so does a
link notification of a bridge device (ovs/netlink.py). Initial dumps (after connecting)
are not events: ``open()`` and ``on_reconnect`` already mean "look at everything".

Restarts:

- ovsdb-server stops: the unix socket closes, the IDL notices at once and
  ``on_disconnect`` is called; calls raise ``Unavailable`` without waiting. The IDL
  reconnects by itself (capped backoff), fetches everything again, and ``on_reconnect``
  is called: rows deleted meanwhile produced no event.
- the database is recreated (``ovsdb-tool create``, a restore): kvmrec keeps a marker in
  ``Open_vSwitch.external_ids`` (``kvmrec-instance``: the id of the first kvmrec process
  that saw this database; later ones adopt it, so two processes never fight over it). An
  update without it means a different database: ``on_reconnect``, and the marker again.
- ovsdb-server hangs (stopped, or stuck): the socket stays open and nothing arrives.
  After 5 s of silence the IDL sends an echo; unanswered 5 s later, it disconnects, as
  above, and reconnects once the server answers again.
- ovs-vswitchd restarts: invisible in OVSDB (measured: not one row changes; its config
  lives in the database and its netdev taps persist), so there is nothing to hear there.
  What a restart changes for kvmrec, the promiscuous flag of netdev bridge devices,
  arrives as a link notification.

Nothing here polls: the IDL thread blocks in poll() on the OVSDB socket, the rtnetlink
socket and ovsdbapp's transaction queue; the keeper thread (marker writes, and the
reconnect callbacks, which may do some work) waits on a condition.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import ovs.db.error
from ovsdbapp import exceptions as ovsdbapp_exceptions
from ovsdbapp.backend.ovs_idl import connection, idlutils

from kvmrec.backends.errors import BackendError, NotFound, Unavailable
from kvmrec.backends.ovs import idl
from kvmrec.backends.ovs.netlink import LinkWatch

log = logging.getLogger(__name__)

# In Open_vSwitch.external_ids: which database this is (see the module docstring).
MARKER_KEY: Final = "kvmrec-instance"
# Retrying a failed open() (start_reconnecting): from 0.5 s, doubling, capped.
_OPEN_RETRY_CAP: Final = 30.0


class Connection:
    """The replica of one OVSDB server, kept connected."""

    def __init__(
        self,
        remote: str,
        *,
        on_bridge_event: Callable[[str], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.remote = remote
        self.timeout = timeout
        self._on_bridge_event = on_bridge_event
        self._on_reconnect = on_reconnect
        self._on_disconnect = on_disconnect
        self._instance = uuid.uuid4().hex  # our marker, if we are first to stamp
        self._lock = threading.Lock()  # open/close
        self._api: idl.Api | None = None
        self._links: LinkWatch | None = None
        self._last_error = "not connected yet"
        # Shared with the IDL thread and the keeper, under _cond:
        self._cond = threading.Condition()
        self._synced = False
        self._ever_synced = False
        self._pending: list[str] = []  # "down", "up", "marker": for the keeper
        self._marker: str | None = None  # the marker this database carries, as we know it
        self._cur_cfg = 0
        self._vswitchd_stalled_at: int | None = None  # cur_cfg when a wait for it ran out
        self._closed = False
        self._retrying_open = False
        self._keeper: threading.Thread | None = None

    def open(self) -> None:
        """Connect and load the replica; ``Unavailable`` if ovsdb-server does not answer
        within the timeout."""
        with self._lock:
            self._closed = False
            self._open()
        self._start_keeper()
        self._stamp()

    def _open(self) -> None:
        if self._api is not None:
            return
        try:
            helper = idlutils.create_schema_helper(idl.fetch_schema(self.remote, self.timeout))
        except Unavailable as exc:
            self._last_error = str(exc)
            raise
        for table, columns in idl.COLUMNS.items():
            helper.register_columns(table, columns)
        links: LinkWatch | None = None
        if self._on_bridge_event is not None:
            try:
                links = LinkWatch()
            except OSError as exc:  # no rtnetlink (a restricted sandbox): OVSDB events only
                log.warning("ovsdb: no link notifications (%s)", exc)
        replica = idl.Idl(self.remote, helper, self, links)
        conn = connection.Connection(replica, self.timeout)
        with self._cond:
            self._synced = self._ever_synced = False
            self._pending.clear()
            self._marker = None
        try:
            api = idl.Api(conn, start=False)
            conn.start()
        except Exception as exc:
            conn.stop(timeout=1.0)
            with contextlib.suppress(Exception):
                replica.close()
            if links is not None:
                links.close()
            self._last_error = f"{self.remote} did not send its database: {idl.describe(exc)}"
            raise Unavailable(self._last_error) from exc
        if conn.thread is not None:
            conn.thread.name = "ovsdb-idl"
        self._api, self._links = api, links
        self._last_error = ""
        log.info("ovsdb: connected to %s", self.remote)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with self._lock:
            api, self._api = self._api, None
            links, self._links = self._links, None
            if api is not None:
                api.ovsdb_connection.stop(timeout=self.timeout)
            if links is not None:
                links.close()
        keeper, self._keeper = self._keeper, None
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(self.timeout)
        with self._cond:
            self._synced = False

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._api is not None and self._synced

    @property
    def marker(self) -> str | None:
        """The ``MARKER_KEY`` value of the database, as last seen."""
        with self._cond:
            return self._marker

    def start_reconnecting(self) -> None:
        """Keep trying to open in the background (the service started before OVS);
        ``on_reconnect`` is called once it succeeds."""
        with self._cond:
            if self._api is not None:
                return  # open: the IDL reconnects by itself
            self._closed = False
            self._retrying_open = True
            self._cond.notify_all()
        self._start_keeper()

    def _start_keeper(self) -> None:
        with self._cond:
            if self._keeper is not None and self._keeper.is_alive():
                return
            self._keeper = threading.Thread(target=self._keep, name="ovsdb-keeper", daemon=True)
            self._keeper.start()

    # -- on the IDL thread: hand over and return -------------------------------------------

    def row_changed(self, replica: idl.Idl, event: str, row: Any) -> None:
        table = row._table.name
        if table == "Open_vSwitch":
            self._root_changed(replica, event, row)
            return
        if self._on_bridge_event is None or replica.state != replica.IDL_S_MONITORING:
            return  # a dump after (re)connecting: open() and on_reconnect cover it
        names: list[str] = []
        if table == "Bridge":
            names = [row.name]
        elif table == "Port":
            # A port that comes or goes changes its bridge's row too: that is the event.
            if event == "update":
                names = [b.name for b in replica.tables["Bridge"].rows.values() if row in b.ports]
        elif table == "Interface" and event == "update":
            ports = [p for p in replica.tables["Port"].rows.values() if row in p.interfaces]
            names = [
                b.name
                for b in replica.tables["Bridge"].rows.values()
                if any(p in b.ports for p in ports)
            ]
        for name in names:
            self._on_bridge_event(name)

    def _root_changed(self, replica: idl.Idl, event: str, row: Any) -> None:
        with self._cond:
            if event != "delete":
                self._cur_cfg = int(row.cur_cfg)
                self._cond.notify_all()  # wait_for_vswitchd may be waiting for it
            if replica.state != replica.IDL_S_MONITORING:
                return  # the reconnect itself re-checks the marker
            seen = None if event == "delete" else row.external_ids.get(MARKER_KEY)
            if seen is not None and seen == self._marker:
                return
            if seen is not None and self._marker is None:
                self._marker = seen  # another kvmrec's, stamped first: adopt it
                return
            # Gone, or replaced after being gone: a different database. A root row created
            # while connected is one too (`ovs-vsctl init` on a fresh database).
            if self._marker is not None or event == "create":
                self._marker = None
                self._pending.append("marker")
                self._cond.notify_all()

    def after_run(self, replica: idl.Idl) -> None:
        synced = replica.synced
        with self._cond:
            if synced != self._synced:
                self._synced = synced
                # Which database this is gets settled again once connected (_stamp);
                # until then an update without the marker is no news.
                self._marker = None
                # The first sync is open()'s own; later ones are reconnects.
                if self._ever_synced:
                    self._pending.append("up" if synced else "down")
                    self._cond.notify_all()
                self._ever_synced = self._ever_synced or synced
        if replica.links is not None:
            names, lost = replica.links.changed()
            if self._on_bridge_event is None:
                return
            bridges = replica.tables["Bridge"].rows
            if lost:  # the kernel dropped notifications: any bridge may have changed
                names = [b.name for b in bridges.values()]
            for name in names:
                if lost or idlutils.row_by_value(replica, "Bridge", "name", name, None) is not None:
                    self._on_bridge_event(name)

    # -- the keeper thread -----------------------------------------------------------------

    def _keep(self) -> None:
        delay = 0.5
        while True:
            with self._cond:
                while not (self._closed or self._pending or self._retrying_open):
                    self._cond.wait()
                if self._closed:
                    return
                pending, self._pending = self._pending, []
                retrying = self._retrying_open
            if retrying:
                try:
                    with self._lock:
                        self._open()
                except BackendError as exc:
                    self._last_error = str(exc)
                    with self._cond:
                        self._cond.wait(delay)
                    delay = min(delay * 2, _OPEN_RETRY_CAP)
                    continue
                with self._cond:
                    self._retrying_open = False
                delay = 0.5
                pending.append("up")
            try:
                self._handle(pending)
            except Exception:  # the keeper must outlive a failing callback
                log.exception("ovsdb: handling %s failed", pending)

    def _handle(self, pending: list[str]) -> None:
        if "down" in pending:
            log.warning("ovsdb: lost %s; waiting for it", self.remote)
            if self._on_disconnect is not None:
                self._on_disconnect(f"lost the connection to {self.remote}")
        if any(p in ("up", "marker") for p in pending) and self.connected:
            why = "connected again" if "up" in pending else "the database was recreated"
            log.info("ovsdb: %s: %s; looking at everything", self.remote, why)
            self._stamp()
            if self._on_reconnect is not None:
                self._on_reconnect()

    def _stamp(self) -> None:
        """Write the marker unless the database has one, and remember what it has."""
        try:
            with self.call("mark the database") as api:
                with api.ovsdb_connection.lock:
                    roots = list(api.tables["Open_vSwitch"].rows.values())
                    missing = bool(roots) and MARKER_KEY not in roots[0].external_ids
                if not roots:
                    log.warning("ovsdb: %s has no Open_vSwitch row yet", self.remote)
                    return
                # Only for someone who listens (`kvmrec plan` changes nothing). db_add on
                # a map adds a missing key and leaves a present one: two kvmrec
                # processes that both saw it missing agree on the first.
                if missing and self._on_reconnect is not None:
                    with api.transaction(
                        check_error=True, log_errors=False, nested=False, bump=False
                    ) as txn:
                        txn.add(
                            api.db_add(
                                "Open_vSwitch",
                                roots[0].uuid,
                                "external_ids",
                                {MARKER_KEY: self._instance},
                            )
                        )
                with api.ovsdb_connection.lock:
                    seen = roots[0].external_ids.get(MARKER_KEY)
            with self._cond:
                self._marker = seen
        except BackendError as exc:
            log.warning("ovsdb: cannot mark the database: %s", exc)

    # -- calls -----------------------------------------------------------------------------

    @contextmanager
    def call(self, what: str) -> Iterator[idl.Api]:
        """The API for one operation, with ovsdbapp's errors mapped to ours."""
        with self._cond:
            api, synced = self._api, self._synced
        if api is None:
            raise Unavailable(f"{what}: not connected to {self.remote}: {self._last_error}")
        if not synced:
            # Known down: say so now rather than after a transaction's full timeout.
            raise Unavailable(f"{what}: {self.remote} is unavailable")
        try:
            yield api
        except ovsdbapp_exceptions.TimeoutException as exc:
            raise Unavailable(f"{what}: {idl.describe(exc)}") from exc
        except idlutils.RowNotFound as exc:
            raise NotFound(f"{what}: {idl.describe(exc)}") from exc
        except (RuntimeError, ovs.db.error.Error) as exc:
            text = idl.describe(exc)
            if "timed out" in text:
                raise Unavailable(f"{what}: {text}") from exc
            raise BackendError(f"{what}: {text}") from exc

    def wait_for_vswitchd(self, next_cfg: int) -> None:
        """Until ovs-vswitchd has applied configuration ``next_cfg``: at most ``timeout``,
        and not at all while it has done nothing since the last wait ran out."""
        deadline = time.monotonic() + self.timeout
        with self._cond:
            if self._cur_cfg == self._vswitchd_stalled_at:
                return  # still nothing from it since the last wait ran out
            while self._cur_cfg < next_cfg and self._synced:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._vswitchd_stalled_at = self._cur_cfg
                    log.warning(
                        "ovsdb: ovs-vswitchd has not applied configuration %d within %.1fs"
                        " (is it running?); not waiting for it again until it does",
                        next_cfg,
                        self.timeout,
                    )
                    return
                self._cond.wait(remaining)
