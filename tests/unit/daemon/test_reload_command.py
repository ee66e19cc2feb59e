"""``kvmrec reload`` against a real ``kvmrec run``: it returns once the reload is in force.

The service runs on ``test:///default`` with its log in a file; when ``kvmrec reload``
returns, the service's own log already says what the reload changed, and a configuration
file that no longer parses makes the command fail with the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmrec import reloads


class Running:
    def __init__(self, proc: subprocess.Popen[bytes], state: Path, config: Path, log: Path):
        self.proc = proc
        self.state = state
        self.config = config
        self.log = log

    def reload(self, *extra: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "kvmrec", "reload", "--state", str(self.state)]
        argv += ["--config", str(self.config), *extra]
        return subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=120)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("KVMREC_", "NOTIFY_"))}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Running]:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text("resync: 60\n")
    state = tmp_path / "state.db"
    log = tmp_path / "service.log"
    argv = [sys.executable, "-m", "kvmrec", "run", "--connect", "test:///default"]
    argv += ["--manifests", str(manifests), "--state", str(state), "--config", str(config)]
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, env=_env(), stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while (record := reloads.read(state)) is None or record.pid != proc.pid:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        yield Running(proc, state, config, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_reload_returns_once_the_new_settings_are_in_force(service: Running) -> None:
    service.config.write_text("resync: 5\n")
    done = service.reload("--pid", str(service.proc.pid))
    assert done.returncode == 0, done.stderr
    assert "reload: resync 60.0 -> 5.0" in service.log.read_text()
    record = reloads.read(service.state)
    assert record is not None and (record.started, record.finished) == (1, 1)

    service.config.write_text("resync: 7\n")
    assert service.reload().returncode == 0  # --pid defaults to the holder of the lock
    assert "reload: resync 5.0 -> 7.0" in service.log.read_text()


def test_a_broken_file_fails_the_reload_with_the_reason(service: Running) -> None:
    service.config.write_text("resync: 5\nworkerz: 2\n")
    done = service.reload()
    assert done.returncode == 1
    assert "the reload failed, the running configuration is kept" in done.stderr
    assert "unknown key 'workerz'" in done.stderr
    service.config.write_text("resync: 5\n")
    assert service.reload().returncode == 0  # the service is still there, and reloads


def test_another_pid_is_refused_naming_the_service(service: Running) -> None:
    done = service.reload("--pid", str(os.getpid()))
    assert done.returncode == 1
    assert f"pid {service.proc.pid} is" in done.stderr
    assert reloads.read(service.state).started == 0  # type: ignore[union-attr]


def test_no_service_on_the_state_is_an_error(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "kvmrec", "reload", "--state", str(tmp_path / "state.db")]
    done = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "no kvmrec service is running on" in done.stderr


# A stand-in service: holds the state lock, has a reload under way when it starts, and on
# SIGHUP first finishes that one (successfully), then runs the one the signal asked for,
# which fails. Each record stays for a while, so a poll cannot miss it.
IN_PROGRESS = """
import os, signal, sys, time
from pathlib import Path
from kvmrec import reloads
from kvmrec.store.lock import StateLock
state = Path(sys.argv[1])
lock = StateLock.acquire(state)
hup = []
signal.signal(signal.SIGHUP, lambda *_: hup.append(1))
pid = os.getpid()
reloads.write(state, reloads.Reloads(pid, started=1, finished=0))
print("ready", flush=True)
while not hup:
    time.sleep(0.01)
reloads.write(state, reloads.Reloads(pid, started=1, finished=1))
time.sleep(0.5)
reloads.write(state, reloads.Reloads(pid, started=2, finished=1))
time.sleep(0.2)
reloads.write(state, reloads.Reloads(pid, started=2, finished=2, error="the second one"))
sys.stdin.read()
"""


def test_a_reload_under_way_when_the_signal_is_sent_does_not_count(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    fake = subprocess.Popen(
        [sys.executable, "-c", IN_PROGRESS, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None and fake.stdout.readline() == "ready\n"
        argv = [sys.executable, "-m", "kvmrec", "reload", "--state", str(state)]
        done = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stdout
        assert "the second one" in done.stderr
    finally:
        fake.kill()
        fake.communicate()
