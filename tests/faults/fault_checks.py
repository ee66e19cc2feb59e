"""What the fault tests check after every fault, on the real stack: libvirt's domains, the
sqlite store and ``kvmrec status``, and how they print their figures (tests/faults/README.md
quotes them)."""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
from realstack import Controller, wait_for

OWNER_NS = "https://kvmrec.io/xmlns/owner/v1alpha1"


def report(title: str, **figures: Any) -> None:
    """One line of figures per test, for README.md (visible with ``pytest -s``)."""
    body = ", ".join(f"{k}: {v}" for k, v in figures.items())
    print(f"\n[faults] {title}: {body}", flush=True)


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return (
        f"min {min(values):.2f}s / median {statistics.median(values):.2f}s / max {max(values):.2f}s"
    )


def write_domains(ctl: Controller, names: list[str]) -> None:
    for name in names:
        ctl.write(
            f"{name}.yaml",
            json.dumps(
                {
                    "apiVersion": "kvmrec.io/v1alpha1",
                    "kind": "Domain",
                    "metadata": {"name": name},
                    "spec": {"type": ctl.stack["KVMREC_DOMAIN_TYPE"], "memory": "64Mi"},
                }
            ),
        )


def connect(stack: dict[str, str]) -> Any:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt.open(stack["LIBVIRT_DEFAULT_URI"])


def prefixed(conn: Any, prefix: str) -> list[Any]:
    return [d for d in conn.listAllDomains(0) if d.name().startswith(prefix + "-")]


def stamped(dom: Any) -> bool:
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    return root.find(f"metadata/{{{OWNER_NS}}}owner") is not None


def store_ok(state: Path) -> bool:
    if not state.exists():
        return True  # killed before it made its store: nothing to corrupt
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()


def libvirt_invariants(conn: Any, prefix: str, expected: set[str]) -> dict[str, Any]:
    """What must hold at any instant, even right after a SIGKILL: nothing but manifests'
    domains, no duplicate, everything kvmrec defined carries its stamp."""
    doms = prefixed(conn, prefix)
    names = [d.name() for d in doms]
    uuids = [d.UUIDString() for d in doms]
    return {
        "names": set(names),
        "duplicates": (len(names) - len(set(names))) + (len(uuids) - len(set(uuids))),
        "orphans": sorted(set(names) - expected),
        "unstamped": sorted(d.name() for d in doms if not stamped(d)),
        "running": sum(1 for d in doms if d.isActive()),
    }


def converged(ctl: Controller, conn: Any, prefix: str, expected: set[str]) -> bool:
    """Exactly the expected guests exist and run, and status says so, store sound."""
    live = libvirt_invariants(conn, prefix, expected)
    assert live["duplicates"] == 0, live
    assert live["orphans"] == [], live
    if live["names"] != expected or live["running"] != len(expected):
        return False
    code, body = ctl.status()
    objects = body.get("objects", [])
    if code != 0 or len(objects) != len(expected):
        return False
    if {o["name"] for o in objects} != expected:
        return False
    if not all(
        o["kind"] == "Domain"
        and o["synced"]
        and o["ready"]
        and o["generation"] == 1
        and o["observedGeneration"] == 1
        for o in objects
    ):
        return False
    return store_ok(ctl.state)


def wait_timed(predicate: Callable[[], Any], timeout: float, what: str) -> float:
    started = time.monotonic()
    wait_for(predicate, timeout, what)
    return time.monotonic() - started
