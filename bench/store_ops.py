"""Per-call latency of the store operations a reconcile and a rescan make, sqlite beside etcd.

For each store this prints, as one JSON object, the median and 95th percentile of:

- get_with_status: what a reconcile starts from (an object and its status);
- record: the write a reconcile ends with, a status that changed, an event and the
  reconcile's record (one transaction);
- record_at_rest: the same for a reconcile that changed nothing (etcd writes nothing);
- apply_many: one rescan of N manifests, new (the first) and unchanged (the next).

The etcd store runs under a prefix of its own on $KVMREC_ETCD (deleted afterwards); the
sqlite store in a temporary file.

Usage:
  python bench/store_ops.py [-n 1000] [--calls 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.store.base import Store
from kvmrec.store.records import ReconcileRecord, Status

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def timed(calls: int, call: Callable[[int], object]) -> dict[str, float]:
    took = []
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        took.append((time.perf_counter() - started) * 1000)
    took.sort()
    return {
        "median_ms": round(statistics.median(took), 3),
        "p95_ms": round(took[int(len(took) * 0.95) - 1], 3),
    }


def manifests(n: int, vcpus: int = 1) -> list[Manifest]:
    spec = {"memory": "64Mi", "vcpus": vcpus, "runStrategy": "Always", "disks": []}
    return [Manifest("Domain", f"guest-{i:05d}", spec, f"guest-{i:05d}.yaml", 1) for i in range(n)]


def measure(store: Store, n: int, calls: int) -> dict[str, Any]:
    key = ObjectKey("Domain", "guest-00000")
    first = time.perf_counter()
    store.apply_many(manifests(n), T0)
    created = time.perf_counter() - first
    again = time.perf_counter()
    store.apply_many(manifests(n), T0)
    unchanged = time.perf_counter() - again
    base = Status(observed_generation=1, last_reconcile_time=T0)

    def record(i: int) -> None:
        store.get_with_status(key)  # as a reconcile does, so a store may compare what it read
        now = T0 + timedelta(seconds=i)
        store.record(
            key,
            replace(base, retries=i, last_reconcile_time=now),
            [("Normal", "Checked", f"pass {i}")],
            now,
            reconcile=ReconcileRecord(key, now, 0.001, "ok"),
        )

    def at_rest(i: int) -> None:
        store.get_with_status(key)
        now = T0 + timedelta(seconds=calls + i)
        quiet = replace(base, retries=calls - 1, last_reconcile_time=now)
        store.record(key, quiet, [], now, reconcile=ReconcileRecord(key, now, 0.001, "ok"))

    return {
        "get_with_status": timed(calls, lambda i: store.get_with_status(key)),
        "record (with get_with_status)": timed(calls, record),
        "record_at_rest (with get_with_status)": timed(calls, at_rest),
        f"apply_many_{n}_new_s": round(created, 3),
        f"apply_many_{n}_unchanged_s": round(unchanged, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="manifests per apply_many")
    parser.add_argument("--calls", type=int, default=200, help="calls per measurement")
    args = parser.parse_args()
    endpoints = os.environ.get("KVMREC_ETCD", "http://127.0.0.1:2379").replace("http://", "")
    results: dict[str, Any] = {"machine": f"{platform.node()} {os.cpu_count()} cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = stores.open(Path(tmp) / "state.db")
        try:
            results["sqlite"] = measure(sqlite, args.n, args.calls)
        finally:
            sqlite.close()
    prefix = f"/kvmrec-bench-{uuid.uuid4().hex[:12]}"
    etcd = stores.open(f"etcd://{endpoints}{prefix}", host="bench")
    try:
        results["etcd"] = measure(etcd, args.n, args.calls)
    finally:
        from kvmrec.store.etcd.gateway import Gateway, parse_endpoints

        cleaner = Gateway(parse_endpoints(endpoints))
        cleaner.delete(f"{prefix}/".encode(), prefix=True)
        cleaner.close()
        etcd.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
