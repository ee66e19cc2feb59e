"""An install from media on the real stack (qemu:///system), driven by the real ``kvmrec run``.

The installer is the test guest itself, on an ISO made here with the Debian installer's
layout (install.amd/vmlinuz, install.amd/initrd.gz): booted with ``kvmrec.installer=1``
(the install's extraArgs) its /init notes the install on the data disk and powers off
(``kvmrec.installer=reboot``: reboots, which the installer's on_reboot destroy turns into
its end). kvmrec then boots the guest from its own definition (here the test guest's kernel without
that argument), which finds the note; a restart of kvmrec and a third start of the guest
do not install again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from guest_os import GuestImage, agent_answers, copy_data_disk, guest_exec, guest_spec
from realstack import Controller, condition, domain_manifest, state_of, wait_for

from kvmrec.backends import domain_xml
from support import installer_iso

pytestmark = pytest.mark.integration

# Seconds for a TCG guest to boot (and the installer to end): a deadline with room for a
# loaded machine, where a boot that takes 6 s alone has taken over 100 s.
BOOT = 300.0
MARKER = "/mnt/data/kvmrec-installed"
LINE = "installed by the kvmrec test installer"


def phase(controller: Controller, name: str) -> str | None:
    obj = controller.object(name)
    return ((obj or {}).get("details") or {}).get("install", {}).get("phase")


def event_reasons(controller: Controller, name: str) -> list[str]:
    done = controller.cli("events", f"Domain/{name}", "-o", "json")
    assert done.returncode == 0, done.stderr
    return [e["reason"] for e in json.loads(done.stdout)["events"]]


def marker_lines(conn: Any, name: str) -> list[str]:
    code, out = guest_exec(conn, name, "/bin/cat", MARKER)
    assert code == 0, f"no {MARKER} in the installed guest"
    return out.splitlines()


# The installer powers the guest off at its end, or reboots it (as most installers do; the
# installer's definition has on_reboot destroy, so that ends the install too).
@pytest.mark.parametrize("ends", ["1", "reboot"], ids=["poweroff", "reboot"])
def test_a_location_install_runs_once_and_the_installed_guest_finds_what_it_wrote(
    controller: Controller,
    conn: Any,
    prefix: str,
    guest_image: GuestImage,
    tmp_path: Path,
    ends: str,
) -> None:
    name = f"{prefix}-inst"
    controller.disk_roots.append(guest_image.dir)
    data = copy_data_disk(guest_image, tmp_path / f"{name}-data.qcow2")
    iso = installer_iso.write(
        tmp_path / "installer.iso",
        {
            "install.amd/vmlinuz": guest_image.bzimage.read_bytes(),
            "install.amd/initrd.gz": guest_image.initrd.read_bytes(),
        },
    )
    install = {"location": str(iso), "extraArgs": f"console=ttyS0 kvmrec.installer={ends}"}
    spec = guest_spec(guest_image, name, data=data, install=install)
    controller.write("inst.yaml", domain_manifest(name, "qemu", **spec))
    controller.start()

    # The installer (its kernel copied out of the ISO, booted with the extra args) notes
    # the install and powers the guest off; kvmrec boots it from its own definition.
    copied = tmp_path / f"{name}-install-vmlinuz"
    wait_for(lambda: phase(controller, name) == "Installed", BOOT, "the install ended")
    cond = condition(controller.object(name), "Installed")
    assert cond is not None and (cond["status"], cond["reason"]) == ("True", "Installed")
    assert not copied.exists() and not (tmp_path / f"{name}-install-initrd").exists()
    config = domain_xml.parse(conn.lookupByName(name).XMLDesc(0))
    assert config.kernel == str(guest_image.kernel)
    assert "kvmrec.installer" not in (config.cmdline or "")
    wait_for(lambda: agent_answers(conn, name), BOOT, "the installed guest's agent answers")
    assert marker_lines(conn, name) == [LINE]

    # kvmrec restarts; the guest stops and is started a third time: no install again.
    controller.stop()
    controller.start()
    conn.lookupByName(name).destroy()
    wait_for(lambda: state_of(conn, name) == "running", 60, "kvmrec starts it a third time")
    wait_for(lambda: agent_answers(conn, name), BOOT, "the agent answers after the third start")
    assert marker_lines(conn, name) == [LINE]
    assert phase(controller, name) == "Installed"
    assert "kvmrec.installer" not in (
        domain_xml.parse(conn.lookupByName(name).XMLDesc(0)).cmdline or ""
    )
    reasons = event_reasons(controller, name)
    assert reasons.count("InstallEnded") == 1, reasons
    assert reasons.count("InstallerCopied") == 1 and "InstallerRemoved" in reasons, reasons
    assert "CrashLoopBackOff" not in reasons, reasons  # the installer's end was no failure
