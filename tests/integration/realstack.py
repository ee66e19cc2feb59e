"""Fixtures for integration tests: the real libvirtd, OVS and etcd of scripts/real-stack.sh.

Every test object is named with a per-test prefix (``kt-`` and six hex digits) and removed
by the fixture that made it, whatever the test did, because libvirt's state outlives the
test process. ``Controller`` runs the real ``kvmrec run`` as a subprocess on a temporary
manifest directory and state file, exactly as an operator would.

If the stack is not up these tests fail (they do not skip): a suite that silently skips
its integration tests would report green without having tested anything real.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

REPO = Path(__file__).resolve().parents[2]
STACK_ENV = REPO / ".stack" / "env"


def _stack_env() -> dict[str, str]:
    env: dict[str, str] = {}
    if STACK_ENV.exists():
        for line in STACK_ENV.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                env[key.strip()] = value.strip().strip("'\"")
    for key in ("LIBVIRT_DEFAULT_URI", "KVMREC_DOMAIN_TYPE", "KVMREC_OVS_DATAPATH"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


@pytest.fixture(scope="session")
def stack() -> dict[str, str]:
    env = _stack_env()
    uri = env.get("LIBVIRT_DEFAULT_URI", "qemu:///system")
    try:
        libvirt.open(uri).close()
    except libvirt.libvirtError as exc:
        pytest.fail(
            f"the real stack is not up ({uri}: {exc}); run `make test` or "
            "`bash scripts/real-stack.sh up`"
        )
    env.setdefault("LIBVIRT_DEFAULT_URI", uri)
    env.setdefault("KVMREC_DOMAIN_TYPE", "kvm")
    return env


@pytest.fixture
def conn(stack: dict[str, str]) -> Iterator[Any]:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    connection = libvirt.open(stack["LIBVIRT_DEFAULT_URI"])
    yield connection
    connection.close()


@pytest.fixture
def prefix(stack: dict[str, str]) -> Iterator[str]:
    name = f"kt-{uuid.uuid4().hex[:6]}"
    yield name
    # A connection of its own: a test may have restarted libvirtd under the others.
    cleanup = libvirt.open(stack["LIBVIRT_DEFAULT_URI"])
    remove_domains(cleanup, name)
    cleanup.close()


def remove_domains(conn: Any, prefix: str) -> None:
    for dom in conn.listAllDomains(0):
        if not dom.name().startswith(prefix):
            continue
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        except libvirt.libvirtError:
            pass


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll until ``predicate`` returns something truthy; fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what or predicate}")
        time.sleep(0.1)


def domain_manifest(name: str, domain_type: str, **spec: Any) -> str:
    lines = [
        "apiVersion: kvmrec.io/v1alpha1",
        "kind: Domain",
        "metadata:",
        f"  name: {name}",
        "spec:",
        f"  type: {domain_type}",
    ]
    spec.setdefault("memory", "64Mi")
    for key, value in spec.items():
        lines.append(f"  {key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def state_of(conn: Any, name: str) -> str | None:
    """The domain's state; None when libvirt has no such domain to tell of (also when it
    goes between the lookup and the read of its state)."""
    try:
        code = conn.lookupByName(name).state()[0]
    except libvirt.libvirtError:
        return None
    return {
        libvirt.VIR_DOMAIN_RUNNING: "running",
        libvirt.VIR_DOMAIN_PAUSED: "paused",
        libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    }.get(code, "other")


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    """The condition ``type_`` of one object of ``kvmrec status -o json``; None when the
    object (not there yet) or the condition is missing."""
    if obj is None:
        return None
    return next((c for c in obj["conditions"] if c["type"] == type_), None)


class Controller:
    """``kvmrec run`` on a temporary manifest directory and state file."""

    def __init__(self, root: Path, stack: dict[str, str]) -> None:
        self.root = root
        self.manifests = root / "manifests"
        self.manifests.mkdir()
        self.state = root / "state.db"
        self.log = root / "kvmrec.log"
        self.stack = stack
        self.proc: subprocess.Popen[bytes] | None = None
        self.disk_roots = [root]

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.stack}

    def write(self, filename: str, text: str) -> None:
        tmp = self.manifests / f".{filename}.tmp"
        tmp.write_text(text)
        tmp.replace(self.manifests / filename)

    def remove(self, filename: str) -> None:
        (self.manifests / filename).unlink()

    def command(self, *args: str) -> list[str]:
        # Tests make their disk images under their own tmp dir, outside kvmrec's default
        # disk roots: every `run` and `plan` is told it is one.
        if args[:1] in (("run",), ("plan",)):
            for root in self.disk_roots:
                args = (*args, "--disk-root", str(root))
        # Guests without an OS never power off when asked: unless a test says otherwise,
        # stopping one destroys it at once instead of after the default grace period.
        if args[:1] == ("run",) and "--stop-grace-period" not in args:
            args = (*args, "--stop-grace-period", "0")
        return [sys.executable, "-m", "kvmrec", *args]

    def start(self, *extra: str, resync: float = 30.0) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(
                    "run",
                    "--manifests",
                    str(self.manifests),
                    "--state",
                    str(self.state),
                    "--connect",
                    self.stack["LIBVIRT_DEFAULT_URI"],
                    "--resync",
                    str(resync),
                    *extra,
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> float:
        """SIGTERM; returns how long the process took to exit."""
        if not self.running:
            return 0.0
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"kvmrec run ignored SIGTERM for {timeout}s; log: {self.log}")
        return time.monotonic() - started

    def status(self, *args: str) -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            self.command("status", "--state", str(self.state), "-o", "json", *args),
            capture_output=True,
            env=self.env(),
            timeout=30,
            check=False,
        )
        try:
            body = json.loads(done.stdout) if done.stdout.strip() else {}
        except json.JSONDecodeError:
            body = {}
        return done.returncode, body

    def object(self, name: str, kind: str = "Domain") -> dict[str, Any] | None:
        _, body = self.status()
        return next(
            (o for o in body.get("objects", []) if o["kind"] == kind and o["name"] == name), None
        )

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """A one-shot kvmrec command (snapshot, guest, events, ...) on this state file."""
        return subprocess.run(
            self.command(*args, "--state", str(self.state)),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=120,
            check=False,
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


_FAILED = pytest.StashKey[bool]()
LOG_TAIL = 60  # lines of kvmrec's log shown with a failed test


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remembers whether the test itself failed, for the fixtures' teardown."""
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


