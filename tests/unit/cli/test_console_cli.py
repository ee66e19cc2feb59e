"""Consoles: the VNC port and serial pty read from live XML, how status shows them, and the
console's copying between a terminal and the guest until Ctrl+]."""

from __future__ import annotations

import os
import threading
from typing import Any

from kvmrec.backends import domain_xml
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.cli import console, report
from kvmrec.reconcilers.domain_report import consoles

LIVE = """<domain type='qemu'><name>c</name><memory unit='KiB'>65536</memory>
<os><type arch='x86_64'>hvm</type></os><devices>
<serial type='pty'><source path='/dev/pts/7'/><target type='isa-serial' port='0'/></serial>
<console type='pty' tty='/dev/pts/7'><source path='/dev/pts/7'/><target type='serial' port='0'/>
</console>
<graphics type='vnc' port='5903' autoport='yes' listen='127.0.0.1'>
<listen type='address' address='127.0.0.1'/></graphics></devices></domain>"""


def live(xml: str, state: str = "running") -> LiveDomain:
    config = domain_xml.parse(xml)
    return LiveDomain(config, state, "booted", False, (xml, False, False), running=config)


def test_live_xml_gives_the_vnc_port_and_the_pty() -> None:
    config = domain_xml.parse(LIVE)
    assert (config.vnc_port, config.serial_pty) == (5903, "/dev/pts/7")
    assert consoles(live(LIVE)) == {
        "vnc": {"display": ":3", "port": 5903, "listen": "127.0.0.1"},
        "serial": {"pty": "/dev/pts/7"},
    }


def test_a_definition_has_no_port_yet_and_a_stopped_guest_no_consoles() -> None:
    inactive = LIVE.replace("port='5903'", "port='-1'").replace("<source path='/dev/pts/7'/>", "")
    config = domain_xml.parse(inactive)
    assert (config.vnc_port, config.serial_pty) == (None, None)
    assert consoles(live(inactive)) == {"vnc": None, "serial": None}
    assert consoles(live(LIVE, "shutoff")) is None


def test_wide_status_columns() -> None:
    obj: dict[str, Any] = {
        "kind": "Domain",
        "name": "c",
        "state": "running",
        "guest": None,
        "consoles": consoles(live(LIVE)),
        "ready": True,
        "synced": True,
        "observedGeneration": 1,
        "generation": 1,
        "drift": [],
        "conditions": [],
        "lastError": None,
        "deleting": False,
    }
    assert report.header(wide=True)[6:8] == ["VNC", "CONSOLE"]
    assert report.row(obj, wide=True)[6:8] == ["127.0.0.1:3(5903)", "/dev/pts/7"]
    assert report.row(obj | {"consoles": None}, wide=True)[6:8] == ["-", "-"]


class FakeConsole:
    """A guest that answers every line it is sent with the line upper-cased."""

    def __init__(self) -> None:
        self.sent = b""
        self.closed = threading.Event()
        self._out: list[bytes] = [b"login banner\r\n"]
        self._cond = threading.Condition()

    def read(self, size: int = 4096) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: self._out or self.closed.is_set())
            return self._out.pop(0) if self._out else b""

    def write(self, data: bytes) -> None:
        with self._cond:
            self.sent += data
            self._out.append(data.upper())
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed.set()
            self._cond.notify_all()


def test_attach_copies_both_ways_and_ctrl_bracket_detaches() -> None:
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    fake = FakeConsole()
    os.write(in_w, b"hello\r")
    done = threading.Thread(target=console.attach, args=(fake, in_r, out_w))  # type: ignore[arg-type]
    done.start()
    seen = b""
    while b"HELLO" not in seen:
        seen += os.read(out_r, 100)
    assert seen.startswith(b"login banner")
    os.write(in_w, b"bye\x1dnot sent")
    done.join(5)
    assert not done.is_alive()
    assert fake.sent == b"hello\rbye" and fake.closed.is_set()
    for fd in (in_r, in_w, out_r, out_w):
        os.close(fd)
