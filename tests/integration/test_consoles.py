"""Consoles of a real guest: ``kvmrec status`` shows the VNC display and the serial pty (as
``virsh vncdisplay`` and the live XML have them), and ``kvmrec console`` in a pty talks to
the test guest's shell on its serial console and detaches on Ctrl+].
"""

from __future__ import annotations

import os
import pty
import random
import select
import subprocess
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from guest_os import GuestImage, guest_spec
from realstack import Controller, condition, domain_manifest, wait_for

pytestmark = pytest.mark.integration


def _live_consoles(conn: Any, name: str) -> tuple[int, str]:
    root = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    graphics = root.find("devices/graphics[@type='vnc']")
    source = root.find("devices/console[@type='pty']/source")
    assert graphics is not None and source is not None
    return int(graphics.get("port", "-1")), source.get("path", "")


def _read_until(fd: int, wanted: bytes, timeout: float) -> bytes:
    """What ``fd`` gives until ``wanted`` appears; fails after ``timeout``."""
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"{wanted!r} not seen within {timeout}s; got {seen[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side of the pty closed
                pytest.fail(f"the console closed before {wanted!r}; got {seen[-2000:]!r}")
            if not chunk:
                pytest.fail(f"end of output before {wanted!r}; got {seen[-2000:]!r}")
            seen += chunk
    return seen


def test_status_shows_vnc_and_serial_and_console_attaches(
    controller: Controller, conn: Any, prefix: str, guest_image: GuestImage
) -> None:
    name = f"{prefix}-con"
    spec = guest_spec(
        guest_image, "kt-console", agent=False, graphics={"type": "vnc", "listen": "127.0.0.1"}
    )
    controller.disk_roots.append(guest_image.dir)
    controller.write("con.yaml", domain_manifest(name, "qemu", **spec))
    controller.start()
    wait_for(
        lambda: (condition(controller.object(name), "Ready") or {}).get("reason") == "Running",
        60,
        "the guest running",
    )
    port, pty_path = _live_consoles(conn, name)
    assert port >= 5900 and pty_path.startswith("/dev/pts/")

    obj = controller.object(name)
    assert obj is not None
    assert obj["consoles"] == {
        "vnc": {"display": f":{port - 5900}", "port": port, "listen": "127.0.0.1"},
        "serial": {"pty": pty_path},
    }
    wide = controller.cli("status", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[6:8] == ["VNC", "CONSOLE"]
    row = next(line for line in wide if f" {name} " in line)
    assert f"127.0.0.1:{port - 5900}({port})" in row and pty_path in row

    # kvmrec console on a pseudo terminal, as a person types into it.
    main, child = pty.openpty()
    proc = subprocess.Popen(
        controller.command("console", name, "--connect", controller.stack["LIBVIRT_DEFAULT_URI"]),
        stdin=child,
        stdout=child,
        stderr=child,
        env=controller.env(),
        start_new_session=True,
    )
    os.close(child)
    try:
        _read_until(main, b"Escape character is ^]", 20)
        token = random.randrange(10**5, 10**6)
        # The shell echoes the command line as typed; only the answer has the sum in it.
        answer = f"kvmrec-{token + 1}".encode()
        deadline = time.monotonic() + 90  # the guest may still be booting to its shell
        while True:
            os.write(main, f"echo kvmrec-$(({token} + 1))\r".encode())
            try:
                _read_until(main, answer, 5)
                break
            except pytest.fail.Exception:
                if time.monotonic() > deadline:
                    raise
        os.write(main, b"\x1d")  # Ctrl+]
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    assert conn.lookupByName(name).isActive()  # detaching leaves the guest running
