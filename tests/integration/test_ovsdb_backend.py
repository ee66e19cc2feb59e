"""The OVSDB backend against the real ovsdb-server and ovs-vswitchd of scripts/real-stack.sh.

``ovs-vsctl`` plays the operator who changes things by hand. Every bridge is named ``kt``,
four hex digits of this test, and a suffix (at most 15 characters: a device name), and
is removed with ``ovs-vsctl --if-exists del-br`` whatever the test did.

Some tests restart the shared daemons, as an operator or a package upgrade would: they
stop one by its pid file under .stack/pids and start it again with ``real-stack.sh up``,
and always leave the stack up. Recreating the database wipes every bridge of the host, so
that test saves the database file first and puts it back afterwards (bridges others made
in those few seconds are lost; bridges that existed before come back).

If ovsdb-server does not answer, these tests fail: they do not skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvmrec.backends.errors import BackendError, NotFound, Unavailable
from kvmrec.backends.ovs.client import Ovsdb
from kvmrec.backends.ovs.connection import MARKER_KEY
from kvmrec.backends.ovs.model import (
    DIGEST_KEY,
    GENERATION_KEY,
    OWNER_KEY,
    BridgeChange,
    minimal_change,
)
from support import contracts

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / ".stack"
SCRIPT = REPO / "scripts" / "real-stack.sh"
OVS_DB = STACK / "ovs" / "conf.db"  # where real-stack.sh keeps it
OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


def stack_env() -> dict[str, str]:
    env: dict[str, str] = {}
    path = STACK / "env"
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                env[key.strip()] = value.strip().strip("'\"")
    for key in ("KVMREC_OVS_DATAPATH", "KVMREC_OVSDB"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


ENV = stack_env()
REMOTE = ENV.get("KVMREC_OVSDB", "unix:/run/openvswitch/db.sock")
DATAPATH = ENV.get("KVMREC_OVS_DATAPATH", "netdev")


def vsctl(*args: str, timeout: int = 10) -> str:
    done = subprocess.run(
        ["ovs-vsctl", f"--db={REMOTE}", f"--timeout={timeout}", *args],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
        check=True,
    )
    return done.stdout.strip()


def wait_for_vswitchd() -> None:
    """Until ovs-vswitchd has caught up with the database: after a restart of ovsdb-server
    it reconnects with a backoff of up to 8 s. ovs-vsctl waits for it after any change."""
    key = f"kt-probe-{uuid.uuid4().hex[:8]}"
    vsctl("set", "Open_vSwitch", ".", f"external_ids:{key}=1", timeout=30)
    vsctl("--no-wait", "remove", "Open_vSwitch", ".", "external_ids", key)


def is_connected(db: Ovsdb) -> bool:
    return db.connected  # a call: mypy would narrow the property and skip the rest


def marker_in_db() -> str:
    return vsctl("get", "Open_vSwitch", ".", f"external_ids:{MARKER_KEY}").strip('"')


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.02)


class Recorder:
    """The callbacks of one Ovsdb, as they arrive (on the IDL and keeper threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[float, str]] = []
        self.reconnects: list[float] = []
        self.disconnects: list[tuple[float, str]] = []

    def bridge_event(self, name: str) -> None:
        with self.lock:
            self.events.append((time.monotonic(), name))

    def reconnect(self) -> None:
        with self.lock:
            self.reconnects.append(time.monotonic())

    def disconnect(self, why: str) -> None:
        with self.lock:
            self.disconnects.append((time.monotonic(), why))

    def events_for(self, name: str, since: float = 0.0) -> list[float]:
        with self.lock:
            return [t for t, n in self.events if n == name and t >= since]

    def reconnects_since(self, since: float) -> int:
        with self.lock:
            return sum(1 for t in self.reconnects if t >= since)

    def disconnects_since(self, since: float) -> int:
        with self.lock:
            return sum(1 for t, _ in self.disconnects if t >= since)


# -- the shared daemons ----------------------------------------------------------------------


@contextlib.contextmanager
def stack_lock() -> Iterator[None]:
    """real-stack.sh's own lock: no `up` of someone else's restarts a daemon midway."""
    with (STACK / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def stop_daemon(name: str) -> None:
    """Stop an OVS daemon real-stack.sh started, by its recorded pid."""
    pid = int((STACK / "pids" / f"{name}.pid").read_text().strip())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert name.encode() in cmdline, f"pid {pid} is not {name}: {cmdline!r}"
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, f"{name} (pid {pid}) to exit")


