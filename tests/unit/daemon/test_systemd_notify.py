"""sd_notify without libsystemd: datagrams to $NOTIFY_SOCKET, and the watchdog's variables."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmrec import systemd


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield sock, str(path)
    sock.close()


def test_notify_sends_one_datagram_to_a_path(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)

    assert systemd.notify("READY=1\nSTATUS=3 objects, 0 errors")
    assert systemd.notify("WATCHDOG=1")

    assert sock.recv(4096) == b"READY=1\nSTATUS=3 objects, 0 errors"
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_notify_to_the_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"kvmrec-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)  # what systemd means by "@name"
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)

        assert systemd.notify("STOPPING=1")

        assert sock.recv(4096) == b"STOPPING=1"


def test_notify_without_a_socket_is_a_quiet_no(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert systemd.notify("READY=1") is False


@pytest.mark.parametrize("address", ["vsock:2:1234", "relative/notify"])
def test_notify_to_a_transport_it_does_not_speak_is_no(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert systemd.notify("READY=1") is False


def test_notify_to_a_socket_nobody_listens_on_does_not_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert systemd.notify("READY=1") is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 30.0),
        ("2000000", "self", 2.0),
        ("500", None, 0.0005),
        ("2000000", "1", None),  # meant for another process (inherited from a parent)
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        ("2000000", "me", None),
        (None, None, None),
        ("", None, None),
    ],
)
def test_watchdog_interval(
    usec: str | None, pid: str | None, expected: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert systemd.watchdog_interval() == expected


def test_monotonic_usec_is_clock_monotonic_in_microseconds() -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    value = systemd.monotonic_usec()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before <= value <= after
