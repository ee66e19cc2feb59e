"""The status report: objects with their conditions and drift, and manifest errors.

Built from the store alone (``kvmrec status`` needs no libvirt connection) in the JSON
shape of the contract in DESIGN.md, then rendered as a table, JSON or YAML. The exit code
follows from it: 0 when every object is synced and ready and no manifest is in error, 2
otherwise; the report of one object exits by that object alone.

A manifest file in error keeps its objects at their last good spec, and those objects are
not in sync with their file: each shows ``Synced=False`` (reason ``InvalidManifest``, the
file's error as message) for as long as the error lasts, over what the last reconcile said.
When the file is fixed, the reconcile's own Synced shows again.

In a fleet's store each entry names its ``host`` (None while unplaced, and always in a
state file); a kind that applies to several hosts has one entry per host, and the table
gains a HOST column when any entry has a host.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kvmrec.api.objects import ObjectKey
from kvmrec.api.selectors import Selector
from kvmrec.cli import json_text
from kvmrec.store.base import Store
from kvmrec.store.records import SourceError, Status

INVALID_MANIFEST = "InvalidManifest"


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def with_source_error(status: Status, error: SourceError | None) -> Status:
    """``status`` as it stands while the object's manifest file has ``error`` (if any)."""
    if error is None:
        return status
    message = f"{error.source}: {error.message}"
    return status.with_condition("Synced", "False", INVALID_MANIFEST, message, error.time)


def _statuses_by_host(store: Store) -> Callable[[ObjectKey], list[tuple[str | None, Status]]]:
    """Each object's statuses with the host each is of: one per host for a kind that
    applies to several hosts, one of no host (None) while unplaced or in a store of one
    host (a state file)."""
    by_key: dict[ObjectKey, list[tuple[str | None, Status]]] = {}
    for key, host, status in store.host_statuses():
        by_key.setdefault(key, []).append((host, status))
    return lambda key: by_key.get(key) or [(None, Status())]


def build(
    store: Store,
    only: tuple[str, str] | None = None,
    selector: Selector | None = None,
    host: str | None = None,
) -> dict[str, Any]:
    """``host``: only the entries of that host."""
    statuses_of = _statuses_by_host(store)
    source_errors = store.source_errors()
    in_error = {e.source: e for e in source_errors}
    objects = []
    entries = [(o, on, stored) for o in store.list() for on, stored in statuses_of(o.key)]
    for obj, on, stored in entries:
        if only is not None and (obj.key.kind, obj.key.name) != only:
            continue
        if selector is not None and not selector.matches(obj.labels):
            continue
        if host is not None and on != host:
            continue
        status = with_source_error(stored, in_error.get(obj.source))
        synced = (
            not obj.deleting
            and status.observed_generation == obj.generation
            and status.is_true("Synced")
        )
        objects.append(
            {
                "kind": obj.key.kind,
                "name": obj.key.name,
                "host": on,
                "generation": obj.generation,
                "observedGeneration": status.observed_generation,
                "synced": synced,
                "ready": status.is_true("Ready") and not obj.deleting,
                "deleting": obj.deleting,
                "conditions": [
                    {
                        "type": c.type,
                        "status": c.status,
                        "reason": c.reason,
                        "message": c.message,
                        "lastTransitionTime": iso(c.last_transition_time),
                    }
                    for c in status.conditions
                ],
                "drift": [
                    {"field": d.field, "desired": d.desired, "actual": d.actual}
                    for d in status.drift
                ],
                "source": obj.source,
                "labels": dict(obj.labels),
                "lastReconcileTime": iso(status.last_reconcile_time),
                "lastError": status.last_error,
                "retries": status.retries,
                "state": status.details.get("state"),
                # A running Domain's addresses, host name and OS (guest agent, DHCP leases).
                "guest": status.details.get("guest"),
                # A running Domain's VNC display and serial console pty.
                "consoles": status.details.get("consoles"),
                "details": dict(status.details),
            }
        )
    errors = [
        {"source": e.source, "message": e.message, "since": iso(e.time)} for e in source_errors
    ]
    return {"objects": objects, "errors": errors}


def exit_code(report: dict[str, Any], *, objects_only: bool = False) -> int:
    """0 when all is well, else 2; ``objects_only``: by the objects alone (the report of one
    object is not spoiled by another file's error; its own file's error unsyncs it)."""
    healthy = all(o["synced"] and o["ready"] and not o["drift"] for o in report["objects"])
    return 0 if healthy and (objects_only or not report["errors"]) else 2


