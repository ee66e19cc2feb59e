"""A small client of etcd's JSON gateway (``/v3/kv/*``, ``/v3/lease/*``).

kvmrec speaks to etcd v3 over its HTTP gateway with the standard library: ``http.client``
imports in a few milliseconds, where etcd3gw pulls in requests, urllib3 and futurist (0.17 s
measured), more than the whole budget of a read-only command such as ``kvmrec status``.
The gateway is plain JSON: keys and values base64, 64-bit integers as strings.

One ``Gateway`` is shared by every thread: a request borrows an idle keep-alive connection
(or opens one) and gives it back, and a request that cannot reach one endpoint is tried
on the next. A watch holds a connection of its own (store/etcd/watch_stream.py).
"""

from __future__ import annotations

import base64
import http.client
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .connections import Connections


class EtcdError(Exception):
    """etcd answered with an error (``code`` is its gRPC status code)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class EtcdUnavailable(EtcdError):
    """No endpoint could be reached, or it did not answer in time."""


def encode(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def decode(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, kv: Mapping[str, Any]) -> KeyValue:
        return cls(
            key=decode(kv.get("key")),
            value=decode(kv.get("value")),
            create_revision=int(kv.get("create_revision", 0)),
            mod_revision=int(kv.get("mod_revision", 0)),
            version=int(kv.get("version", 0)),
            lease=int(kv.get("lease", 0)),
        )


@dataclass(frozen=True)
class RangeResult:
    kvs: Sequence[KeyValue]
    count: int
    revision: int  # the store's revision when the range was read
    more: bool


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: Sequence[Mapping[str, Any]]


def range_request(
    key: bytes,
    *,
    prefix: bool = False,
    limit: int = 0,
    revision: int = 0,
    keys_only: bool = False,
    count_only: bool = False,
    min_create_revision: int = 0,
    max_create_revision: int = 0,
    sort_target: str | None = None,
    sort_order: str | None = None,
) -> dict[str, Any]:
    """The body of a range (also usable inside a transaction as ``request_range``)."""
    body: dict[str, Any] = {"key": encode(key)}
    if prefix:
        body["range_end"] = encode(prefix_end(key))
    if limit:
        body["limit"] = str(limit)
    if revision:
        body["revision"] = str(revision)
    if keys_only:
        body["keys_only"] = True
    if count_only:
        body["count_only"] = True
    if min_create_revision:
        body["min_create_revision"] = str(min_create_revision)
    if max_create_revision:
        body["max_create_revision"] = str(max_create_revision)
    if sort_target:
        body["sort_target"] = sort_target
        body["sort_order"] = sort_order or "ASCEND"
    return body


def put_op(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": encode(key), "value": encode(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def delete_op(key: bytes, *, prefix: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"key": encode(key)}
    if prefix:
        body["range_end"] = encode(prefix_end(key))
    return {"request_delete_range": body}


def range_op(key: bytes, **kwargs: Any) -> dict[str, Any]:
    return {"request_range": range_request(key, **kwargs)}


def compare(key: bytes, target: str, value: int | bytes, result: str = "EQUAL") -> dict[str, Any]:
    """A transaction guard: ``target`` MOD, CREATE, VERSION, LEASE (an int) or VALUE (bytes).
    ``CREATE`` equal to 0 means the key does not exist."""
    field = {
        "MOD": "mod_revision",
        "CREATE": "create_revision",
        "VERSION": "version",
        "LEASE": "lease",
        "VALUE": "value",
    }[target]
    encoded = encode(value) if isinstance(value, bytes) else str(value)
    return {"key": encode(key), "target": target, "result": result, field: encoded}


def parse_endpoints(text: str) -> list[tuple[str, int]]:
    """``host:port[,host:port...]`` (each optionally ``http://``) as (host, port) pairs."""
    endpoints = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        parts = urlsplit(item if "://" in item else f"http://{item}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{item!r}: an etcd endpoint is host:port (plain http)")
        endpoints.append((parts.hostname, parts.port or 2379))
    if not endpoints:
        raise ValueError("no etcd endpoint given")
    return endpoints


ELECTION_ROUNDS = 3
ELECTION_PAUSE = 0.5  # seconds, then 1 s: an election is over in about one


class Gateway:
    """Requests to etcd, from any thread, failing over between endpoints."""

    def __init__(self, endpoints: Sequence[tuple[str, int]], *, timeout: float = 5.0) -> None:
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._connections = Connections(self.endpoints, timeout)
        self._preferred = 0  # the endpoint that answered last; tried first

    def close(self) -> None:
        self._connections.close()

    def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """One request; EtcdError for etcd's own refusals, EtcdUnavailable when none answers.

        A member that answers "no leader" (a cluster electing one after losing its leader,
        which takes etcd about a second) is asked again, twice, after a pause; a cluster of
        which no member answers at all fails at once."""
        payload = json.dumps(body).encode()
        last: Exception | None = None
        count = len(self.endpoints)
        for round_ in range(ELECTION_ROUNDS):
            electing = False
            for attempt in range(count):
                index = (self._preferred + attempt) % count
                try:
                    status, data = self._connections.send(index, path, payload)
                except (OSError, http.client.HTTPException) as exc:
                    last = exc
                    continue
                self._preferred = index
                answer: dict[str, Any] = json.loads(data) if data else {}
                if status != 200:
                    code = answer.get("code")
                    message = str(answer.get("message") or answer.get("error") or data[:200])
                    if code in (4, 14):  # DeadlineExceeded, Unavailable: no quorum, no leader
                        last, electing = EtcdUnavailable(message, code), True
                        continue
                    raise EtcdError(message, code)
                return answer
            if not electing or round_ == ELECTION_ROUNDS - 1:
                break
            time.sleep(ELECTION_PAUSE * (round_ + 1))
        host, port = self.endpoints[self._preferred % count]
        raise EtcdUnavailable(f"etcd at {host}:{port} does not answer: {last}") from last

    # -- key-value ---------------------------------------------------------------------

    def range(self, key: bytes, **kwargs: Any) -> RangeResult:
        answer = self.post("/v3/kv/range", range_request(key, **kwargs))
        return _range_result(answer)

    def get(self, key: bytes) -> KeyValue | None:
        kvs = self.range(key).kvs
        return kvs[0] if kvs else None

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        """Returns the revision of the write."""
        answer = self.post("/v3/kv/put", put_op(key, value, lease)["request_put"])
        return int(answer["header"]["revision"])

    def delete(self, key: bytes, *, prefix: bool = False) -> int:
        """Returns how many keys went."""
        body = delete_op(key, prefix=prefix)["request_delete_range"]
        return int(self.post("/v3/kv/deleterange", body).get("deleted", 0))

    def txn(
        self,
        compares: Sequence[Mapping[str, Any]],
        success: Sequence[Mapping[str, Any]],
        failure: Sequence[Mapping[str, Any]] = (),
    ) -> TxnResult:
        body = {"compare": list(compares), "success": list(success), "failure": list(failure)}
        answer = self.post("/v3/kv/txn", body)
        return TxnResult(
            succeeded=bool(answer.get("succeeded", False)),
            revision=int(answer["header"]["revision"]),
            responses=answer.get("responses", []),
        )

    def compact(self, revision: int) -> None:
        self.post("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    # -- leases ------------------------------------------------------------------------

    def grant(self, ttl: int) -> int:
        return int(self.post("/v3/lease/grant", {"TTL": str(ttl)})["ID"])

    def keepalive(self, lease: int) -> int:
        """The lease's new TTL in seconds; 0 or less when it has expired."""
        answer = self.post("/v3/lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        try:
            self.post("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if exc.code != 5:  # NotFound: expired already
                raise


def range_response(response: Mapping[str, Any]) -> RangeResult:
    """The range result inside one of a transaction's responses."""
    return _range_result(response.get("response_range", {}))


def _range_result(answer: Mapping[str, Any]) -> RangeResult:
    return RangeResult(
        kvs=[KeyValue.from_json(kv) for kv in answer.get("kvs", ())],
        count=int(answer.get("count", 0)),
        revision=int(answer.get("header", {}).get("revision", 0)),
        more=bool(answer.get("more", False)),
    )
