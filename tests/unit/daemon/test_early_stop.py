"""SIGTERM while ``kvmrec run`` starts: exit 0, a log line, no traceback, no broken state.

Real ``kvmrec run`` processes on ``test:///default``, each sent SIGTERM at another point
of its start-up: as soon as it handles the signal, then 50, 150 and 300 ms after it was
started (the heavy imports, the configuration, the store, the service's start). The test
waits for the process to handle SIGTERM (its caught-signal mask in /proc) and requires
that to come before libvirt is even loaded: the default action must not be left in force
during the imports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmrec import reloads
from kvmrec import store as stores

MANIFEST = (
    "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n  name: early-1\n"
    "spec:\n  type: kvm\n  memory: 64Mi\n"
)


def handles_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def has_loaded(pid: int, library: str) -> bool:
    return library in Path(f"/proc/{pid}/maps").read_text()


def wait_until_sigterm_is_handled(proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode} before any signal"
        loaded = has_loaded(proc.pid, "libvirt")
        if handles_sigterm(proc.pid):
            return
        assert not loaded, "libvirt was loaded while SIGTERM still had its default action"
        time.sleep(0.001)
    raise AssertionError(f"SIGTERM not handled within {timeout}s")


def start(tmp_path: Path) -> subprocess.Popen[str]:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "early-1.yaml").write_text(MANIFEST)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KVMREC_", "NOTIFY_"))}
    argv = [sys.executable, "-m", "kvmrec", "run", "--connect", "test:///default"]
    argv += ["--manifests", str(manifests), "--state", str(tmp_path / "state.db")]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def ended(proc: subprocess.Popen[str]) -> str:
    """Its stderr, once it has exited (killed if it does not within a minute)."""
    try:
        return proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("after_ms", [0, 50, 150, 300])
def test_sigterm_during_start_up_exits_cleanly(tmp_path: Path, after_ms: int) -> None:
    state = tmp_path / "state.db"
    started = time.monotonic()
    proc = start(tmp_path)
    try:
        wait_until_sigterm_is_handled(proc)
        time.sleep(max(0.0, started + after_ms / 1000 - time.monotonic()))
        proc.send_signal(signal.SIGTERM)
    finally:
        err = ended(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "SIGTERM" in err  # "SIGTERM during start-up: ..." or the daemon's "SIGTERM: stopping"
    if state.exists():  # whatever start-up got to write is a state file that opens
        stores.open(state, create=False).close()


@pytest.mark.parametrize("after_ms", [0, 50, 150, 300])
def test_sighup_during_start_up_does_not_end_it(tmp_path: Path, after_ms: int) -> None:
    # `kvmrec prune` sends SIGHUP to the state's holder, which may still be starting.
    started = time.monotonic()
    proc = start(tmp_path)
    try:
        wait_until_sigterm_is_handled(proc)
        time.sleep(max(0.0, started + after_ms / 1000 - time.monotonic()))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while (record := reloads.read(tmp_path / "state.db")) is None or record.finished < 1:
            assert proc.poll() is None, "SIGHUP ended the service"
            assert time.monotonic() < deadline, "the SIGHUP was never served"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
    finally:
        err = ended(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "SIGHUP: reloading" in err
