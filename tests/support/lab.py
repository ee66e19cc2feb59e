"""Fixtures of the fleet tests: the lab of scripts/lab.sh, etcd behind a cuttable proxy,
and a three-member etcd of one test.

``lab`` reads the lab's env file ($KVMREC_LAB_DIR/env, default /var/lib/kvmrec-lab/env)
and checks that every host answers; if one does not, the test fails (it does not skip)
and says to run ``make lab-up``. ``lab_guests`` starts tiny OS-less guests (64 MiB, no
disk unless asked, serial console, no balloon) on a chosen lab host, named with the
test's prefix, and removes every guest of that prefix from every lab host afterwards:
guest names must be unique across the fleet (the hosts share one cgroup tree).

Used by tests/integration/fleet/conftest.py, where realstack is importable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import libvirt
import pytest
from realstack import remove_domains

from support.etcd_cluster import EtcdCluster
from support.tcp_proxy import TcpProxy

DEFAULT_LAB_DIR = Path("/var/lib/kvmrec-lab")


@dataclass(frozen=True)
class Lab:
    """The lab as its env file describes it."""

    dir: Path
    shared: Path  # the storage every host sees at this same path
    uris: dict[str, str]  # host name -> libvirt URI, in order lab1..labN
    domain_type: str  # kvm where /dev/kvm works, else qemu

    @property
    def hosts(self) -> list[str]:
        return list(self.uris)

    def open(self, host: str) -> Any:
        return libvirt.open(self.uris[host])

    def host_dir(self, host: str) -> Path:
        return self.dir / "hosts" / host

    def libvirtd_pid_file(self, host: str) -> Path:
        """The pid file of the host's libvirtd: a process in the host's mount namespace."""
        return self.host_dir(host) / "run" / "libvirt" / "libvirtd.pid"

    def qemu_pid(self, host: str, guest: str) -> int:
        """The pid of a running guest's QEMU on ``host`` (to kill it as a power loss would)."""
        return int((self.host_dir(host) / "run" / "libvirt" / "qemu" / f"{guest}.pid").read_text())

    def mount_namespace(self, host: str) -> str:
        """The host's mount namespace as /proc/PID/ns/mnt names it, recorded at its start."""
        return (self.host_dir(host) / "mntns").read_text().strip()

    def local_images(self, host: str) -> Path:
        """Where the host's own /var/lib/libvirt/images is, seen from outside its namespace:
        the same path on every host, a different directory each."""
        return self.host_dir(host) / "lib" / "libvirt" / "images"


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            env[key.strip()] = value.strip().strip("'\"")
    return env


def load_lab() -> Lab:
    """The lab, every host of it answering; ``pytest.fail`` saying what to run otherwise."""
    lab_dir = Path(os.environ.get("KVMREC_LAB_DIR", str(DEFAULT_LAB_DIR)))
    env_file = lab_dir / "env"
    if not env_file.exists():
        pytest.fail(f"the lab is not up ({env_file} is missing): run `make lab-up`")
    env = read_env_file(env_file)
    uris = {host: env[f"KVMREC_LAB_{host.upper()}_URI"] for host in env["KVMREC_LAB_HOSTS"].split()}
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    domain_type = "qemu"
    for host, uri in uris.items():
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            pytest.fail(f"lab host {host} does not answer ({uri}: {exc}): run `make lab-up`")
        if host == next(iter(uris)) and "<domain type='kvm'" in conn.getCapabilities():
            domain_type = "kvm"
        conn.close()
    return Lab(Path(env["KVMREC_LAB_DIR"]), Path(env["KVMREC_LAB_SHARED"]), uris, domain_type)


@pytest.fixture(scope="session")
def lab() -> Lab:
    return load_lab()


def tiny_domain_xml(name: str, domain_type: str, disk: str | Path | None = None) -> str:
    """A 64 MiB, one-vCPU guest with no OS: a serial console, no balloon, no graphics;
    ``disk``, if given, a qcow2 as vda."""
    disk_xml = ""
    if disk is not None:
        disk_xml = (
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>"
        )
    return (
        f"<domain type='{domain_type}'><name>{name}</name>"
        "<memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os>"
        f"<devices>{disk_xml}<serial type='pty'/><console type='pty'/>"
        "<memballoon model='none'/></devices></domain>"
    )


class LabGuests:
    """Tiny guests of one test on the lab's hosts, all named ``PREFIX-...``."""

    def __init__(self, lab: Lab, prefix: str) -> None:
        self.lab = lab
        self.prefix = prefix
        self._conns: dict[str, Any] = {}

    def conn(self, host: str) -> Any:
        if host not in self._conns:
            self._conns[host] = self.lab.open(host)
        return self._conns[host]

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    def define(self, host: str, suffix: str, disk: str | Path | None = None) -> Any:
        xml = tiny_domain_xml(self.name(suffix), self.lab.domain_type, disk)
        return self.conn(host).defineXML(xml)

    def start(self, host: str, suffix: str, disk: str | Path | None = None) -> Any:
        """Define and start a guest on ``host``; returns its virDomain."""
        dom = self.define(host, suffix, disk)
        dom.create()
        return dom

    def names(self, host: str, active_only: bool = True) -> set[str]:
        flags = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE if active_only else 0
        return {d.name() for d in self.conn(host).listAllDomains(flags)}

    def cleanup(self) -> None:
        """Every guest of the prefix off every lab host, each with a connection of its own
        (a test may have restarted a host under the others)."""

        def clean(host: str) -> None:
            with contextlib.suppress(libvirt.libvirtError):
                conn = self.lab.open(host)
                remove_domains(conn, self.prefix)
                conn.close()

        with ThreadPoolExecutor(len(self.lab.hosts)) as pool:
            list(pool.map(clean, self.lab.hosts))
        for conn in self._conns.values():
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
        self._conns.clear()


@pytest.fixture
def lab_guests(lab: Lab, prefix: str) -> Iterator[LabGuests]:
    guests = LabGuests(lab, prefix)
    yield guests
    guests.cleanup()


@pytest.fixture
def shared_dir(lab: Lab, prefix: str) -> Iterator[Path]:
    """A directory of this test on the lab's shared storage, removed afterwards."""
    path = lab.shared / prefix
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def stack_etcd_url() -> str:
    return os.environ.get("KVMREC_ETCD", "http://127.0.0.1:2379")


def stack_etcd_address() -> tuple[str, int]:
    target = urlparse(stack_etcd_url())
    return target.hostname or "127.0.0.1", target.port or 2379


@pytest.fixture
def etcd_proxy() -> Iterator[TcpProxy]:
    """The stack's etcd behind a proxy this test can cut (``proxy.url`` is the endpoint)."""
    with TcpProxy(stack_etcd_address()) as proxy:
        yield proxy


@pytest.fixture
def lab_etcd_proxies(lab: Lab) -> Iterator[dict[str, TcpProxy]]:
    """One proxy to the stack's etcd per lab host, so a test can cut one host off."""
    with contextlib.ExitStack() as stack:
        yield {host: stack.enter_context(TcpProxy(stack_etcd_address())) for host in lab.hosts}


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A three-member etcd of this test on loopback ports of its own, stopped afterwards."""
    with EtcdCluster(tmp_path / "etcd") as cluster:
        yield cluster
