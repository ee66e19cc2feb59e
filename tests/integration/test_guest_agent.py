"""The guest agent features on a real guest OS: a tiny Linux with qemu-ga (scripts/test-guest.sh)
booted by direct kernel boot under TCG, driven by the real ``kvmrec run``.

What the guest says (addresses, host name, OS) and the DHCP lease fallback; stopping
through the agent, then ACPI, then destroy; a restart that powers the guest off cleanly;
quiesced snapshots of a mounted ext4 disk; a revert that proves itself by a file written
in the guest; the guest clock after a revert and a resume; ``kvmrec guest``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from guest_os import (
    GuestImage,
    agent_answers,
    agent_command,
    copy_data_disk,
    guest_clock,
    guest_exec,
    guest_spec,
)
from realstack import Controller, domain_manifest, state_of, wait_for

# Pauses, resumes and clocks of TCG guests: in the suite's serial run (Makefile), where a
# loaded host cannot stretch a pause past what the service allows a job.
pytestmark = [pytest.mark.integration, pytest.mark.quiet]

BOOT = 90.0  # seconds for a TCG guest to boot and its agent to answer, with room to spare


def _details(controller: Controller, name: str) -> dict[str, Any]:
    obj = controller.object(name)
    return dict(obj["details"]) if obj else {}


def _guest(controller: Controller, name: str) -> dict[str, Any]:
    obj = controller.object(name)
    return (obj or {}).get("guest") or {}


def _events(controller: Controller, name: str) -> str:
    return controller.cli("events", f"Domain/{name}").stdout


def _run_guest(
    controller: Controller, conn: Any, guest_image: GuestImage, name: str, **spec: Any
) -> None:
    """Drop the manifest of a test guest (host name = its name), start kvmrec, wait until
    the guest's agent answers."""
    controller.disk_roots.append(guest_image.dir)
    controller.write(
        f"{name}.yaml", domain_manifest(name, "qemu", **guest_spec(guest_image, name, **spec))
    )
    controller.start()
    wait_for(lambda: agent_answers(conn, name), BOOT, "the agent answers")


def test_status_shows_addresses_hostname_and_os_from_the_agent_or_the_lease(
    controller: Controller, conn: Any, prefix: str, guest_image: GuestImage, dhcp_network: str
) -> None:
    with_agent, without = f"{prefix}-ga", f"{prefix}-nga"
    controller.disk_roots.append(guest_image.dir)
    controller.write(
        "ga.yaml",
        domain_manifest(
            with_agent, "qemu", **guest_spec(guest_image, "kt-ga-host", network=dhcp_network)
        ),
    )
    controller.write(
        "nga.yaml",
        domain_manifest(
            without,
            "qemu",
            **guest_spec(guest_image, "kt-nga-host", agent=False, network=dhcp_network),
        ),
    )
    controller.start()

    # Until the guest has configured its address, its lease stands in for it.
    def from_the_agent() -> dict[str, Any] | None:
        guest = _guest(controller, with_agent)
        return guest if any(a["source"] == "agent" for a in guest.get("addresses", [])) else None

    guest = wait_for(from_the_agent, BOOT, "the agent reports an address")
    assert guest["agent"] is True
    assert guest["hostname"] == "kt-ga-host"
    assert "kvmrec" in (guest["os"] or "").lower()
    assert guest["kernel"]
    ipv4 = [a for a in guest["addresses"] if a["family"] == "ipv4"]
    assert ipv4 and all(a["source"] == "agent" for a in ipv4)
    assert ipv4[0]["address"].startswith("10.252.")
    # The agent's address is the one libvirt's dnsmasq leased to that MAC.
    leases = conn.networkLookupByName(dhcp_network).DHCPLeases()
    assert {(lease["mac"], lease["ipaddr"]) for lease in leases} >= {
        (ipv4[0]["mac"], ipv4[0]["address"])
    }

    lease_only = wait_for(
        lambda: (g := _guest(controller, without)).get("addresses") and g,
        BOOT,
        "the DHCP lease of the guest without an agent",
    )
    assert lease_only["agent"] is False and lease_only["hostname"] is None
    assert {a["source"] for a in lease_only["addresses"]} == {"lease"}

    wide = subprocess.run(
        controller.command("status", "--state", str(controller.state), "-o", "wide"),
        capture_output=True,
        text=True,
        env=controller.env(),
        timeout=30,
        check=False,
    ).stdout
    header, *rows = wide.splitlines()
    assert header.split()[:6] == ["KIND", "NAME", "STATE", "IP", "HOSTNAME", "OS"]
    row = next(r for r in rows if f" {with_agent} " in r)
    assert f"{ipv4[0]['address']}(agent)" in row and "kt-ga-host" in row
    row = next(r for r in rows if f" {without} " in r)
    assert "(lease)" in row


