"""The guest agent's table on the test guest (qemu-ga 7.2 in a busybox initramfs, TCG):
``kvmrec guest DOMAIN reboot|time|fsinfo|users`` against what the guest itself says, the
clock offset in ``kvmrec status``, and the one-line errors of a silent agent and of a
command the agent refuses (a frozen guest's agent allows nothing but a thaw).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
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

pytestmark = pytest.mark.integration

BOOT = 90.0  # seconds for a TCG guest to boot and its agent to answer, with room to spare


def _run_guest(
    controller: Controller,
    conn: Any,
    guest_image: GuestImage,
    name: str,
    resync: float = 30.0,
    **spec: Any,
) -> None:
    controller.disk_roots.append(guest_image.dir)
    controller.write(
        f"{name}.yaml", domain_manifest(name, "qemu", **guest_spec(guest_image, name, **spec))
    )
    controller.start(resync=resync)
    wait_for(lambda: agent_answers(conn, name), BOOT, "the agent answers")


def _boot_id(conn: Any, name: str) -> str:
    code, out = guest_exec(conn, name, "/bin/cat", "/proc/sys/kernel/random/boot_id")
    assert code == 0
    return out.strip()


def test_time_fsinfo_and_users_are_what_the_guest_says(
    controller: Controller, conn: Any, prefix: str, guest_image: GuestImage, tmp_path: Path
) -> None:
    name = f"{prefix}-tab"
    controller.disk_roots.append(tmp_path)
    data = copy_data_disk(guest_image, tmp_path / "data.qcow2")
    _run_guest(controller, conn, guest_image, name, data=data)

    def guest(*args: str) -> Any:
        return controller.cli("guest", name, *args)

    # time: the guest clock against the host's.
    done = guest("time", "-o", "json")
    assert done.returncode == 0, done.stderr
    clock = json.loads(done.stdout)
    assert abs(clock["offsetSeconds"]) < 5
    assert abs(datetime.fromisoformat(clock["guest"]).timestamp() - time.time()) < 60
    text = guest("time")
    assert text.returncode == 0 and "offset:" in text.stdout and "(guest minus host)" in text.stdout

    # ...and in status, read with the guest's addresses, host name and OS.
    def status_offset() -> Any:
        offset = ((controller.object(name) or {}).get("guest") or {}).get("clockOffsetSeconds")
        return [offset] if offset is not None else None

    assert abs(wait_for(status_offset, BOOT, "the clock offset in status")[0]) < 5

    # fsinfo: the data disk the guest mounted on /mnt/data, sized as the guest's df says.
    done = guest("fsinfo", "-o", "json")
    assert done.returncode == 0, done.stderr
    filesystems = json.loads(done.stdout)["filesystems"]
    data_fs = next(f for f in filesystems if f["mountpoint"] == "/mnt/data")
    assert data_fs["type"] == "ext4" and data_fs["devices"] == ["vda"]
    code, df = guest_exec(conn, name, "/bin/df", "-k", "/mnt/data")
    assert code == 0
    used_kib = int(df.splitlines()[-1].split()[2])
    assert abs(data_fs["usedBytes"] - used_kib * 1024) <= 1024 * 1024
    assert 8 * 1024**2 < data_fs["totalBytes"] <= 16 * 1024**2
    assert data_fs["usedBytes"] <= data_fs["totalBytes"]
    table = guest("fsinfo")
    assert table.returncode == 0 and "/mnt/data" in table.stdout and "ext4" in table.stdout

    # users: nobody logs in to the test guest (no utmp), and the agent agrees.
    assert agent_command(conn, name, {"execute": "guest-get-users"}) == []
    done = guest("users", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["users"] == []
    assert guest("users").stdout.strip() == "nobody is logged in"

    # A frozen guest's agent refuses everything but a thaw: said so, by command.
    assert agent_command(conn, name, {"execute": "guest-fsfreeze-freeze"}) >= 1
    try:
        refused = guest("users")
        assert refused.returncode == 1 and refused.stdout == ""
        assert len(refused.stderr.strip().splitlines()) == 1
        assert "the guest agent has guest-get-users disabled" in refused.stderr
    finally:
        agent_command(conn, name, {"execute": "guest-fsfreeze-thaw"})
    assert guest("users").returncode == 0


def test_reboot_through_the_agent_then_acpi_when_the_agent_is_silent(
    controller: Controller, conn: Any, prefix: str, guest_image: GuestImage
) -> None:
    name = f"{prefix}-rb"
    _run_guest(controller, conn, guest_image, name)
    first = _boot_id(conn, name)

    done = controller.cli("guest", name, "reboot")
    assert done.returncode == 0, done.stderr
    assert "through the guest agent" in done.stdout
    second = wait_for(
        lambda: agent_answers(conn, name) and (b := _boot_id(conn, name)) != first and b,
        BOOT,
        "the guest booted again",
    )
    assert state_of(conn, name) == "running"

    # qemu-ga stopped (SIGSTOP: /init would restart one that died): the agent is silent,
    # every question is one line and exit 1 ...
    stop = "sleep 1; kill -STOP $(pidof qemu-ga)"
    agent_command(
        conn,
        name,
        {"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", stop]}},
    )
    wait_for(lambda: not agent_answers(conn, name), 30, "the agent is silent")
    silent = controller.cli("guest", name, "time")
    assert silent.returncode == 1 and silent.stdout == ""
    assert len(silent.stderr.strip().splitlines()) == 1
    assert "the guest agent does not answer" in silent.stderr

    # ... and a reboot presses the ACPI button instead, saying so.
    done = controller.cli("guest", name, "reboot", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"domain": name, "method": "acpi"}
    wait_for(
        lambda: agent_answers(conn, name) and _boot_id(conn, name) not in (first, second),
        BOOT,
        "the guest booted again through ACPI, its agent back",
    )
    assert state_of(conn, name) == "running"
    events = controller.cli("events", f"Domain/{name}").stdout
    assert "rebooted through the guest agent by hand" in events
    assert "rebooted through ACPI by hand (the guest agent did not answer)" in events


def test_sync_clock_sets_a_guest_clock_read_off_the_hosts(
    controller: Controller, conn: Any, prefix: str, guest_image: GuestImage
) -> None:
    name = f"{prefix}-clk"
    _run_guest(controller, conn, guest_image, name, resync=2.0, syncClock=True)
    wait_for(lambda: "clockOffsetSeconds" in ((controller.object(name) or {}).get("guest") or {}))
    # Put the guest clock five minutes behind, as a long pause would.
    behind = int((time.time() - 300) * 1e9)
    agent_command(conn, name, {"execute": "guest-set-time", "arguments": {"time": behind}})
    assert guest_clock(conn, name) < time.time() - 200

    wait_for(
        lambda: "ClockSynced" in controller.cli("events", f"Domain/{name}").stdout,
        60,
        "the clock set on a resync",
    )
    assert abs(guest_clock(conn, name) - time.time()) < 5
    events = controller.cli("events", f"Domain/{name}").stdout
    assert "the guest clock was -" in events and "s off the host's" in events
    offset = (controller.object(name) or {})["guest"]["clockOffsetSeconds"]
    assert offset is None or abs(offset) < 5
