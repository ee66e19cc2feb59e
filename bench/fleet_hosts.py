"""Several simulated fleet hosts in one process, counting their etcd requests.

Each host is a ``Service`` with ``store`` (etcd), ``host`` and ``connect`` set, as
``kvmrec run --store etcd://... --host NAME`` builds it, on a libvirt test driver of its own
(``test:///DIR/NAME.xml``: libvirt gives every connection to a test file a private driver,
so the hosts of one process never see each other's guests). Every request to etcd goes
through ``Gateway.post``, which is wrapped here to count requests by kind, and apart for
those made inside a reconcile (per reconcile, so reconciles that read nothing show as such).

Driven over stdin/stdout by bench/fleet.py, one JSON line per command:
  stats   counters, resident memory, CPU seconds, queue state
  reset   zero the counters
  resync  one periodic resync pass on every host, until every queue is idle
  full    the hourly full pass (every key of the host's share) on every host, until idle
  quit    stop the services and exit
"""

from __future__ import annotations

import argparse
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
from kvmrec.engine import workers as engine
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


def _counted_post(original: Any) -> Any:
    def post(self: Gateway, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        op = operation(path, body)
        inside = getattr(_local, "requests", None)
        with _lock:
            _counts[f"all.{op}"] += 1
            if inside is not None:
                _counts[f"reconcile.{op}"] += 1
        if inside is not None:
            inside[op] += 1
        answer: dict[str, Any] = original(self, path, body)
        return answer

    return post


def _counted_reconcile(original: Any) -> Any:
    def reconcile(self: Service, key: ObjectKey) -> engine.Result:
        requests: Counter[str] = Counter()
        _local.requests = requests
        try:
            result: engine.Result = original(self, key)
            return result
        finally:
            _local.requests = None
            with _lock:
                _counts["reconciles"] += 1
                if not requests:
                    _counts["reconciles_without_requests"] += 1
                writes = requests["txn_write"] + requests["put"] + requests["deleterange"]
                if writes:
                    _recent.append(f"{self.settings.host} {key} {dict(requests)}")
                    _counts["reconciles_writing"] += 1
                    _counts[f"reconciles_writing_{min(writes, 3)}"] += 1

    return reconcile


Gateway.post = _counted_post(Gateway.post)  # type: ignore[method-assign]
Service._reconcile = _counted_reconcile(Service._reconcile)  # type: ignore[method-assign]


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
