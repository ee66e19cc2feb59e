"""The test guest: a tiny Linux with the QEMU guest agent (scripts/test-guest.sh), the
domain spec that boots it, a network that gives it a DHCP lease, and the agent commands
an operator would send it by hand (what a test checks kvmrec's answers against).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu
import pytest
from realstack import REPO, temporary_network


@dataclass(frozen=True)
class GuestImage:
    """The built image: a kernel, an initramfs with qemu-ga, an empty ext4 data disk."""

    dir: Path
    # What guests boot: the uncompressed kernel where the image has one (QEMU enters it
    # by its PVH note, skipping the xz decompressor, seconds of CPU under TCG per boot on
    # a host that runs many), else the bzImage.
    kernel: Path
    initrd: Path
    data: Path  # a 16 MiB qcow2 holding an ext4 file system labelled kvmrec-data
    bzimage: Path  # the kernel as distributions ship it (installer media carry this one)


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    """Built once and cached across runs (the script returns at once when it is)."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "test-guest.sh"), "build"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/test-guest.sh build failed:\n{done.stderr[-3000:]}")
    root = Path(done.stdout.strip().splitlines()[-1]).resolve()
    info = json.loads((root / "info.json").read_text())
    kernel = root / (info.get("kernel_pvh") or info["kernel"])
    bzimage = root / info["kernel"]
    return GuestImage(root, kernel, root / info["initrd"], root / info["data_disk"], bzimage)


def guest_spec(
    guest: GuestImage,
    hostname: str,
    *,
    agent: bool = True,
    network: str | None = None,
    data: Path | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """Domain spec fields of a test guest: TCG (a real kernel hangs under nested KVM here),
    direct kernel boot, the agent channel, a NIC on ``network``, ``data`` as vda."""
    fields: dict[str, Any] = {
        "memory": "192Mi",
        "guestAgent": agent,
        "os": {
            "kernel": str(guest.kernel),
            "initrd": str(guest.initrd),
            "cmdline": f"console=ttyS0 kvmrec.hostname={hostname}",
        },
    }
    if network is not None:
        fields["interfaces"] = [{"name": "net0", "network": network}]
    if data is not None:
        fields["disks"] = [{"path": str(data), "format": "qcow2"}]
    fields.update(spec)
    return fields


def copy_data_disk(guest: GuestImage, target: Path) -> Path:
    subprocess.run(["cp", "--sparse=always", str(guest.data), str(target)], check=True)
    return target


@pytest.fixture
def dhcp_network(stack: dict[str, str], prefix: str) -> Iterator[str]:
    """An isolated libvirt network of this test whose dnsmasq hands out leases."""
    third = int(prefix[-2:], 16)
    ip = (
        f"<ip address='10.252.{third}.1' netmask='255.255.255.0'><dhcp>"
        f"<range start='10.252.{third}.10' end='10.252.{third}.200'/></dhcp></ip>"
    )
    with temporary_network(stack, f"{prefix}-dhcp", f"{prefix}-db", ip) as name:
        yield name


def agent_command(conn: Any, name: str, command: dict[str, Any], timeout: int = 10) -> Any:
    """One raw guest agent command (what an operator would do with virsh)."""
    answer = libvirt_qemu.qemuAgentCommand(conn.lookupByName(name), json.dumps(command), timeout, 0)
    return json.loads(answer).get("return")


def agent_answers(conn: Any, name: str) -> bool:
    try:
        agent_command(conn, name, {"execute": "guest-ping"}, timeout=2)
    except libvirt.libvirtError:
        return False
    return True


def guest_exec(conn: Any, name: str, *argv: str) -> tuple[int, str]:
    """Run ``argv`` in the guest through the agent; (exit code, stdout)."""
    pid = agent_command(
        conn,
        name,
        {
            "execute": "guest-exec",
            "arguments": {"path": argv[0], "arg": list(argv[1:]), "capture-output": True},
        },
    )["pid"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = agent_command(
            conn, name, {"execute": "guest-exec-status", "arguments": {"pid": pid}}
        )
        if status.get("exited"):
            out = base64.b64decode(status.get("out-data", "")).decode(errors="replace")
            return int(status.get("exitcode", -1)), out
        time.sleep(0.1)
    pytest.fail(f"{argv} did not end in the guest {name} within 30 s")


def guest_clock(conn: Any, name: str) -> float:
    answer = conn.lookupByName(name).getTime(0)
    return float(answer["seconds"]) + float(answer.get("nseconds", 0)) / 1e9
