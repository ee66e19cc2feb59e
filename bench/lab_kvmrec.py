"""kvmrec hosts on the lab of scripts/lab.sh, run as the lab tests run them.

Each host is ``kvmrec run --store etcd://.../PREFIX --host labN`` inside its lab host's
mount namespace (``nsenter -t PID -m``), so it sees that host's own /var/lib/libvirt. The
benchmarks of the fleet's guests (bench/migration.py, bench/ha.py) share this: the lab as
its env file describes it, the hosts' processes, the CLI on the same store, and the
clean-up of the guests and the etcd prefix a run made.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
from guests import remove_guests

from kvmrec.store.etcd.gateway import Gateway, parse_endpoints

LAB_DIR = Path(os.environ.get("KVMREC_LAB_DIR", "/var/lib/kvmrec-lab"))


@dataclass(frozen=True)
class Lab:
    dir: Path
    shared: Path
    uris: dict[str, str]
    domain_type: str  # kvm where the first host offers it, else qemu

    def host_dir(self, host: str) -> Path:
        return self.dir / "hosts" / host

    def libvirtd_pid(self, host: str) -> str:
        return (self.host_dir(host) / "run" / "libvirt" / "libvirtd.pid").read_text().strip()

    def qemu_pid(self, host: str, guest: str) -> int:
        return int((self.host_dir(host) / "run" / "libvirt" / "qemu" / f"{guest}.pid").read_text())


def load_lab() -> Lab:
    env: dict[str, str] = {}
    for line in (LAB_DIR / "env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            env[key.strip()] = value.strip().strip("'\"")
    uris = {h: env[f"KVMREC_LAB_{h.upper()}_URI"] for h in env["KVMREC_LAB_HOSTS"].split()}
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open(next(iter(uris.values())))
    domain_type = "kvm" if "<domain type='kvm'" in conn.getCapabilities() else "qemu"
    conn.close()
    return Lab(Path(env["KVMREC_LAB_DIR"]), Path(env["KVMREC_LAB_SHARED"]), uris, domain_type)


def wait_until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise TimeoutError(f"not within {timeout:.0f} s: {what}")


def domain_state(lab: Lab, host: str, name: str) -> int | None:
    """libvirt's state of the guest on ``host`` (None where it is not defined)."""
    try:
        conn = libvirt.open(lab.uris[host])
    except libvirt.libvirtError:
        return None
    try:
        return int(conn.lookupByName(name).state()[0])
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


@dataclass
class Fleet:
    """kvmrec hosts of one run on one etcd prefix; ``close`` stops them and removes the
    run's guests (``guest_prefix``) from every lab host and the prefix from etcd."""

    lab: Lab
    etcd: str  # host:port
    prefix: str  # /kvmrec-bench-XXXX
    root: Path  # logs and manifests
    guest_prefix: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def store(self) -> str:
        return f"etcd://{self.etcd}{self.prefix}"

    def log(self, host: str) -> str:
        path = self.root / f"{host}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, host: str, *options: str) -> None:
        command = [
            "nsenter", "-t", self.lab.libvirtd_pid(host), "-m", "--",
            sys.executable, "-m", "kvmrec", "run",
            "--store", self.store,
            "--host", host,
            "--connect", self.lab.uris[host],
            "--stop-grace-period", "0",
            *options,
        ]  # fmt: skip
        joins = self.log(host).count("joined the fleet")
        with (self.root / f"{host}.log").open("ab") as log:
            self.procs[host] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_until(
            f"{host} to join", lambda: self.log(host).count("joined the fleet") > joins, 60, 0.2
        )

    def kill(self, host: str) -> None:
        self.procs[host].send_signal(signal.SIGKILL)
        self.procs[host].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kvmrec", *args, "--store", self.store],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def apply(self, name: str, text: str) -> None:
        path = self.root / f"{name}.yaml"
        path.write_text(text)
        done = self.cli("apply", "-f", str(path))
        if done.returncode != 0:
            raise RuntimeError(f"kvmrec apply: {done.stdout}{done.stderr}")

    def record(self, kind: str, name: str) -> dict[str, Any] | None:
        """The fleet's record of ``name`` under PREFIX/KIND/Domain/ (placements, migrations)."""
        gateway = Gateway(parse_endpoints(self.etcd))
        try:
            kvs = gateway.range(f"{self.prefix}/{kind}/Domain/{name}".encode()).kvs
        finally:
            gateway.close()
        return dict(json.loads(kvs[0].value)) if kvs else None

    def close(self) -> None:
        self.stop()
        for uri in self.lab.uris.values():
            with contextlib.suppress(libvirt.libvirtError):
                conn = libvirt.open(uri)
                remove_guests(conn, self.guest_prefix)
                conn.close()
        gateway = Gateway(parse_endpoints(self.etcd))
        gateway.delete(f"{self.prefix}/".encode(), prefix=True)
        gateway.close()


def domain_manifest(name: str, domain_type: str, **spec: Any) -> str:
    spec = {"type": domain_type, "memory": "64Mi", **spec}
    document = {
        "apiVersion": "kvmrec.io/v1alpha1",
        "kind": "Domain",
        "metadata": {"name": name},
        "spec": spec,
    }
    return json.dumps(document) + "\n"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
