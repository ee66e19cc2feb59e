"""Network devices in the kernel: their promiscuous flag, and link notifications.

Promiscuous mode lives in the kernel, not in OVSDB: ``set_promiscuous`` sends rtnetlink
``RTM_NEWLINK`` (what ``ip link set promisc`` sends), ``promiscuous`` reads the flag from
sysfs. ``LinkWatch`` listens to rtnetlink link notifications on the IDL thread
(ovs/connection.py), so a bridge device whose flag changes (an operator's ``ip link``, or
ovs-vswitchd: it drops the flag of its netdev taps when it stops and sets it when it starts)
is an event for that bridge as well.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
from typing import Any, Final

from kvmrec.backends.errors import BackendError, NotFound

_IFF_PROMISC: Final = 0x100

_NLMSG_HDR: Final = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINFOMSG: Final = struct.Struct("=BxHiII")  # family, device type, index, flags, change
_RTATTR: Final = struct.Struct("=HH")  # length, type
_NLMSG_ERROR: Final = 2
_RTM_NEWLINK: Final = 16
_RTM_DELLINK: Final = 17
_NLM_F_REQUEST: Final = 0x1
_NLM_F_ACK: Final = 0x4
_IFLA_IFNAME: Final = 3
_RTMGRP_LINK: Final = 0x1


def parse_link_messages(data: bytes) -> list[tuple[str, bool | None]]:
    """(device name, promiscuous, or None if the device went away) for each link message."""
    links: list[tuple[str, bool | None]] = []
    offset = 0
    while offset + _NLMSG_HDR.size <= len(data):
        length, kind = _NLMSG_HDR.unpack_from(data, offset)[:2]
        if length < _NLMSG_HDR.size:
            break
        body = offset + _NLMSG_HDR.size
        if kind in (_RTM_NEWLINK, _RTM_DELLINK) and body + _IFINFOMSG.size <= len(data):
            flags = _IFINFOMSG.unpack_from(data, body)[3]
            name = None
            attr = body + _IFINFOMSG.size
            while attr + _RTATTR.size <= offset + length:
                attr_len, attr_type = _RTATTR.unpack_from(data, attr)
                if attr_len < _RTATTR.size:
                    break
                if attr_type == _IFLA_IFNAME:
                    raw = data[attr + _RTATTR.size : attr + attr_len]
                    name = raw.split(b"\0", 1)[0].decode(errors="replace")
                attr += (attr_len + 3) & ~3
            if name:
                links.append((name, None if kind == _RTM_DELLINK else bool(flags & _IFF_PROMISC)))
        offset += (length + 3) & ~3
    return links


class LinkWatch:
    """rtnetlink link notifications, read on the IDL thread (its fd joins the IDL's poll)."""

    def __init__(self) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            socket.NETLINK_ROUTE,
        )
        self.sock.bind((0, _RTMGRP_LINK))
        self._promisc: dict[str, bool] = {}  # last seen, so a carrier change is no event

    def wait(self, poller: Any) -> None:
        poller.fd_wait(self.sock.fileno(), select.POLLIN)

    def changed(self) -> tuple[list[str], bool]:
        """Devices whose promiscuous flag changed (or that came or went), and whether
        notifications were lost (the kernel drops them when the socket buffer is full)."""
        names: list[str] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return names, False
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self._promisc.clear()
                    return names, True
                raise
            for name, promisc in parse_link_messages(data):
                if promisc is None:
                    if self._promisc.pop(name, None) is not None:
                        names.append(name)
                elif self._promisc.get(name) != promisc:
                    self._promisc[name] = promisc
                    names.append(name)

    def close(self) -> None:
        self.sock.close()


def set_promiscuous(name: str, on: bool, timeout: float) -> None:
    """Promiscuous mode of a network device (a bridge's internal one: OVS has no column
    for it).

    rtnetlink ``RTM_NEWLINK`` with only ``IFF_PROMISC`` in its change mask, as ``ip link
    set promisc`` sends it: the kernel changes that one flag. The ioctl (``SIOCSIFFLAGS``)
    would write back every flag read a moment earlier, undoing an up/down of
    ovs-vswitchd's in between; running ``ip`` would cost a process and a dependency on
    iproute2. The flag is the device's user-level promiscuity, one bit shared with every
    other user of it: on a netdev bridge ovs-vswitchd sets it when it starts and clears it
    when it stops.
    """
    if not _valid_device_name(name):
        raise NotFound(f"network device {name!r} does not exist")
    try:
        index = socket.if_nametoindex(name)
    except OSError as exc:
        raise NotFound(f"network device {name} does not exist") from exc
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, _IFF_PROMISC if on else 0, _IFF_PROMISC)
    header = _NLMSG_HDR.pack(
        _NLMSG_HDR.size + len(body), _RTM_NEWLINK, _NLM_F_REQUEST | _NLM_F_ACK, 1, 0
    )
    with socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
    ) as sock:
        sock.settimeout(timeout)
        try:
            sock.bind((0, 0))
            sock.send(header + body)
            reply = sock.recv(4096)
        except OSError as exc:
            raise BackendError(f"set promiscuous mode of {name}: {exc}") from exc
    if len(reply) < _NLMSG_HDR.size + 4 or _NLMSG_HDR.unpack_from(reply)[1] != _NLMSG_ERROR:
        raise BackendError(f"set promiscuous mode of {name}: unexpected rtnetlink reply")
    code = -struct.unpack_from("=i", reply, _NLMSG_HDR.size)[0]
    if code == errno.ENODEV:
        raise NotFound(f"network device {name} does not exist")
    if code:
        raise BackendError(f"set promiscuous mode of {name}: {os.strerror(code)}")


def promiscuous(name: str) -> bool | None:
    """Whether the device is promiscuous (for whatever reason: tcpdump counts too); None if
    there is no such device."""
    if not _valid_device_name(name):
        return None
    try:
        with open(f"/sys/class/net/{name}/flags") as flags:
            return bool(int(flags.read().strip(), 16) & _IFF_PROMISC)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _valid_device_name(name: str) -> bool:
    # Linux device names: up to 15 bytes, no "/", no whitespace, not "." or "..".
    return (
        0 < len(name.encode()) <= 15
        and name not in (".", "..")
        and not any(c == "/" or c.isspace() for c in name)
    )