@pytest.fixture
def controller(
    request: pytest.FixtureRequest, tmp_path: Path, stack: dict[str, str], prefix: str
) -> Iterator[Controller]:
    ctl = Controller(tmp_path, stack)
    yield ctl
    ctl.stop()  # before the prefix fixture removes the domains, or it would heal them
    if request.node.stash.get(_FAILED, False):
        # The report shows it as the teardown's output: what kvmrec did is the first
        # question about a failure, and its temporary directory does not stay.
        tail = "\n".join(ctl.log_text().splitlines()[-LOG_TAIL:])
        print(f"--- the last {LOG_TAIL} lines of kvmrec's log ({ctl.log}) ---\n{tail}")


def run_once(ctl: Controller, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``kvmrec run --once`` on the controller's manifests and state."""
    return subprocess.run(
        ctl.command(
            "run",
            "--once",
            "--timeout",
            str(timeout),
            "--manifests",
            str(ctl.manifests),
            "--state",
            str(ctl.state),
        ),
        capture_output=True,
        text=True,
        env=ctl.env(),
        timeout=timeout + 30,
        check=False,
    )


def plan_text(ctl: Controller, *args: str) -> subprocess.CompletedProcess[str]:
    """``kvmrec plan`` on the controller's manifests and state, as a user types it."""
    return subprocess.run(
        ctl.command("plan", "--manifests", str(ctl.manifests), "--state", str(ctl.state), *args),
        capture_output=True,
        text=True,
        env=ctl.env(),
        timeout=60,
        check=False,
    )


def plan(ctl: Controller, *args: str) -> tuple[int, dict[str, Any]]:
    """``kvmrec plan -o json``: its exit code and what it printed."""
    done = plan_text(ctl, "-o", "json", *args)
    return done.returncode, json.loads(done.stdout)


@contextlib.contextmanager
def temporary_network(stack: dict[str, str], name: str, bridge: str, ip: str) -> Iterator[str]:
    """A libvirt network of one test (``ip``: its <ip> element), removed afterwards with a
    connection of its own (a test may have restarted libvirtd under the others)."""
    uri = stack["LIBVIRT_DEFAULT_URI"]
    setup = libvirt.open(uri)
    try:
        setup.networkDefineXML(
            f"<network><name>{name}</name><bridge name='{bridge[:15]}'/>{ip}</network>"
        ).create()
    finally:
        setup.close()
    try:
        yield name
    finally:
        cleanup = libvirt.open(uri)
        with contextlib.suppress(libvirt.libvirtError):
            cleanup.networkLookupByName(name).destroy()
        with contextlib.suppress(libvirt.libvirtError):
            cleanup.networkLookupByName(name).undefine()
        cleanup.close()


@pytest.fixture
def network(prefix: str, stack: dict[str, str]) -> Iterator[str]:
    """An isolated libvirt network of this test (issue-4 Networks are not used here)."""
    third = int(prefix[-2:], 16)  # a /24 of its own per test
    ip = f"<ip address='10.251.{third}.1' netmask='255.255.255.0'/>"
    with temporary_network(stack, f"{prefix}-net", f"{prefix}-nb", ip) as name:
        yield name


@pytest.fixture
def ovs_bridge(stack: dict[str, str], prefix: str) -> Iterator[str]:
    """An Open vSwitch bridge of this test, made with ovs-vsctl (OvsBridge objects are
    issue 4's)."""
    name = f"{prefix}-ovs"[:15]
    datapath = stack.get("KVMREC_OVS_DATAPATH", "netdev")
    subprocess.run(
        [
            "ovs-vsctl",
            "--may-exist",
            "add-br",
            name,
            "--",
            "set",
            "bridge",
            name,
            f"datapath_type={datapath}",
        ],
        check=True,
        capture_output=True,
    )
    yield name
    subprocess.run(["ovs-vsctl", "--if-exists", "del-br", name], check=False, capture_output=True)


def ovs_ports(bridge: str) -> list[str]:
    done = subprocess.run(
        ["ovs-vsctl", "list-ports", bridge], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def qemu_img_info(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        ["qemu-img", "info", "--force-share", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    info: dict[str, Any] = json.loads(done.stdout)
    return info
