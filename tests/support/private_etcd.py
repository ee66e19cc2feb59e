"""An etcd of a test's own (the ``etcd`` binary on free loopback ports, its data under the
test's tmp_path), for what must never happen to the shared one: compaction, restarts."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from kvmrec.store.etcd.gateway import EtcdError, Gateway


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateEtcd:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> tuple[str, int]:
        return ("127.0.0.1", self.client_port)

    def start(self, timeout: float = 20.0) -> None:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = self.data_dir.parent / "etcd.log"
        with log.open("ab") as output:
            self._process = subprocess.Popen(
                [
                    "etcd",
                    "--name=private",
                    f"--data-dir={self.data_dir}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=private={peer}",
                ],
                stdout=output,
                stderr=output,
            )
        gateway = Gateway([self.endpoint], timeout=1.0)
        deadline = time.monotonic() + timeout
        while True:
            try:
                gateway.range(b"/", count_only=True)
                gateway.close()
                return
            except EtcdError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    gateway.close()
                    self.stop()
                    raise RuntimeError(f"private etcd did not start (see {log})") from None
                time.sleep(0.1)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