def test_stop_asks_the_agent_then_acpi_then_destroys(
    controller: Controller,
    conn: Any,
    prefix: str,
    guest_image: GuestImage,
    stack: dict[str, str],
    dhcp_network: str,
) -> None:
    agent, acpi, deaf = f"{prefix}-agent", f"{prefix}-acpi", f"{prefix}-deaf"
    controller.disk_roots.append(guest_image.dir)
    grace = {"terminationGracePeriodSeconds": 60}

    def manifests(run_strategy: str) -> dict[str, str]:
        return {
            agent: domain_manifest(
                agent, "qemu", runStrategy=run_strategy, **guest_spec(guest_image, "a", **grace)
            ),
            # No agent: the power button it is; its NIC's lease tells when it has booted.
            acpi: domain_manifest(
                acpi,
                "qemu",
                runStrategy=run_strategy,
                **guest_spec(guest_image, "b", agent=False, network=dhcp_network, **grace),
            ),
            # No OS: neither the agent nor the power button is ever answered.
            deaf: domain_manifest(
                deaf,
                stack["KVMREC_DOMAIN_TYPE"],
                runStrategy=run_strategy,
                guestAgent=True,
                terminationGracePeriodSeconds=4,
            ),
        }

    for name, text in manifests("Always").items():
        controller.write(f"{name}.yaml", text)
    controller.start()
    wait_for(lambda: agent_answers(conn, agent), BOOT, "the agent answers")
    wait_for(lambda: _guest(controller, acpi).get("addresses"), BOOT, "the acpi guest booted")
    wait_for(lambda: state_of(conn, deaf) == "running", 30, "the guest without an OS runs")

    for name, text in manifests("Halted").items():
        controller.write(f"{name}.yaml", text)

    for name in (agent, acpi, deaf):
        wait_for(lambda n=name: state_of(conn, n) == "shutoff", 60, f"{name} off")
    stops = {
        name: wait_for(lambda n=name: _details(controller, n).get("lastStop"), 20, "lastStop")
        for name in (agent, acpi, deaf)
    }
    assert stops[agent]["method"] == "agent"
    assert stops[acpi]["method"] == "acpi"
    assert stops[deaf]["method"] == "destroy" and stops[deaf]["seconds"] >= 4
    # A clean power off is a shutdown to libvirt, not a destroy.
    assert conn.lookupByName(agent).state()[1] == 1  # VIR_DOMAIN_SHUTOFF_SHUTDOWN
    assert conn.lookupByName(acpi).state()[1] == 1
    assert "powered off through the guest agent" in _events(controller, agent)
    assert "powered off by the ACPI power button" in _events(controller, acpi)
    assert "did not power off within the 4s grace period" in _events(controller, deaf)


