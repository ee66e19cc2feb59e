"""A fleet of real kvmrec hosts for the integration tests: one ``kvmrec run --store etcd://
--host NAME`` process per lab host, and the CLI a test drives them with.

``Fleet`` knows the store (its prefix under some etcd), the lab's libvirt URIs and where
each host reaches etcd (its own proxy, so a test can cut one host off). ``start`` launches
hosts in parallel (Popen does not wait) and waits until etcd holds their live keys;
``kill9``, ``signal`` and ``stop`` act on one. With ``mount_namespaces`` each host's kvmrec
runs in its lab host's mount namespace (``nsenter``), seeing that host's own
/var/lib/libvirt, as on a hypervisor: what tests of local disks need.
``apply``/``delete``/``status``/``hosts`` run the CLI against the store as an operator
would; ``wait`` polls with a deadline.
Manifests are written under the test's directory with names the caller prefixed, so
every guest name is unique across the lab and its cleanup can find it.
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kvmrec.store.etcd.gateway import EtcdError, Gateway, KeyValue, parse_endpoints
from support.lab import Lab, LabGuests
from support.tcp_proxy import TcpProxy

MIB = 1024**2


def domain_manifest(name: str, domain_type: str, **spec: Any) -> str:
    """A Domain manifest, its spec given as Python values (``hostSelector={...}``)."""
    body: dict[str, Any] = {"type": domain_type, "memory": "64Mi", **spec}
    return json.dumps(
        {
            "apiVersion": "kvmrec.io/v1alpha1",
            "kind": "Domain",
            "metadata": {"name": name},
            "spec": body,
        }
    )


@dataclass
class FleetHost:
    """One ``kvmrec run`` of the fleet, reaching etcd at ``endpoints``."""

    name: str
    uri: str
    endpoints: str  # host:port[,host:port...]
    labels: Mapping[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def store_url(self, prefix: str) -> str:
        return f"etcd://{self.endpoints}{prefix}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Fleet:
    """The hosts of one store: ``prefix`` under the etcd at ``endpoints`` (what the CLI
    uses); each host reaches it at ``host_endpoints[name]`` (default: ``endpoints``)."""

    root: Path
    prefix: str  # /kvmrec-test-...: no trailing slash
    endpoints: str
    uris: Mapping[str, str]
    labels: Mapping[str, Mapping[str, str]]
    host_endpoints: Mapping[str, str] = field(default_factory=dict)
    # host -> the pid file of a process in that host's mount namespace (its libvirtd)
    mount_namespaces: Mapping[str, Path] = field(default_factory=dict)
    options: Sequence[str] = ()  # more ``kvmrec run`` options, for every host
    hosts: dict[str, FleetHost] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for name, uri in self.uris.items():
            self.hosts[name] = FleetHost(
                name,
                uri,
                self.host_endpoints.get(name, self.endpoints),
                self.labels.get(name, {}),
                self.root / f"{name}.log",
            )

    @property
    def url(self) -> str:
        return f"etcd://{self.endpoints}{self.prefix}"

    # -- the host processes --------------------------------------------------------------

    def launch(self, name: str, *extra: str) -> None:
        """Start host ``name``'s kvmrec with the fleet's ``options`` and ``extra``."""
        host = self.hosts[name]
        assert not host.running, f"{name} runs already"
        labels = [arg for k, v in host.labels.items() for arg in ("--label", f"{k}={v}")]
        enter: list[str] = []
        if name in self.mount_namespaces:
            pid = self.mount_namespaces[name].read_text().strip()
            enter = ["nsenter", "-t", pid, "-m", "--"]
        with host.log.open("ab") as log:
            host.proc = subprocess.Popen(
                [
                    *enter, sys.executable, "-m", "kvmrec", "run",
                    "--store", host.store_url(self.prefix),
                    "--host", name, *labels,
                    "--connect", host.uri,
                    "--stop-grace-period", "0",  # OS-less guests never power off when asked
                    "--resync", "10",
                    *self.options, *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ),
            )  # fmt: skip

    def start(
        self, names: Iterable[str] | None = None, timeout: float = 60, extra: Sequence[str] = ()
    ) -> None:
        """Start hosts (all by default) at once; wait until every one is Ready."""
        names = list(names or self.hosts)
        for name in names:
            self.launch(name, *extra)
        self.wait(lambda: all(self.ready(n) for n in names), timeout, f"{names} Ready")

    def signal(self, name: str, sig: int) -> None:
        """Send ``sig`` to host ``name``'s kvmrec (SIGSTOP freezes it: no renewal, no fence)."""
        proc = self.hosts[name].proc
        assert proc is not None
        proc.send_signal(sig)

    def kill9(self, name: str) -> None:
        host = self.hosts[name]
        assert host.proc is not None
        host.proc.send_signal(signal.SIGKILL)
        host.proc.wait(10)

    def stop(self, name: str, timeout: float = 20) -> None:
        host = self.hosts[name]
        if not host.running:
            return
        assert host.proc is not None
        host.proc.send_signal(signal.SIGCONT)  # a frozen host must hear the SIGTERM
        host.proc.send_signal(signal.SIGTERM)
        try:
            host.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            host.proc.kill()
            host.proc.wait()

    def stop_all(self) -> None:
        for host in self.hosts.values():
            if host.running:
                assert host.proc is not None
                host.proc.send_signal(signal.SIGTERM)
        for name in self.hosts:
            self.stop(name)

    def ensure_running(self, timeout: float = 60) -> None:
        """Start whatever host a test left stopped, and wait for the whole fleet Ready."""
        for name, host in self.hosts.items():
            if not host.running:
                self.launch(name)
        self.wait(lambda: all(self.ready(n) for n in self.hosts), timeout, "every host Ready")

    # -- the CLI -------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kvmrec", *args],
            capture_output=True,
            text=True,
            env=dict(os.environ),
            timeout=timeout,
            check=False,
        )

    def kvmrec(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The CLI on this fleet's store."""
        return self.cli(*args, "--store", self.url, timeout=timeout)

    def write(self, directory: Path, manifests: Mapping[str, str]) -> Path:
        """Manifests as files ``NAME.yaml`` (JSON is YAML) in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in manifests.items():
            tmp = directory / f".{name}.tmp"
            tmp.write_text(text)
            tmp.replace(directory / f"{name}.yaml")
        return directory

    def apply(self, manifests: Mapping[str, str]) -> None:
        """``kvmrec apply -f DIR`` of ``manifests`` (name -> text); fails on a non-zero exit."""
        directory = self.write(self.root / f"apply-{time.monotonic_ns()}", manifests)
        done = self.kvmrec("apply", "-f", str(directory))
        assert done.returncode == 0, f"apply: {done.returncode}: {done.stdout}{done.stderr}"

    def apply_file(self, path: Path) -> None:
        """``kvmrec apply -f PATH``; fails on a non-zero exit."""
        done = self.kvmrec("apply", "-f", str(path))
        assert done.returncode == 0, f"apply: {done.returncode}: {done.stdout}{done.stderr}"

    def delete(self, kind: str, name: str) -> None:
        done = self.kvmrec("delete", f"{kind}/{name}")
        assert done.returncode == 0, f"delete: {done.returncode}: {done.stdout}{done.stderr}"

    def status(self) -> dict[str, Any]:
        """``kvmrec status -o json`` ({} when it printed nothing readable)."""
        done = self.kvmrec("status", "-o", "json")
        try:
            body: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
        except json.JSONDecodeError:
            body = {}
        return body

    def objects(self, kind: str, name: str) -> list[dict[str, Any]]:
        """Every entry of ``status -o json`` for one object (one per host for host kinds)."""
        return [
            o for o in self.status().get("objects", []) if o["kind"] == kind and o["name"] == name
        ]

    def domain(self, name: str) -> dict[str, Any] | None:
        found = self.objects("Domain", name)
        return found[0] if found else None

    def running_on(self, name: str) -> str | None:
        """The host whose status says Domain ``name`` runs there, Ready."""
        for obj in self.objects("Domain", name):
            ready = ready_condition(obj)
            if ready is not None and ready["status"] == "True" and obj.get("host"):
                return str(obj["host"])
        return None

    def logs(self) -> str:
        """The tail of every host's log, for a failure's message."""
        return "\n".join(f"== {n}\n{h.log_text()[-4000:]}" for n, h in self.hosts.items())

    # -- what etcd holds ---------------------------------------------------------------

    def gateway(self) -> Gateway:
        return Gateway(parse_endpoints(self.endpoints), timeout=3.0)

    def key_value(self, key: str) -> KeyValue | None:
        """``P/key`` in etcd, with its revisions (None: no such key)."""
        gateway = self.gateway()
        try:
            return gateway.get(f"{self.prefix}/{key}".encode())
        finally:
            gateway.close()

    def read(self, key: str) -> str | None:
        """The value of ``P/key`` in etcd (None: no such key)."""
        kv = self.key_value(key)
        return kv.value.decode() if kv is not None else None

    def read_json(self, key: str) -> Any:
        value = self.read(key)
        return json.loads(value) if value is not None else None

    def live_hosts(self) -> set[str]:
        """The hosts registered on a live lease now (``P/hosts/NAME``)."""
        gateway = self.gateway()
        try:
            found = gateway.range(f"{self.prefix}/hosts/".encode(), prefix=True)
        except EtcdError:
            return set()
        finally:
            gateway.close()
        return {kv.key.decode().rsplit("/", 1)[-1] for kv in found.kvs}

    def ready(self, name: str) -> bool:
        return name in self.live_hosts()

    def placement(self, name: str) -> str | None:
        """The host etcd says Domain ``name`` is placed on."""
        record = self.read_json(f"placements/Domain/{name}")
        return record.get("host") if record else None

    def leader(self) -> str | None:
        """The scheduler's host, as its election key says."""
        value = self.read("election/scheduler")
        return value.strip() if value else None

    # -- waiting -------------------------------------------------------------------------

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll ``predicate`` until truthy; fail naming ``what`` and the hosts' log tails."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"not within {timeout}s: {what}; host logs:\n{self.logs()}")
            time.sleep(0.3)

    def wait_domain(
        self, name: str, reason: str | None = None, status: str = "True", timeout: float = 60
    ) -> dict[str, Any]:
        """Until the Domain's Ready condition has ``status`` (and ``reason``, if given)."""

        def check() -> dict[str, Any] | None:
            obj = self.domain(name)
            ready = ready_condition(obj)
            if ready is None or ready["status"] != status:
                return None
            if reason is not None and ready.get("reason") != reason:
                return None
            return obj

        result: dict[str, Any] = self.wait(
            check, timeout, f"Domain {name} Ready={status} {reason or ''}"
        )
        return result

    def wait_domains(self, names: Sequence[str], timeout: float = 90) -> dict[str, str]:
        """Until every Domain of ``names`` is Ready=True; returns name -> host."""

        def check() -> dict[str, str] | None:
            objects = {
                o["name"]: o for o in self.status().get("objects", []) if o["kind"] == "Domain"
            }
            placed: dict[str, str] = {}
            for name in names:
                ready = ready_condition(objects.get(name))
                if ready is None or ready["status"] != "True":
                    return None
                placed[name] = objects[name]["host"]
            return placed

        result: dict[str, str] = self.wait(check, timeout, f"Domains {list(names)} Ready")
        return result


def ready_condition(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    return next((c for c in obj.get("conditions", []) if c["type"] == "Ready"), None)


@dataclass
class LabFleet:
    """A fleet on the lab's hosts: its processes, the guests of its prefix, its proxies."""

    lab: Lab
    fleet: Fleet
    guests: LabGuests
    proxies: dict[str, TcpProxy]

    def name(self, suffix: str) -> str:
        """A guest name unique across the lab, that the cleanup finds."""
        return self.guests.name(suffix)


ZONES = {"lab1": "a", "lab2": "b", "lab3": "c"}


@contextlib.contextmanager
def lab_fleet_of(
    lab: Lab,
    root: Path,
    endpoints: str,
    proxy_to: tuple[str, int] | None = None,
    *,
    options: Sequence[str] = (),
    namespaced: bool = False,
    start: bool = True,
) -> Iterator[LabFleet]:
    """Every lab host running kvmrec (``start``; else none yet) on a new prefix of the etcd
    at ``endpoints`` (through a proxy per host to ``proxy_to``, if given), labelled
    ``zone=a|b|c``, with ``options``, in its host's mount namespace if ``namespaced``;
    afterwards the hosts stopped, their guests removed from every lab host, the local
    images named for them removed, the prefix deleted."""
    name = f"kf-{uuid.uuid4().hex[:6]}"
    prefix = f"/kvmrec-test-{name}"
    with contextlib.ExitStack() as stack:
        proxies = {
            h: stack.enter_context(TcpProxy(proxy_to)) for h in lab.hosts if proxy_to is not None
        }
        fleet = Fleet(
            root,
            prefix,
            endpoints,
            lab.uris,
            {h: {"zone": ZONES.get(h, h)} for h in lab.hosts},
            host_endpoints={h: p.address for h, p in proxies.items()},
            mount_namespaces={h: lab.libvirtd_pid_file(h) for h in lab.hosts if namespaced},
            options=options,
        )
        guests = LabGuests(lab, name)
        stack.callback(_forget, fleet)
        stack.callback(_remove_local_images, lab, name)
        stack.callback(guests.cleanup)
        stack.callback(fleet.stop_all)  # first: a running host would heal what is removed
        if start:
            fleet.start()
        yield LabFleet(lab, fleet, guests, proxies)


def _forget(fleet: Fleet) -> None:
    with contextlib.suppress(EtcdError):
        gateway = fleet.gateway()
        try:
            gateway.delete(f"{fleet.prefix}/".encode(), prefix=True)
        finally:
            gateway.close()


def _remove_local_images(lab: Lab, prefix: str) -> None:
    for host in lab.hosts:
        for image in lab.local_images(host).glob(f"{prefix}-*"):
            image.unlink(missing_ok=True)
