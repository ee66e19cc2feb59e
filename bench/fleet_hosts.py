"""Several simulated fleet hosts in one process, counting their etcd requests.

Each host is a ``Service`` with ``store`` (etcd), ``host`` and ``connect`` set, as
``kvmrec run --store etcd://... --host NAME`` builds it, on a libvirt test driver of its own
(``test:///DIR/NAME.xml``: libvirt gives every connection to a test file a private driver,
so the hosts of one process never see each other's guests). Every request to etcd goes
through ``Gateway.post``, which is wrapped here to count requests by kind, and apart for
those made while the workers reconcile (``Dispatch.reconcile`` for one key,
``reconcile_many`` for a batch, whose reads and final writes are shared): per call, the
keys reconciled, the requests made and the objects whose status a write carried, so that
write transactions per changed object can be told.

Driven over stdin/stdout by bench/fleet.py, one JSON line per command:
  stats   counters, resident memory, CPU seconds, queue state
  reset   zero the counters
  resync  one periodic resync pass on every host, until every queue is idle
  full    the hourly full pass (every key of the host's share) on every host, until idle
  quit    stop the services and exit
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import resource
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kvmrec.api.kinds import ObjectKey
from kvmrec.dispatch import Dispatch
from kvmrec.engine.contract import Outcome, Result
from kvmrec.service import Service
from kvmrec.settings import Settings
from kvmrec.store.etcd.gateway import Gateway

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_local = threading.local()
_recent: deque[str] = deque(maxlen=30)  # the last keys reconciled that wrote


def operation(path: str, body: Mapping[str, Any]) -> str:
    """What a request does: a transaction that writes is told from one that only reads."""
    name = path.rsplit("/", 1)[-1]
    if name == "txn":
        ops = [*body.get("success", ()), *body.get("failure", ())]
        writes = any("request_put" in op or "request_delete_range" in op for op in ops)
        return "txn_write" if writes else "txn_read"
    return name


def _status_objects(body: Mapping[str, Any]) -> set[str]:
    """The objects (``KIND/NAME``) whose status a transaction puts."""
    found = set()
    for op in body.get("success", ()):
        put = op.get("request_put")
        if put is None:
            continue
        parts = base64.b64decode(put["key"]).decode().split("/")
        if "status" in parts:
            at = parts.index("status")
            found.add("/".join(parts[at + 1 : at + 3]))
    return found


def _counted_post(original: Any) -> Any:
    def post(self: Gateway, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        op = operation(path, body)
        inside: Counter[str] | None = getattr(_local, "requests", None)
        with _lock:
            _counts[f"all.{op}"] += 1
            if inside is not None:
                _counts[f"reconcile.{op}"] += 1
        if inside is not None:
            inside[op] += 1
            if op == "txn_write":
                _local.written |= _status_objects(body)
        answer: dict[str, Any] = original(self, path, body)
        return answer

    return post


def _counted(keys: list[ObjectKey], call: Any) -> Any:
    """Run one dispatch call of ``keys``, counting what it asked of etcd."""
    requests: Counter[str] = Counter()
    _local.requests, _local.written = requests, set()
    try:
        return call()
    finally:
        written: set[str] = _local.written
        _local.requests = None
        with _lock:
            _counts["reconciles"] += len(keys)
            _counts["dispatches"] += 1
            if not requests:
                _counts["dispatches_without_requests"] += 1
            _counts["objects_written"] += len(written)
            if written:
                _recent.append(f"{[str(k) for k in keys]} wrote {sorted(written)} {dict(requests)}")


_reconcile, _reconcile_many = Dispatch.reconcile, Dispatch.reconcile_many


def _one(self: Dispatch, key: ObjectKey) -> Result:
    result: Result = _counted([key], lambda: _reconcile(self, key))
    return result


def _many(self: Dispatch, keys: Any) -> list[Outcome]:
    outcomes: list[Outcome] = _counted(list(keys), lambda: _reconcile_many(self, keys))
    return outcomes


Gateway.post = _counted_post(Gateway.post)  # type: ignore[method-assign]
Dispatch.reconcile = _one  # type: ignore[method-assign]
Dispatch.reconcile_many = _many  # type: ignore[method-assign]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def busy(services: list[Service]) -> bool:
    return any(s.queue.is_busy() or s.queue.pending_delayed() for s in services)


def wait_idle(services: list[Service], timeout: float = 900.0) -> float:
    started = time.monotonic()
    while busy(services):
        if time.monotonic() - started > timeout:
            raise TimeoutError("the hosts did not settle")
        time.sleep(0.01)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--drivers", type=Path, required=True, help="dir of NAME.xml files")
    parser.add_argument("--workers", type=int, default=Settings.workers)
    parser.add_argument("--ovsdb", default=Settings.ovsdb)
    parser.add_argument("hosts", nargs="+")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

    services = []
    for name in args.hosts:
        settings = Settings(
            store=args.store,
            host=name,
            connect=f"test://{(args.drivers / f'{name}.xml').absolute()}",
            workers=args.workers,
            ovsdb=args.ovsdb,
            resync=3600.0,
            manifests=args.drivers / "none",
            state=args.drivers / f"{name}.unused.db",
        )
        service = Service(settings)
        service.start(watch=True)
        services.append(service)
    print(json.dumps({"started": args.hosts}), flush=True)

    for line in sys.stdin:
        command = line.strip()
        answer: dict[str, Any] = {"command": command}
        if command == "stats":
            with _lock:
                answer["counts"] = dict(_counts)
            answer["recent_writes"] = list(_recent)
            answer["rss_mb"] = round(rss_mb(), 1)
            answer["cpu_s"] = round(cpu_seconds(), 3)
            answer["busy"] = busy(services)
            answer["hosts"] = len(services)
        elif command == "reset":
            with _lock:
                _counts.clear()
        elif command == "resync":
            for service in services:
                service.resync.resync()
            answer["took_s"] = round(wait_idle(services), 3)
        elif command == "full":
            for service in services:
                # The next periodic pass is the hourly one, which reconciles every key.
                every = service.settings.full_resync_every
                passes = service.resync_keys.passes
                service.resync_keys.passes = -(-(passes + 1) // every) * every - 1
                service.resync.resync()
            answer["took_s"] = round(wait_idle(services), 3)
        elif command == "idle":
            answer["took_s"] = round(wait_idle(services), 3)
        elif command == "quit":
            break
        print(json.dumps(answer), flush=True)
    # Each stop waits for its threads (a watch's read timeout, the election's retry):
    # all at once, not one after another.
    stopping = [threading.Thread(target=service.stop) for service in services]
    for thread in stopping:
        thread.start()
    for thread in stopping:
        thread.join()
    print(json.dumps({"command": "quit"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
