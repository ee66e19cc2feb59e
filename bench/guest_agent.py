"""From start to an answering guest agent: the test guest (scripts/test-guest.sh) under TCG,
started by a plain libvirt-python loop and by kvmrec, in the same run.

For each of --trials runs of N guests started together, it measures:

- plain: define + start, then ``guest-ping`` every 50 ms until it answers (agent_s), then
  the agent's interface list until it holds an IPv4 address from the network's DHCP
  (address_s): the floor, what a script polling libvirt as fast as it can sees.
- kvmrec: the manifests dropped into the watched directory of a running service, until
  kvmrec's own status says the agent answered (agent_s) and shows the guest's address
  (address_s): what ``kvmrec status`` tells an operator, and how late.

Prints one JSON object; medians over every guest of every trial.

Usage:
  python bench/guest_agent.py [-n 2] [--trials 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu
from guests import remove_guests

from kvmrec.api.kinds import DomainSpec, ObjectKey
from kvmrec.backends import domain_xml
from kvmrec.service import Service
from kvmrec.settings import Settings

PREFIX = "kb-ga-"
NETWORK = "kb-ga-net"
REPO = Path(__file__).resolve().parents[1]


def guest_dir() -> Path:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "test-guest.sh"), "build"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(done.stdout.strip().splitlines()[-1]).resolve()


def spec(image: Path, name: str) -> dict[str, Any]:
    return {
        "type": "qemu",
        "memory": "192Mi",
        "guestAgent": True,
        "os": {
            "kernel": str(image / "vmlinuz"),
            "initrd": str(image / "initrd.img"),
            "cmdline": f"console=ttyS0 kvmrec.hostname={name}",
        },
        "interfaces": [{"name": "net0", "network": NETWORK}],
    }


def ensure_network(conn: Any) -> None:
    try:
        net = conn.networkLookupByName(NETWORK)
    except libvirt.libvirtError:
        net = conn.networkDefineXML(
            f"<network><name>{NETWORK}</name><bridge name='kb-ga-br'/>"
            "<ip address='10.254.77.1' netmask='255.255.255.0'><dhcp>"
            "<range start='10.254.77.10' end='10.254.77.250'/></dhcp></ip></network>"
        )
    if not net.isActive():
        net.create()


def remove_network(conn: Any) -> None:
    net = conn.networkLookupByName(NETWORK)
    net.destroy()
    net.undefine()


def until(predicate: Callable[[], bool], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the guest did not get there in time")
        time.sleep(0.05)


def pings(dom: Any) -> bool:
    try:
        libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 1, 0)
    except libvirt.libvirtError:
        return False
    return True


def has_ipv4(dom: Any) -> bool:
    try:
        found = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT)
    except libvirt.libvirtError:
        return False
    return any(
        a["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4
        for name, item in found.items()
        if name != "lo"
        for a in item.get("addrs") or []
    )


def plain_trial(conn: Any, image: Path, names: list[str]) -> list[tuple[float, float]]:
    t0 = time.perf_counter()
    doms = []
    for name in names:
        xml = domain_xml.build(name, DomainSpec.from_spec(spec(image, name), name), None)
        dom = conn.defineXML(xml)
        dom.create()
        doms.append(dom)
    marks: list[list[float]] = [[] for _ in doms]

    def progressed() -> bool:
        # Every guest polled in turn, so one guest's wait never delays another's mark.
        for dom, mark in zip(doms, marks, strict=True):
            if not mark and pings(dom):
                mark.append(time.perf_counter() - t0)
            if len(mark) == 1 and has_ipv4(dom):
                mark.append(time.perf_counter() - t0)
        return all(len(mark) == 2 for mark in marks)

    until(progressed)
    return [(mark[0], mark[1]) for mark in marks]


def kvmrec_trial(
    service: Service, manifests: Path, image: Path, names: list[str]
) -> list[tuple[float, float]]:
    t0 = time.perf_counter()
    for name in names:
        body = json.dumps(spec(image, name))
        (manifests / f"{name}.yaml").write_text(
            "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\n"
            f"metadata:\n  name: {name}\nspec: {body}\n"
        )
    seen: dict[str, list[float]] = {name: [] for name in names}

    def guest(name: str) -> dict[str, Any]:
        status = service.store.get_status(ObjectKey("Domain", name))
        return dict((status.details.get("guest") if status else None) or {})

    def progressed() -> bool:
        for name, marks in seen.items():
            g = guest(name)
            if not marks and g.get("agent"):
                marks.append(time.perf_counter() - t0)
            if len(marks) == 1 and any(
                a["family"] == "ipv4" and a["source"] == "agent" for a in g.get("addresses", [])
            ):
                marks.append(time.perf_counter() - t0)
        return all(len(marks) == 2 for marks in seen.values())

    until(progressed)
    for name in names:
        (manifests / f"{name}.yaml").unlink()
    until(lambda: not any(service.store.get(ObjectKey("Domain", n)) for n in names))
    return [(marks[0], marks[1]) for marks in seen.values()]


def summary(results: list[tuple[float, float]]) -> dict[str, float]:
    return {
        "agent_s": round(statistics.median(r[0] for r in results), 2),
        "address_s": round(statistics.median(r[1] for r in results), 2),
        "agent_worst_s": round(max(r[0] for r in results), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", default="qemu:///system")
    parser.add_argument("-n", type=int, default=2, help="guests started together")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    image = guest_dir()
    conn = libvirt.open(args.connect)
    remove_guests(conn, PREFIX)
    ensure_network(conn)
    try:
        plain: list[tuple[float, float]] = []
        for trial in range(args.trials):
            plain += plain_trial(conn, image, [f"{PREFIX}p{trial}-{i}" for i in range(args.n)])
            remove_guests(conn, PREFIX)
        ours: list[tuple[float, float]] = []
        with tempfile.TemporaryDirectory(prefix="kvmrec-bench-") as tmp:
            manifests = Path(tmp) / "manifests"
            manifests.mkdir()
            settings = Settings(
                manifests=manifests,
                connect=args.connect,
                state=Path(tmp) / "state.db",
                disk_roots=(image,),
                stop_grace_period=0.0,  # the bench's guests are destroyed between trials
                allow_mass_delete=True,
            )
            service = Service(settings)
            service.start(watch=True)
            try:
                for trial in range(args.trials):
                    names = [f"{PREFIX}k{trial}-{i}" for i in range(args.n)]
                    ours += kvmrec_trial(service, manifests, image, names)
            finally:
                service.stop()
    finally:
        remove_guests(conn, PREFIX)
        remove_network(conn)
        conn.close()
    print(
        json.dumps(
            {
                "machine": platform.node(),
                "guests_together": args.n,
                "trials": args.trials,
                "plain": summary(plain),
                "kvmrec": summary(ours),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