def test_deletion_and_restart_power_the_guest_off_through_the_agent(
    controller: Controller, conn: Any, prefix: str, guest_image: GuestImage
) -> None:
    name = f"{prefix}-rs"
    controller.disk_roots.append(guest_image.dir)
    spec = guest_spec(guest_image, "kt-rs", restartPolicy="Auto", terminationGracePeriodSeconds=60)
    controller.write("rs.yaml", domain_manifest(name, "qemu", **spec))
    controller.start()
    wait_for(lambda: agent_answers(conn, name), BOOT, "the agent answers")

    # A new kernel command line needs a restart: kvmrec powers the guest off cleanly and
    # starts it again with it.
    spec["os"] = {**spec["os"], "cmdline": spec["os"]["cmdline"] + " kvmrec.generation=2"}
    controller.write("rs.yaml", domain_manifest(name, "qemu", **spec))
    wait_for(
        lambda: (_details(controller, name).get("lastStop") or {}).get("method") == "agent",
        BOOT,
        "a restart through the agent",
    )
    wait_for(lambda: agent_answers(conn, name), BOOT, "the agent answers after the restart")
    code, cmdline = guest_exec(conn, name, "/bin/cat", "/proc/cmdline")
    assert code == 0 and "kvmrec.generation=2" in cmdline
    assert "Restarted" in _events(controller, name)

    controller.remove("rs.yaml")
    wait_for(lambda: state_of(conn, name) is None, 60, "deleted")
    assert "powered off through the guest agent" in _events(controller, name)


def test_quiesced_snapshot_freezes_the_mounted_data_disk(
    controller: Controller, conn: Any, prefix: str, guest_image: GuestImage, tmp_path: Path
) -> None:
    name = f"{prefix}-q"
    data = copy_data_disk(guest_image, tmp_path / "data.qcow2")
    _run_guest(controller, conn, guest_image, name, data=data)
    code, mounts = guest_exec(conn, name, "/bin/cat", "/proc/mounts")
    assert code == 0 and "/mnt/data ext4 rw" in mounts

    controller.write(
        "snap.yaml",
        "apiVersion: kvmrec.io/v1alpha1\nkind: Snapshot\nmetadata:\n"
        f"  name: {prefix}-s1\nspec:\n  domain: {name}\n  quiesce: required\n",
    )
    snap = wait_for(
        lambda: (o := controller.object(f"{prefix}-s1", "Snapshot")) and o["ready"] and o,
        60,
        "the snapshot taken",
    )
    assert snap["details"]["quiesced"] is True
    dom = conn.lookupByName(name)
    assert [s.getName() for s in dom.listAllSnapshots()] == [f"{prefix}-s1"]
    # Thawed again: the guest can write to the disk.
    assert agent_command(conn, name, {"execute": "guest-fsfreeze-status"}) == "thawed"
    code, _ = guest_exec(conn, name, "/bin/sh", "-c", "echo after > /mnt/data/after && sync")
    assert code == 0