def stack_up() -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr


def assert_stack_up() -> None:
    stack_up()
    done = subprocess.run(
        ["bash", str(SCRIPT), "status"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    wait_for_vswitchd()  # settled for whatever runs next


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ovs_answers() -> None:
    probe = Ovsdb(REMOTE, timeout=5.0)
    try:
        probe.open()
    except Unavailable as exc:
        pytest.fail(
            f"ovsdb-server at {REMOTE} does not answer ({exc}); run scripts/real-stack.sh up"
        )
    probe.close()
    wait_for_vswitchd()  # an earlier test may have restarted ovsdb-server


@pytest.fixture
def bridges(ovs_answers: None) -> Iterator[Callable[[str], str]]:
    """Names for this test's bridges: ``kt`` + 4 hex digits + suffix; removed afterwards."""
    prefix = f"kt{uuid.uuid4().hex[:4]}"
    made: list[str] = []

    def name(suffix: str) -> str:
        made.append(f"{prefix}{suffix}")
        assert len(made[-1]) <= 15
        return made[-1]

    yield name
    for bridge in made:
        subprocess.run(
            # --no-wait: after a restart ovs-vswitchd may take its time to reconnect.
            ["ovs-vsctl", f"--db={REMOTE}", "--no-wait", "--if-exists", "del-br", bridge],
            capture_output=True,
            timeout=30,
            check=False,
        )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def ovsdb(ovs_answers: None, recorder: Recorder) -> Iterator[Ovsdb]:
    db = Ovsdb(
        REMOTE,
        on_bridge_event=recorder.bridge_event,
        on_reconnect=recorder.reconnect,
        on_disconnect=recorder.disconnect,
        timeout=5.0,
    )
    db.open()
    yield db
    db.close()


def owned(name: str, generation: int = 1) -> dict[str, str]:
    return {OWNER_KEY: name, GENERATION_KEY: str(generation), DIGEST_KEY: "sha256:0123"}


def create(ovsdb: Ovsdb, name: str, uplink: str | None = None) -> BridgeChange:
    change = BridgeChange(
        name,
        create=True,
        datapath_type=DATAPATH,
        fail_mode="secure",
        set_external_ids=owned(name),
        add_ports=[(uplink, "internal")] if uplink else [],
    )
    ovsdb.apply(change)
    return change


# -- bridges and ports -----------------------------------------------------------------------


def test_create_in_one_apply_and_read_back(
    ovsdb: Ovsdb, bridges: Callable[[str], str], recorder: Recorder
) -> None:
    name = bridges("br")
    uplink = f"{name}u"
    change = create(ovsdb, name, uplink)

    bridge = ovsdb.get_bridge(name)
    assert bridge is not None
    assert bridge.datapath_type == DATAPATH
    assert bridge.fail_mode == "secure"
    assert bridge.external_ids == owned(name)
    assert set(bridge.ports) == {name, uplink}
    own, up = bridge.ports[name], bridge.ports[uplink]
    assert (own.type, own.derived) == ("internal", True)
    assert (up.type, up.derived, up.error) == ("internal", False, None)
    # apply() waited for ovs-vswitchd: the datapath has opened both ports already.
    assert isinstance(up.ofport, int) and up.ofport > 0
    assert own.ofport == 65534  # OFPP_LOCAL
    assert vsctl("get", "Bridge", name, "datapath_type") == DATAPATH

    # The same change again: nothing left to do, and nothing is written.
    assert minimal_change(change, bridge, {}).empty
    time.sleep(0.2)  # the kernel's notifications about the new devices
    settled = time.monotonic()
    ovsdb.apply(change)
    assert ovsdb.get_bridge(name) == bridge
    time.sleep(0.2)
    assert recorder.events_for(name, since=settled) == []


def test_remove_a_port_and_an_external_id(ovsdb: Ovsdb, bridges: Callable[[str], str]) -> None:
    name = bridges("rm")
    create(ovsdb, name, f"{name}u")
    ovsdb.apply(
        BridgeChange(
            name,
            remove_ports=[f"{name}u"],
            remove_external_ids=[GENERATION_KEY, "not-there"],
            set_external_ids={DIGEST_KEY: "sha256:4567"},
        )
    )
    bridge = ovsdb.get_bridge(name)
    assert bridge is not None
    assert set(bridge.ports) == {name}
    assert bridge.external_ids == {OWNER_KEY: name, DIGEST_KEY: "sha256:4567"}
    assert vsctl("list-ports", name) == ""
    # Clearing the fail mode and changing nothing else:
    ovsdb.apply(BridgeChange(name, fail_mode=None))
    bridge = ovsdb.get_bridge(name)
    assert bridge is not None and bridge.fail_mode is None


def test_ports_of_others_are_derived(
    ovsdb: Ovsdb, bridges: Callable[[str], str], recorder: Recorder
) -> None:
    name = bridges("dv")
    create(ovsdb, name)
    guest = f"{name}v"
    since = time.monotonic()
    # What libvirt does when a guest with <virtualport type='openvswitch'/> starts.
    vsctl(
        "add-port", name, guest, "--", "set", "Interface", guest, "type=internal",
        "external_ids:vm-id=6b3c0a5e-0000-4000-8000-000000000001",
        "external_ids:iface-id=if-1", "external_ids:attached-mac=52:54:00:00:00:01",
    )  # fmt: skip
    wait_for(lambda: recorder.events_for(name, since), 2.0, f"an event for {name}")
    bridge = ovsdb.get_bridge(name)
    assert bridge is not None
    port = bridge.ports[guest]
    assert port.derived
    assert port.external_ids["vm-id"] == "6b3c0a5e-0000-4000-8000-000000000001"
    assert port.external_ids["attached-mac"] == "52:54:00:00:00:01"
    assert bridge.ports[name].derived


def test_ovsdb_does_what_its_fake_does(ovsdb: Ovsdb, bridges: Callable[[str], str]) -> None:
    """The checks FakeOvsBridges passes (tests/support/contracts.py), on the real server."""
    contracts.check_bridges(ovsdb, bridges("ct"), DATAPATH)


def test_a_port_on_another_bridge_is_an_error(ovsdb: Ovsdb, bridges: Callable[[str], str]) -> None:
    first, second = bridges("p1"), bridges("p2")
    create(ovsdb, first, f"{first}u")
    create(ovsdb, second)
    with pytest.raises(BackendError, match=f"already on bridge {first}"):
        ovsdb.apply(BridgeChange(second, add_ports=[(f"{first}u", "internal")]))
    with pytest.raises(NotFound):
        ovsdb.apply(BridgeChange(bridges("nx"), fail_mode="secure"))


def test_del_br_by_hand_is_an_event(
    ovsdb: Ovsdb, bridges: Callable[[str], str], recorder: Recorder
) -> None:
    name = bridges("dh")
    create(ovsdb, name, f"{name}u")
    since = time.monotonic()
    vsctl("del-br", name)
    seen = wait_for(lambda: recorder.events_for(name, since), 2.0, f"an event for {name}")
    assert seen[0] - since < 2.0
    assert ovsdb.get_bridge(name) is None
    ovsdb.delete_bridge(name)  # gone already: nothing to do, no error

    create(ovsdb, name)
    ovsdb.delete_bridge(name)
    ovsdb.delete_bridge(name)
    assert ovsdb.get_bridge(name) is None
    assert name not in vsctl("list-br").split()


# -- the host --------------------------------------------------------------------------------


def test_kernel_datapath_agrees_with_the_stack(ovsdb: Ovsdb) -> None:
    # real-stack.sh chose the datapath type by the same test (or ovs-dpctl, same answer).
    assert ovsdb.kernel_datapath() == (DATAPATH == "system")


def test_promiscuous_mode_of_the_bridge_device(
    ovsdb: Ovsdb, bridges: Callable[[str], str], recorder: Recorder
) -> None:
    name = bridges("pr")
    create(ovsdb, name)
    device = Path("/sys/class/net") / name
    wait_for(device.exists, 5.0, f"a device {name} for the bridge's internal port")
    if DATAPATH == "netdev":
        # The userspace datapath makes the internal port a persistent tap (tun_flags:
        # IFF_TAP 0x2), and sets it promiscuous itself.
        assert int((device / "tun_flags").read_text(), 16) & 0x2
        assert ovsdb.promiscuous(name) is True

    since = time.monotonic()
    ovsdb.set_promiscuous(name, False)
    assert ovsdb.promiscuous(name) is False
    # Not in OVSDB, but an event all the same: a link notification from the kernel.
    wait_for(lambda: recorder.events_for(name, since), 2.0, f"an event for {name}")
    since = time.monotonic()
    ovsdb.set_promiscuous(name, True)
    assert ovsdb.promiscuous(name) is True
    wait_for(lambda: recorder.events_for(name, since), 2.0, f"an event for {name}")
    ovsdb.set_promiscuous(name, True)  # idempotent
    assert ovsdb.promiscuous(name) is True

    assert ovsdb.promiscuous(f"{name}zz") is None
    with pytest.raises(NotFound):
        ovsdb.set_promiscuous(f"{name}zz", True)


# -- a private ovsdb-server: no ovs-vswitchd, not the shared one ----------------------------


@contextlib.contextmanager
def private_ovsdb_server(tmp_path: Path, remote: str) -> Iterator[subprocess.Popen[bytes]]:
    """An ovsdb-server of this test's own on ``remote``, with an initialised database."""
    subprocess.run(["ovsdb-tool", "create", str(tmp_path / "conf.db"), OVS_SCHEMA], check=True)
    with (tmp_path / "ovsdb-server.log").open("wb") as log:
        server = subprocess.Popen(
            [
                "ovsdb-server", str(tmp_path / "conf.db"), f"--remote=p{remote}",
                f"--unixctl={tmp_path / 'ovsdb-server.ctl'}", "--no-chdir",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: (tmp_path / "db.sock").exists(), 5.0, "the private ovsdb-server")
        subprocess.run(["ovs-vsctl", f"--db={remote}", "--no-wait", "init"], check=True)
        yield server
    finally:
        server.send_signal(signal.SIGCONT)  # a stopped server ignores SIGTERM until then
        server.terminate()
        server.wait(10)


def test_open_before_the_server_then_no_vswitchd(tmp_path: Path, recorder: Recorder) -> None:
    remote = f"unix:{tmp_path / 'db.sock'}"
    db = Ovsdb(remote, on_reconnect=recorder.reconnect, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        db.open()
    assert time.monotonic() - started < 0.5  # nobody listens: no waiting for the timeout
    db.start_reconnecting()  # what the service does when it starts before OVS
    try:
        with private_ovsdb_server(tmp_path, remote):
            wait_for(lambda: recorder.reconnects_since(started), 10.0, "on_reconnect")
            assert db.marker is not None

            # No ovs-vswitchd here: apply() waits for it once, up to the timeout...
            change = BridgeChange("ktpriv0", create=True, datapath_type="netdev")
            began = time.monotonic()
            db.apply(change)
            assert 0.9 < time.monotonic() - began < 2.0
            bridge = db.get_bridge("ktpriv0")
            assert bridge is not None
            assert bridge.ports["ktpriv0"].ofport is None  # nobody opened it
            # ... and not again while it still has done nothing.
            began = time.monotonic()
            db.apply(BridgeChange("ktpriv0", fail_mode="standalone"))
            assert time.monotonic() - began < 0.5
    finally:
        db.close()


def test_a_hung_ovsdb_server_is_noticed_by_the_inactivity_probe(
    tmp_path: Path, recorder: Recorder
) -> None:
    remote = f"unix:{tmp_path / 'db.sock'}"
    with private_ovsdb_server(tmp_path, remote) as server:
        db = Ovsdb(
            remote, on_reconnect=recorder.reconnect, on_disconnect=recorder.disconnect, timeout=1.0
        )
        try:
            db.open()
            assert is_connected(db)
            stopped = time.monotonic()
            server.send_signal(signal.SIGSTOP)  # the socket stays open; nothing answers
            wait_for(lambda: recorder.disconnects_since(stopped), 30.0, "the disconnect")
            assert not is_connected(db)
            with pytest.raises(Unavailable):
                db.apply(BridgeChange("ktpriv1", create=True, datapath_type="netdev"))
            resumed = time.monotonic()
            server.send_signal(signal.SIGCONT)
            wait_for(lambda: recorder.reconnects_since(resumed), 30.0, "on_reconnect")
            assert is_connected(db)
        finally:
            db.close()


# -- OVS restarts ----------------------------------------------------------------------------


@pytest.mark.disruptive
def test_vswitchd_restart_is_noticed(
    ovsdb: Ovsdb, bridges: Callable[[str], str], recorder: Recorder
) -> None:
    if DATAPATH != "netdev":
        pytest.skip("on the kernel datapath a restart of ovs-vswitchd changes no device")
    name = bridges("vs")
    create(ovsdb, name)
    since = time.monotonic()
    # Outside the try: a daemon this checkout's real-stack.sh did not start is not stopped,
    # and then nothing is to be brought back up either.
    with stack_lock():
        stop_daemon("ovs-vswitchd")
    try:
        # Nothing changes in OVSDB; the bridge's tap loses the promiscuous flag
        # ovs-vswitchd had set, and that is a link notification.
        wait_for(lambda: recorder.events_for(name, since), 2.0, f"an event for {name}")
        assert ovsdb.promiscuous(name) is False
        assert ovsdb.connected
        restarted = time.monotonic()
        stack_up()
        wait_for(lambda: recorder.events_for(name, restarted), 5.0, f"an event for {name}")
        assert ovsdb.promiscuous(name) is True
        assert recorder.disconnects_since(since) == 0
    finally:
        assert_stack_up()


@pytest.mark.disruptive
def test_ovsdb_server_restart(
    ovsdb: Ovsdb, bridges: Callable[[str], str], recorder: Recorder
) -> None:
    name = bridges("rs")
    create(ovsdb, name)
    since = time.monotonic()
    try:
        with stack_lock():
            stop_daemon("ovsdb-server")
        wait_for(lambda: recorder.disconnects_since(since), 2.0, "on_disconnect")
        assert not is_connected(ovsdb)
        started = time.monotonic()
        with pytest.raises(Unavailable):
            ovsdb.get_bridge(name)
        with pytest.raises(Unavailable):
            ovsdb.apply(BridgeChange(name, fail_mode=None))
        assert time.monotonic() - started < 0.5  # known down: no waiting for a timeout

        stack_up()
        wait_for(lambda: recorder.reconnects_since(since), 10.0, "on_reconnect")
        assert ovsdb.connected
        # With create: another test may have recreated the database meanwhile.
        ovsdb.apply(BridgeChange(name, create=True, datapath_type=DATAPATH, fail_mode=None))
        bridge = ovsdb.get_bridge(name)
        assert bridge is not None and bridge.fail_mode is None
        assert ovsdb.marker == marker_in_db()
    finally:
        assert_stack_up()


def test_marker_removed_means_look_at_everything(ovsdb: Ovsdb, recorder: Recorder) -> None:
    marker = ovsdb.marker
    assert marker is not None
    since = time.monotonic()
    vsctl("remove", "Open_vSwitch", ".", "external_ids", MARKER_KEY)
    wait_for(lambda: recorder.reconnects_since(since), 2.0, "on_reconnect")
    wait_for(lambda: ovsdb.marker, 2.0, "the marker again")
    assert marker_in_db() == ovsdb.marker
    assert recorder.disconnects_since(since) == 0


@pytest.mark.disruptive
def test_database_recreated(
    ovsdb: Ovsdb, bridges: Callable[[str], str], recorder: Recorder
) -> None:
    name = bridges("db")
    create(ovsdb, name)
    old_marker = ovsdb.marker
    backup = OVS_DB.with_name(f"{OVS_DB.name}.{name}-backup")
    since = time.monotonic()
    try:
        with stack_lock():
            stop_daemon("ovsdb-server")
            os.replace(OVS_DB, backup)
            subprocess.run(["ovsdb-tool", "create", str(OVS_DB), OVS_SCHEMA], check=True)
        stack_up()
        vsctl("--no-wait", "init")
        wait_for(lambda: recorder.reconnects_since(since), 10.0, "on_reconnect")
        wait_for(lambda: ovsdb.marker, 5.0, "a marker in the new database")
        assert ovsdb.marker != old_marker
        assert marker_in_db() == ovsdb.marker
        assert ovsdb.get_bridge(name) is None
    finally:
        if backup.exists():
            with stack_lock():
                with contextlib.suppress(FileNotFoundError, AssertionError):
                    stop_daemon("ovsdb-server")
                os.replace(backup, OVS_DB)
        assert_stack_up()
    wait_for(lambda: ovsdb.connected and ovsdb.marker, 10.0, "connected to the old database")
