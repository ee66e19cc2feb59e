"""cloudInit and osVariant on the real stack (qemu:///system), driven by the real ``kvmrec run``.

The test guest has no cloud-init; it mounts its NoCloud seed (found by its label, as
cloud-init finds it) by agent exec and reads user-data back through the agent, byte for
byte. A change of userData is drift: the seed is made again, the running guest keeps the
one it booted with (RestartRequired) and reads the new one after its next start. An
osVariant guest carries the libosinfo metadata virt-install writes, read by ``virsh``.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from guest_os import GuestImage, agent_answers, agent_command, guest_exec, guest_spec
from realstack import Controller, condition, domain_manifest, plan, wait_for

from kvmrec.backends import seed_iso

pytestmark = pytest.mark.integration

BOOT = 90.0  # seconds for a TCG guest to boot and its agent to answer, with room to spare
USER_DATA = "#cloud-config\n# kvmrec test \u2713\nruncmd:\n  - [sh, -c, 'echo hi']\n"


def read_guest_file(conn: Any, name: str, path: str) -> bytes:
    """A file of the guest, read through the agent (guest-file-open/read/close)."""
    handle = agent_command(
        conn, name, {"execute": "guest-file-open", "arguments": {"path": path, "mode": "r"}}
    )
    data = b""
    try:
        while True:
            chunk = agent_command(
                conn,
                name,
                {"execute": "guest-file-read", "arguments": {"handle": handle, "count": 65536}},
            )
            data += base64.b64decode(chunk.get("buf-b64", ""))
            if chunk.get("eof") or not chunk.get("count"):
                return data
    finally:
        agent_command(conn, name, {"execute": "guest-file-close", "arguments": {"handle": handle}})


def mount_seed(conn: Any, name: str) -> str:
    """Mount the seed read-only on /mnt/seed in the guest; the device it was found on."""
    code, device = guest_exec(conn, name, "/bin/sh", "-c", "findfs LABEL=cidata")
    assert code == 0, "no device labelled cidata in the guest"
    device = device.strip()
    code, out = guest_exec(
        conn,
        name,
        "/bin/sh",
        "-c",
        f"mkdir -p /mnt/seed && mount -t iso9660 -o ro {device} /mnt/seed 2>&1",
    )
    assert code == 0, out
    return device


def seed_digest(controller: Controller, name: str) -> str | None:
    obj = controller.object(name)
    return ((obj or {}).get("details") or {}).get("cloudInit", {}).get("digest")


def test_the_guest_mounts_its_seed_and_reads_its_user_data_a_change_is_drift(
    controller: Controller, conn: Any, prefix: str, guest_image: GuestImage
) -> None:
    name = f"{prefix}-ci"
    controller.disk_roots.append(guest_image.dir)
    network_config = "version: 2\nethernets: {}\n"

    def manifest(user_data: str) -> str:
        cloud = {"userData": user_data, "networkConfig": network_config}
        return domain_manifest(name, "qemu", **guest_spec(guest_image, name, cloudInit=cloud))

    controller.write("ci.yaml", manifest(USER_DATA))
    controller.start()
    wait_for(lambda: agent_answers(conn, name), BOOT, "the agent answers")
    seed = controller.root / f"{name}-cidata.iso"
    assert seed.exists()

    device = mount_seed(conn, name)
    assert device.startswith("/dev/sr"), device  # a sata cdrom, as cloud-init expects
    assert read_guest_file(conn, name, "/mnt/seed/user-data") == USER_DATA.encode()
    assert read_guest_file(conn, name, "/mnt/seed/network-config") == network_config.encode()
    meta = read_guest_file(conn, name, "/mnt/seed/meta-data").decode()
    uuid = conn.lookupByName(name).UUIDString()
    assert meta == f"instance-id: {uuid}\nlocal-hostname: {name}\n"
    first = wait_for(lambda: seed_digest(controller, name), 30, "the seed digest in status")
    # The seed as libvirt keeps it (with its defaults filled in) is what kvmrec wants.
    code, out = plan(controller)
    assert code == 0, out

    # A new user-data: drift; the seed is made again; the running guest needs a restart.
    changed = USER_DATA + "# second version\n"
    controller.write("ci.yaml", manifest(changed))

    def restart_required() -> dict[str, Any] | None:
        cond = condition(controller.object(name), "RestartRequired")
        return cond if cond and cond["status"] == "True" else None

    cond = wait_for(restart_required, 60, "RestartRequired for the new seed")
    assert "spec.cloudInit" in cond["message"]
    assert seed_iso.read(str(seed))[1]["user-data"] == changed.encode()
    assert seed_digest(controller, name) not in (None, first)
    # The running guest still reads the seed it booted with.
    guest_exec(conn, name, "/bin/sh", "-c", "umount /mnt/seed")
    mount_seed(conn, name)
    assert read_guest_file(conn, name, "/mnt/seed/user-data") == USER_DATA.encode()

    # After a restart (by hand here; runStrategy Always starts it again) it reads the new one.
    conn.lookupByName(name).destroy()
    wait_for(lambda: agent_answers(conn, name), BOOT, "the agent answers after the restart")
    mount_seed(conn, name)
    assert read_guest_file(conn, name, "/mnt/seed/user-data") == changed.encode()
    wait_for(
        lambda: (
            (c := condition(controller.object(name), "RestartRequired")) and c["status"] == "False"
        ),
        60,
        "RestartRequired resolved",
    )

    # Removing the manifest deletes the guest and its seed.
    controller.remove("ci.yaml")
    wait_for(lambda: name not in {d.name() for d in conn.listAllDomains(0)}, 60, "undefined")
    wait_for(lambda: not seed.exists(), 10, "the seed deleted")


@pytest.mark.skipif(not Path("/usr/share/osinfo/os/debian.org").is_dir(), reason="no osinfo-db")
def test_an_os_variant_guest_has_the_metadata_virt_install_tools_read(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    name = f"{prefix}-osv"
    controller.write(
        "osv.yaml",
        domain_manifest(name, stack["KVMREC_DOMAIN_TYPE"], memory="128Mi", osVariant="debian11"),
    )
    controller.start()

    def below() -> dict[str, Any] | None:
        cond = condition(controller.object(name), "BelowOSMinimum")
        return cond if cond and cond["status"] == "True" else None

    cond = wait_for(below, 60, "BelowOSMinimum")
    code, out = plan(controller)  # q35 and the metadata read back as written: nothing to do
    assert code == 0, out
    assert cond["message"] == "spec.memory 128 MiB is below the 1024 MiB Debian 11 needs"
    dumped = subprocess.run(
        ["virsh", "-c", stack["LIBVIRT_DEFAULT_URI"], "dumpxml", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0"' in dumped
    assert '<libosinfo:os id="http://debian.org/debian/11"/>' in dumped
    assert "<kvmrec:owner" in dumped  # kvmrec's own stamp stays beside it
    assert "machine='pc-q35-" in dumped or 'machine="pc-q35-' in dumped
    # virsh reads the element back by its namespace, as libosinfo-aware tools do.
    metadata = subprocess.run(
        [
            "virsh",
            "-c",
            stack["LIBVIRT_DEFAULT_URI"],
            "metadata",
            name,
            "--uri",
            "http://libosinfo.org/xmlns/libvirt/domain/1.0",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'os id="http://debian.org/debian/11"' in metadata
    if shutil.which("osinfo-query"):
        listed = subprocess.run(
            ["osinfo-query", "os", "--fields=short-id,id"], capture_output=True, text=True
        ).stdout
        assert "http://debian.org/debian/11" in listed