def test_a_revert_brings_back_what_the_guest_wrote_and_the_clock_follows_when_asked(
    controller: Controller, conn: Any, prefix: str, guest_image: GuestImage, tmp_path: Path
) -> None:
    name = f"{prefix}-rv"
    data = copy_data_disk(guest_image, tmp_path / "data.qcow2")
    _run_guest(controller, conn, guest_image, name, data=data)

    def kvmrec(*args: str) -> str:
        done = controller.cli(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def write(text: str) -> None:
        code, _ = guest_exec(conn, name, "/bin/sh", "-c", f"echo {text} > /mnt/data/proof && sync")
        assert code == 0

    def read() -> str:
        code, out = guest_exec(conn, name, "/bin/cat", "/mnt/data/proof")
        assert code == 0
        return out.strip()

    write("before")
    assert "(quiesced)" in kvmrec("snapshot", "create", name, "proof")
    write("after")
    assert read() == "after"
    time.sleep(8)  # the guest clock goes back to the snapshot's time with its memory

    # The snapshot holds the guest's memory as it was when taken: frozen. kvmrec thaws it.
    assert "file systems thawed" in kvmrec("snapshot", "revert", name, "proof")
    wait_for(lambda: agent_answers(conn, name), 30, "the agent answers after the revert")
    assert agent_command(conn, name, {"execute": "guest-fsfreeze-status"}) == "thawed"
    assert read() == "before"
    behind = time.time() - guest_clock(conn, name)
    assert behind > 5, f"without a clock sync the reverted guest should be behind, is {behind:.1f}s"

    write("after")
    kvmrec("snapshot", "revert", name, "proof", "--sync-clock")
    assert read() == "before"
    assert abs(time.time() - guest_clock(conn, name)) < 2.5


def test_resume_sets_the_guest_clock_when_asked(
    controller: Controller, conn: Any, prefix: str, guest_image: GuestImage
) -> None:
    name = f"{prefix}-clk"
    _run_guest(controller, conn, guest_image, name, syncClock=True)
    # Paused without kvmrec noticing (it is stopped), for long enough to fall behind.
    controller.stop()
    conn.lookupByName(name).suspend()
    time.sleep(8)
    controller.start()
    wait_for(lambda: state_of(conn, name) == "running", 30, "resumed")
    wait_for(lambda: "set its clock" in _events(controller, name), 30, "the clock set")
    assert abs(time.time() - guest_clock(conn, name)) < 2.5

    # A guest left to the operator (Manual), paused and resumed by hand while kvmrec runs.
    controller.write(
        f"{name}.yaml",
        domain_manifest(
            name,
            "qemu",
            **guest_spec(guest_image, name, syncClock=True, runStrategy="Manual"),
        ),
    )
    wait_for(lambda: (controller.object(name) or {}).get("generation") == 2, 30, "generation 2")
    conn.lookupByName(name).suspend()
    wait_for(lambda: (controller.object(name) or {}).get("state") == "paused", 60, "seen paused")
    time.sleep(8)
    conn.lookupByName(name).resume()
    wait_for(lambda: "resumed by hand; set its clock" in _events(controller, name), 30, "synced")
    assert abs(time.time() - guest_clock(conn, name)) < 2.5


def test_guest_command_pings_informs_and_sets_a_password_from_a_file_or_stdin(
    controller: Controller, conn: Any, prefix: str, guest_image: GuestImage, tmp_path: Path
) -> None:
    name = f"{prefix}-cli"
    _run_guest(controller, conn, guest_image, name)

    def guest(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return controller.cli("guest", name, *args, stdin=stdin)

    ping = guest("ping")
    assert ping.returncode == 0 and "answered in" in ping.stdout
    info = guest("info")
    assert info.returncode == 0 and f"hostname: {name}" in info.stdout
    as_json = json.loads(guest("info", "-o", "json").stdout)
    assert as_json["agent"] is True and as_json["osId"] == "kvmrec-test-guest"

    def shadow_hash() -> str:
        code, shadow = guest_exec(conn, name, "/bin/cat", "/etc/shadow")
        assert code == 0
        return next(
            line.split(":")[1] for line in shadow.splitlines() if line.startswith("tester:")
        )

    def matches(password: str, hashed: str) -> bool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # crypt leaves in 3.13
            crypt = importlib.import_module("crypt")
        return bool(crypt.crypt(password, hashed) == hashed)

    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    done = guest("set-password", "tester", "--password-file", str(secret))
    assert done.returncode == 0, done.stderr
    assert matches("from-a-file", shadow_hash())

    done = guest("set-password", "tester", stdin="from-stdin\n")
    assert done.returncode == 0, done.stderr
    assert matches("from-stdin", shadow_hash())
    assert not matches("from-a-file", shadow_hash())

    empty = guest("set-password", "tester", stdin="")
    assert empty.returncode == 1 and "no password" in empty.stderr
    assert "PasswordSet" in _events(controller, name) and "from-stdin" not in _events(
        controller, name
    )
