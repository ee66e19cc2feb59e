"""The daemon in-process, with a stand-in Service: what systemd hears on start, SIGHUP,
SIGTERM, and from the watchdog thread. Real signals, sent to this very process, and a real
notify socket; the end-to-end version is tests/integration/test_service.py."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from kvmrec import config
from kvmrec.cli.main import build_parser
from kvmrec.daemon import Daemon
from kvmrec.settings import Settings


class FakeService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reloads: list[Settings] = []
        self.sick: list[str] = []
        self.stopped = False
        self.store = SimpleNamespace(source_errors=lambda: ["broken.yaml"])

    def start(self, *, watch: bool) -> None:
        assert watch

    def stop(self) -> bool:
        self.stopped = True
        return True

    def reload(self, settings: Settings) -> Settings:
        self.reloads.append(settings)
        self.settings = dataclasses.replace(self.settings, resync=settings.resync)
        return self.settings

    def problems(self) -> list[str]:
        return list(self.sick)

    def converged_count(self) -> tuple[int, int]:
        return 2, 3


class Systemd:
    """The notify socket, as systemd would listen on it."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def next(self, predicate: Callable[[str], bool], timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append(message)
            if predicate(message):
                return message
        raise AssertionError(f"no such message within {timeout}s; got {self.messages}")

    def quiet(self, seconds: float) -> list[str]:
        """Every message within ``seconds``."""
        got: list[str] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        self.messages += got
        return got


def lines(message: str) -> set[str]:
    return set(message.split("\n"))


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Systemd]:
    listener = Systemd(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield listener
    listener.sock.close()


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def serve(tmp_path: Path, text: str, drive: Callable[[FakeService, Path], None]) -> FakeService:
    """Run the daemon in this (main) thread while ``drive`` pokes it from another; whatever
    ``drive`` does, SIGTERM ends the daemon, and its failure is the test's."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    args = build_parser().parse_args(["run", "--config", str(path)])
    flags = Settings(state=tmp_path / "state.db")
    resolved = config.resolve(args, flags)
    service = FakeService(resolved.settings)
    failure: list[BaseException] = []

    def driver() -> None:
        try:
            drive(service, path)
        except BaseException as exc:
            failure.append(exc)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=driver)
    thread.start()
    daemon = Daemon(service, resolved, lambda: config.resolve(args, flags))  # type: ignore[arg-type]
    assert daemon.run() == 0
    thread.join(10)
    if failure:
        raise failure[0]
    assert service.stopped
    return service


def test_ready_reload_and_stop(
    tmp_path: Path, systemd: Systemd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kvmrec.daemon")

    def drive(service: FakeService, path: Path) -> None:
        ready = systemd.next(lambda m: "READY=1" in lines(m))
        assert "STATUS=3 objects, 2 converged, 1 manifest errors" in lines(ready)
        path.write_text("resync: 5\nworkers: 9\nlog_level: DEBUG\n")
        os.kill(os.getpid(), signal.SIGHUP)
        reloading = systemd.next(lambda m: "RELOADING=1" in lines(m))
        assert any(line.startswith("MONOTONIC_USEC=") for line in lines(reloading))
        systemd.next(lambda m: "READY=1" in lines(m))

    service = serve(tmp_path, "resync: 60\nworkers: 2\n", drive)

    systemd.next(lambda m: "STOPPING=1" in lines(m))
    assert [s.resync for s in service.reloads] == [5.0]
    assert service.settings.resync == 5.0
    assert logging.getLogger().level == logging.DEBUG
    text = caplog.text
    assert "reload: resync 60.0 -> 5.0" in text
    assert "reload: workers 2 -> 9 needs a restart" in text
    assert "reload: log_level INFO -> DEBUG" in text


def test_a_broken_file_on_reload_keeps_the_running_configuration(
    tmp_path: Path, systemd: Systemd, caplog: pytest.LogCaptureFixture
) -> None:
    def drive(service: FakeService, path: Path) -> None:
        systemd.next(lambda m: "READY=1" in lines(m))
        path.write_text("resync: 5\nworkerz: 9\n")
        os.kill(os.getpid(), signal.SIGHUP)
        ready = systemd.next(lambda m: "READY=1" in lines(m))
        assert any(line.startswith("STATUS=reload failed") for line in lines(ready))

    service = serve(tmp_path, "resync: 60\n", drive)

    assert [s.resync for s in service.reloads] == [60.0]  # still rescanned, nothing changed
    assert "unknown key 'workerz'" in caplog.text
    assert "keeping the running configuration" in caplog.text


def test_the_watchdog_is_petted_only_while_the_engine_is_healthy(
    tmp_path: Path,
    systemd: Systemd,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 0.1 s: a pet every 0.05 s

    def drive(service: FakeService, _path: Path) -> None:
        systemd.next(lambda m: "READY=1" in lines(m))
        systemd.next(lambda m: m == "WATCHDOG=1")
        service.sick = ["Domain/web has been reconciling for 901s"]
        systemd.quiet(0.15)  # a pet already on its way
        assert "WATCHDOG=1" not in systemd.quiet(0.3)
        service.sick = []
        systemd.next(lambda m: m == "WATCHDOG=1", timeout=2)

    serve(tmp_path, "", drive)

    assert "not petting the systemd watchdog: Domain/web has been reconciling" in caplog.text
    assert "petting the systemd watchdog again" in caplog.text


def test_without_systemd_signals_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    reloaded = threading.Event()

    def drive(service: FakeService, _path: Path) -> None:
        time.sleep(0.2)  # no READY to wait for: give run() time to install its handlers
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 5
        while not service.reloads and time.monotonic() < deadline:
            time.sleep(0.01)
        if service.reloads:
            reloaded.set()

    serve(tmp_path, "", drive)
    assert reloaded.is_set()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # handlers restored