def render(report: dict[str, Any], output: str) -> str:
    if output == "json":
        return json_text.dumps(report)
    if output == "yaml":
        import yaml  # only for -o yaml

        return yaml.safe_dump(report, sort_keys=False, default_flow_style=False)
    return table(report, wide=output == "wide")


def _condition_summary(obj: dict[str, Any]) -> str:
    """The most telling condition that is not as it should be, with its message."""
    bad = [
        c
        for c in obj["conditions"]
        if (c["status"] == "True") == (c["type"] in ("RestartRequired", "Degraded"))
    ]
    # The operator's own broken file comes first: nothing converges until it is fixed.
    # RestartRequired explains a Synced=False better than "Drifted" does.
    bad.sort(key=lambda c: (c["reason"] != INVALID_MANIFEST, c["type"] != "RestartRequired"))
    if not bad:
        return ""
    cond = bad[0]
    text = f"{cond['type']}={cond['status']} {cond['reason']}"
    return f"{text}: {cond['message']}" if cond["message"] else text


def _guest_columns(guest: dict[str, Any] | None) -> list[str]:
    """IP, HOSTNAME and OS of ``-o wide``: IPv4 addresses first, the source of each."""
    if not guest:
        return ["-", "-", "-"]
    addresses = sorted(guest.get("addresses") or [], key=lambda a: a["family"] != "ipv4")
    ips = ",".join(f"{a['address']}({a['source']})" for a in addresses)
    return [ips or "-", guest.get("hostname") or "-", guest.get("os") or "-"]


def _console_columns(consoles: dict[str, Any] | None) -> list[str]:
    """VNC (display and port, as ``virsh vncdisplay``) and CONSOLE (the serial pty)."""
    vnc = (consoles or {}).get("vnc")
    serial = (consoles or {}).get("serial")
    shown = f"{vnc['listen']}{vnc['display']}({vnc['port']})" if vnc else "-"
    return [shown, serial["pty"] if serial else "-"]


def header(*, wide: bool = False, hosts: bool = False) -> list[str]:
    extra = ["IP", "HOSTNAME", "OS", "VNC", "CONSOLE"] if wide else []
    on = ["HOST"] if hosts else []
    return ["KIND", "NAME", *on, "STATE", *extra, "READY", "SYNCED", "GEN", "DRIFT", "MESSAGE"]


def has_hosts(report: dict[str, Any]) -> bool:
    """Whether the table needs a HOST column: some entry is of a host."""
    return any(obj.get("host") is not None for obj in report["objects"])


def row(obj: dict[str, Any], *, wide: bool = False, hosts: bool = False) -> list[str]:
    """One object's line of the table: KIND and NAME first (then HOST with ``hosts``)."""
    drift = ", ".join(f"{d['field']}: {d['actual']!s} -> {d['desired']!s}" for d in obj["drift"])
    summary = _condition_summary(obj)
    invalid = summary.startswith(f"Synced=False {INVALID_MANIFEST}")
    message = summary if invalid else obj["lastError"] or summary
    if obj["deleting"]:
        message = f"deleting: {message}" if message else "deleting"
    return [
        obj["kind"],
        obj["name"],
        *([obj.get("host") or "-"] if hosts else []),
        str(obj["state"] or "-"),
        *(_guest_columns(obj.get("guest")) if wide else []),
        *(_console_columns(obj.get("consoles")) if wide else []),
        "yes" if obj["ready"] else "no",
        "yes" if obj["synced"] else "no",
        f"{obj['observedGeneration']}/{obj['generation']}",
        drift or "-",
        message,
    ]


def widths(rows: list[list[str]], at_least: list[int] | None = None) -> list[int]:
    """Column widths that fit ``rows`` (the last column is never padded)."""
    found = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [max(a, b) for a, b in zip(found, at_least, strict=True)] if at_least else found


def lines(rows: list[list[str]], sizes: list[int]) -> list[str]:
    return [
        ("  ".join(c.ljust(w) for c, w in zip(r[:-1], sizes, strict=True)) + "  " + r[-1]).rstrip()
        for r in rows
    ]


def table(report: dict[str, Any], *, wide: bool = False) -> str:
    hosts = has_hosts(report)
    rows = [header(wide=wide, hosts=hosts)]
    rows += [row(obj, wide=wide, hosts=hosts) for obj in report["objects"]]
    text = lines(rows, widths(rows))
    if not report["objects"]:
        text.append("(no objects)")
    for error in report["errors"]:
        text.append(f"error: {error['source']}: {error['message']}")
    return "\n".join(text)
