"""etcd of a test's own: a three-member cluster, a single member, and a minimal client.

Production etcd has three members, so a fleet must keep working when one is lost and
stop acting, saying why, when two are (no quorum: writes refused). ``EtcdCluster``
runs three ``etcd`` processes (Debian's etcd-server) on free loopback ports with data
dirs of their own under the test's tmp dir, and stops and starts single members; it
never touches the stack's etcd on 2379. Elections are tuned short (heartbeat 100 ms,
election timeout 1 s) so a lost leader is replaced within a couple of seconds.
``PrivateEtcd`` is one such member, for what the shared etcd must never undergo
(compaction, restarts).

``put``/``get``/``delete_prefix`` speak etcd's JSON gateway (``/v3/kv/...``) with a
timeout of their own: a test must see a refused or hung request as an error, at once.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class EtcdError(Exception):
    """A request etcd refused, or that did not complete in time."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _call(url: str, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            reply: dict[str, Any] = json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise EtcdError(f"{url}{path}: HTTP {exc.code}: {exc.read()[:300]!r}") from exc
    except (OSError, TimeoutError) as exc:  # refused, reset, timed out
        raise EtcdError(f"{url}{path}: {exc}") from exc
    if "error" in reply:
        raise EtcdError(f"{url}{path}: {reply['error']}")
    return reply


def put(url: str, key: str, value: str, timeout: float = 3.0) -> int:
    """Write ``key``; returns the revision of the write."""
    reply = _call(url, "/v3/kv/put", {"key": _b64(key), "value": _b64(value)}, timeout)
    return int(reply["header"]["revision"])


def get(url: str, key: str, timeout: float = 3.0) -> str | None:
    """A linearizable read of ``key`` (it needs a quorum, as a write does)."""
    reply = _call(url, "/v3/kv/range", {"key": _b64(key)}, timeout)
    kvs = reply.get("kvs") or []
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def delete_prefix(url: str, prefix: str, timeout: float = 3.0) -> None:
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    _call(url, "/v3/kv/deleterange", {"key": _b64(prefix), "range_end": _b64(end)}, timeout)


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now (held together, so they are distinct)."""
    socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    ports = [s.getsockname()[1] for s in socks]
    for sock in socks:
        sock.close()
    return ports


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class EtcdCluster:
    root: Path
    size: int = 3
    members: list[Member] = field(default_factory=list)
    token: str = field(default_factory=lambda: f"kvmrec-test-{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.size)
        for i in range(self.size):
            name = f"m{i + 1}"
            self.members.append(
                Member(
                    name,
                    ports[2 * i],
                    ports[2 * i + 1],
                    self.root / name,
                    self.root / f"{name}.log",
                )
            )

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def _command(self, member: Member) -> list[str]:
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        return [
            "etcd",
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url,
            "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", "100",
            "--election-timeout", "1000",
        ]  # fmt: skip

    def start_member(self, index: int) -> None:
        member = self.members[index]
        assert not member.running, f"{member.name} runs already"
        member.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with member.log.open("ab") as log:
            member.proc = subprocess.Popen(
                self._command(member), stdout=log, stderr=subprocess.STDOUT
            )

    def stop_member(self, index: int, kill: bool = False) -> None:
        member = self.members[index]
        if member.proc is None or member.proc.poll() is not None:
            return
        if kill:
            member.proc.kill()
        else:
            member.proc.terminate()
        try:
            member.proc.wait(15)
        except subprocess.TimeoutExpired:
            member.proc.kill()
            member.proc.wait(5)

    def start(self, timeout: float = 30.0) -> None:
        for i in range(self.size):
            self.start_member(i)
        try:
            self.wait_writable(timeout)
        except EtcdError:
            self.stop()
            raise

    def stop(self) -> None:
        for i in range(self.size):
            self.stop_member(i)

    def wait_writable(self, timeout: float = 30.0) -> str:
        """Until a write through some running member succeeds; returns that member's URL."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for member in self.members:
                if not member.running:
                    continue
                try:
                    put(member.client_url, "/kvmrec-test-cluster/ready", "1", timeout=2)
                except EtcdError as exc:
                    last = exc
                else:
                    return member.client_url
            time.sleep(0.2)
        logs = {m.name: m.log.read_text(errors="replace")[-1500:] for m in self.members}
        raise EtcdError(f"the cluster took no write within {timeout}s ({last}); logs: {logs}")

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class PrivateEtcd:
    """One etcd member of a test's own, its data under ``root``; restartable on that data."""

    def __init__(self, root: Path) -> None:
        self.cluster = EtcdCluster(root, size=1)

    @property
    def member(self) -> Member:
        return self.cluster.members[0]

    @property
    def endpoint(self) -> tuple[str, int]:
        """(host, port), as kvmrec's Gateway takes an endpoint."""
        return ("127.0.0.1", self.member.client_port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.member.client_port}"

    @property
    def url(self) -> str:
        return self.member.client_url

    def start(self, timeout: float = 20.0) -> None:
        self.cluster.start(timeout)

    def stop(self) -> None:
        self.cluster.stop()

    def __enter__(self) -> PrivateEtcd:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
