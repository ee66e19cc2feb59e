"""``kvmrec run`` as systemd runs it: notifications, watchdog, reload, one instance per
state file, and a clean stop. systemd itself is played by a unix datagram socket that the
test listens on, named in ``$NOTIFY_SOCKET`` exactly as systemd would name it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from realstack import Controller, wait_for

pytestmark = pytest.mark.integration


class Notifications:
    """What systemd would hear from the service."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.heard: list[tuple[float, str]] = []

    def next(self, line: str, timeout: float) -> str:
        """The next message with ``line`` among its lines."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.heard.append((time.monotonic(), message))
            if line in message.split("\n"):
                return message
        pytest.fail(f"no {line} within {timeout}s; heard {[m for _, m in self.heard]}")


@pytest.fixture
def systemd(
    controller: Controller, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Notifications]:
    listener = Notifications(tmp_path / "notify")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)  # as systemd sets it: not at all here
    # The service's environment only (the stack dict is shared by every test).
    controller.stack = {
        **controller.stack,
        "NOTIFY_SOCKET": str(listener.path),
        "WATCHDOG_USEC": "2000000",
    }
    yield listener
    listener.sock.close()


def policy(name: str) -> str:
    """A SnapshotPolicy that selects nothing: an object that costs libvirt nothing."""
    return (
        "apiVersion: kvmrec.io/v1alpha1\nkind: SnapshotPolicy\n"
        f"metadata:\n  name: {name}\n"
        "spec:\n  selector:\n    matchLabels: {kvmrec-test: none}\n"
        "  every: 1h\n  retention: {keepLast: 1}\n"
    )


def test_ready_after_the_first_snapshot_then_watchdog_then_a_clean_stop(
    controller: Controller, systemd: Notifications, prefix: str
) -> None:
    controller.write("policy.yaml", policy(f"{prefix}-pol"))
    controller.start()

    ready = systemd.next("READY=1", 60)
    # READY means the manifests are already in the store, not merely that we exist.
    assert controller.object(f"{prefix}-pol", "SnapshotPolicy") is not None
    assert any(line.startswith("STATUS=1 objects,") for line in ready.split("\n")), ready
    ready_at = time.monotonic()
    systemd.next("WATCHDOG=1", 3)  # every half of WATCHDOG_USEC's 2 s
    systemd.next("WATCHDOG=1", 3)
    pets = [t for t, m in systemd.heard if m == "WATCHDOG=1" and t >= ready_at]
    assert len(pets) >= 2

    assert controller.proc is not None
    started = time.monotonic()
    controller.proc.send_signal(signal.SIGTERM)
    systemd.next("STOPPING=1", 10)
    assert controller.proc.wait(10) == 0
    assert time.monotonic() - started < 10


def reconciles(controller: Controller, key: str) -> int:
    done = subprocess.run(
        controller.command("history", key, "--state", str(controller.state), "-o", "json"),
        capture_output=True,
        env=controller.env(),
        timeout=30,
        check=False,
    )
    body: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
    return len(body.get("reconciles", []))


def test_sighup_reloads_the_configuration_file(
    controller: Controller, systemd: Notifications, prefix: str, tmp_path: Path
) -> None:
    key = f"SnapshotPolicy/{prefix}-pol"
    config = tmp_path / "config.yaml"
    settings = (
        f"manifests: manifests\nstate: state.db\nconnect: {controller.stack['LIBVIRT_DEFAULT_URI']}"
        "\nworkers: 4\n"
    )
    config.write_text(settings + "resync: 3600\nlog_level: INFO\n")
    controller.write("policy.yaml", policy(f"{prefix}-pol"))
    with controller.log.open("ab") as log:
        # Everything from the file, relative to it: no --manifests, --state, --resync.
        controller.proc = subprocess.Popen(
            controller.command("run", "--config", str(config)),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=controller.env(),
        )
    systemd.next("READY=1", 60)
    wait_for(lambda: reconciles(controller, key) >= 1, 30, "the first reconcile")
    time.sleep(2)
    settled = reconciles(controller, key)
    time.sleep(2)
    assert reconciles(controller, key) == settled, "no resync within the hour's period"

    config.write_text(
        settings.replace("workers: 4", "workers: 2") + "resync: 1\nlog_level: DEBUG\n"
    )
    controller.proc.send_signal(signal.SIGHUP)
    reloading = systemd.next("RELOADING=1", 10)
    assert any(line.startswith("MONOTONIC_USEC=") for line in reloading.split("\n"))
    systemd.next("READY=1", 10)

    # A resync every second (±10 %) now: every one reconciles the policy again.
    wait_for(lambda: reconciles(controller, key) >= settled + 3, 15, "resyncs every second")
    text = controller.log_text()
    assert "reload: resync 3600.0 -> 1.0" in text
    assert "reload: workers 4 -> 2 needs a restart" in text
    assert "reload: log_level INFO -> DEBUG" in text
    wait_for(lambda: f"DEBUG kvmrec.service: {key}: reconciled in" in controller.log_text(), 10)
    assert controller.running
    assert controller.stop() < 10
    assert controller.proc.returncode == 0


def test_a_second_run_on_the_same_state_exits_1_and_the_first_keeps_running(
    controller: Controller, prefix: str
) -> None:
    controller.start()
    assert controller.proc is not None
    lock = controller.state.with_name(controller.state.name + ".lock")
    wait_for(lambda: lock.exists() and lock.read_text() == f"{controller.proc.pid}\n", 30)

    started = time.monotonic()
    second = subprocess.run(
        controller.command(
            "run",
            "--manifests",
            str(controller.manifests),
            "--state",
            str(controller.state),
            "--connect",
            controller.stack["LIBVIRT_DEFAULT_URI"],
        ),
        capture_output=True,
        text=True,
        env=controller.env(),
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert time.monotonic() - started < 10  # at once: no waiting for the lock
    assert (
        f"kvmrec run: {controller.state} is in use by another kvmrec run "
        f"(pid {controller.proc.pid}; lock {lock})"
    ) in second.stderr
    assert "Traceback" not in second.stderr

    # The first one is undisturbed: alive, still the holder, still converging.
    assert controller.running
    assert lock.read_text() == f"{controller.proc.pid}\n"
    controller.write("policy.yaml", policy(f"{prefix}-pol"))
    wait_for(lambda: controller.object(f"{prefix}-pol", "SnapshotPolicy"), 30, "applied")
    assert controller.stop() < 10
    assert controller.proc.returncode == 0
