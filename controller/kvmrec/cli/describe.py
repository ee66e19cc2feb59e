"""``kvmrec describe KIND/NAME``: everything known about one object, on one page.

From the state file alone, as ``status`` (no libvirt, so it answers at once): the spec as
accepted, the conditions with their reasons and ages, the drift, what the object waits for
(a dependency, the crash-loop backoff, a retry after an error, a stop in progress, its
deletion), its manifest file and that file's error, what the guest says about itself, and
the object's last events. Exit code as ``status KIND/NAME``: 0 synced and ready, 2 not, 1
no such object or no state file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import yaml

from kvmrec import config
from kvmrec import store as stores
from kvmrec.api.objects import ObjectKey
from kvmrec.cli import json_text, report, where
from kvmrec.cli.ages import age
from kvmrec.store.base import Store, StoreError

EVENTS = 10  # the last events shown, as many as kubectl describe shows at a glance


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "describe", help="show one object in detail: spec, conditions, drift, events"
    )
    parser.add_argument("object", metavar="KIND/NAME")
    where.add_state(parser, store=True)
    parser.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
    config.add_option(parser)  # last: it tracks the flags added above
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        key = ObjectKey.parse(args.object)
    except ValueError as exc:
        print(f"kvmrec describe: {exc}", file=sys.stderr)
        return 1
    try:
        store = stores.open(where.cli_settings(args).store_location, read_only=True)
    except StoreError as exc:
        print(f"kvmrec describe: {exc}", file=sys.stderr)
        return 1
    try:
        body = build(store, key)
    finally:
        store.close()
    if body is None:
        print(f"kvmrec describe: {key}: no such object", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json_text.dumps(body))
    elif args.output == "yaml":
        print(yaml.safe_dump(body, sort_keys=False, default_flow_style=False), end="")
    else:
        print(text(body, datetime.now(UTC)))
    healthy = report.exit_code({"objects": [body], "errors": body["errors"]}) == 0
    return 0 if healthy else 2


def build(store: Store, key: ObjectKey) -> dict[str, Any] | None:
    """The object's status report entry with its spec, annotations, manifest errors, what
    it waits for and its last events; None if the store has no such object."""
    obj = store.get(key)
    found = report.build(store, (key.kind, key.name))
    if obj is None or not found["objects"]:
        return None
    body: dict[str, Any] = found["objects"][0]
    body["spec"] = dict(obj.spec)
    body["annotations"] = dict(obj.annotations)
    body["errors"] = [e for e in found["errors"] if e["source"] == obj.source]
    body["waitingFor"] = waiting_for(body)
    body["events"] = [
        {
            "time": report.iso(e.time),
            "type": e.type,
            "reason": e.reason,
            "message": e.message,
        }
        for e in store.events(key, limit=EVENTS)
    ]
    return body


def waiting_for(obj: Mapping[str, Any]) -> list[str]:
    """What keeps the object from being done, from what its status records."""
    waits = []
    details = obj.get("details") or {}
    for cond in obj["conditions"]:
        if cond["reason"] == "WaitingForDependency" and cond["type"] == "Ready":
            waits.append(f"a dependency: {cond['message']}")
        elif cond["reason"] == "CrashLoopBackOff":
            failures = details.get("quickFailures", 0)
            waits.append(f"crash-loop backoff ({failures} quick failures): {cond['message']}")
        elif cond["reason"] == "CpuNotSupported" and cond["type"] == "Ready":
            waits.append(f"a CPU this host runs: {cond['message']}")
        elif cond["type"] == "RestartRequired" and cond["status"] == "True":
            waits.append(f"a restart: {cond['message']}" if cond["message"] else "a restart")
    install = details.get("install")
    if isinstance(install, Mapping) and install.get("phase") == "Installing":
        waits.append("the installer to power the guest off (then it boots from its disk)")
    stopping = details.get("stopping")
    if isinstance(stopping, Mapping):
        waits.append(f"the guest to stop (to {stopping.get('purpose', 'stop')})")
    if obj["lastError"]:
        waits.append(f"a retry (attempt {obj['retries']}) after: {obj['lastError']}")
    if obj["deleting"]:
        held = next(
            (c for c in obj["conditions"] if c["type"] == "Synced" and c["status"] == "False"),
            None,
        )
        why = f" ({held['reason']}: {held['message']})" if held and held["message"] else ""
        waits.append(f"its deletion: the manifest is gone{why}")
    return waits


def _spec_lines(spec: Mapping[str, Any]) -> list[str]:
    """The spec without its empty fields, as YAML: a line a field (a list: a line an item)."""
    shown = {k: v for k, v in spec.items() if v not in (None, [], {}, "")}
    if not shown:
        return ["  <empty>"]
    out = []
    for key, value in shown.items():
        if isinstance(value, list):
            out += [f"  {key}:", *(f"  - {_flow(item)}" for item in value)]
        else:
            out.append(f"  {key}: {_flow(value)}")
    return out


def _flow(value: Any) -> str:
    """A value as one line of YAML."""
    text = yaml.safe_dump(value, sort_keys=False, default_flow_style=True, width=10_000)
    return text.strip().removesuffix("...").strip()


def _table(rows: list[list[str]]) -> list[str]:
    return ["  " + line for line in report.lines(rows, report.widths(rows))]


def text(obj: Mapping[str, Any], now: datetime) -> str:
    labels = ",".join(f"{k}={v}" for k, v in sorted(obj["labels"].items()))
    generation = f"{obj['generation']} (observed {obj['observedGeneration']})"
    out = [
        f"Name:            {obj['name']}",
        f"Kind:            {obj['kind']}",
        f"Labels:          {labels or '<none>'}",
        f"Source:          {obj['source']}",
        f"Generation:      {generation}",
        f"State:           {obj['state'] or '-'}",
        f"Ready:           {'yes' if obj['ready'] else 'no'}",
        f"Synced:          {'yes' if obj['synced'] else 'no'}",
        f"Last reconcile:  {_ago(obj['lastReconcileTime'], now)}",
    ]
    if obj["deleting"]:
        out.append("Deleting:        yes (its manifest is gone)")
    out += ["Spec:", *_spec_lines(obj["spec"])]
    out.append("Conditions:")
    if obj["conditions"]:
        rows = [["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]]
        rows += [
            [c["type"], c["status"], c["reason"], age(c["lastTransitionTime"], now), c["message"]]
            for c in obj["conditions"]
        ]
        out += _table(rows)
    else:
        out.append("  <none> (not reconciled yet)")
    out.append("Drift:" if obj["drift"] else "Drift:           <none>")
    if obj["drift"]:
        rows = [["FIELD", "ACTUAL -> DESIRED"]]
        rows += [[d["field"], f"{d['actual']!s} -> {d['desired']!s}"] for d in obj["drift"]]
        out += _table(rows)
    waits = obj["waitingFor"]
    out.append("Waiting for:" if waits else "Waiting for:     <nothing>")
    out += [f"  {w}" for w in waits]
    out += _guest_lines(obj.get("guest"))
    errors = obj["errors"]
    out.append("Manifest error:" if errors else "Manifest error:  <none>")
    out += [f"  {e['source']}: {e['message']} (since {_ago(e['since'], now)})" for e in errors]
    out.append(f"Events (last {EVENTS}):" if obj["events"] else "Events:          <none>")
    if obj["events"]:
        rows = [["AGE", "TYPE", "REASON", "MESSAGE"]]
        rows += [[age(e["time"], now), e["type"], e["reason"], e["message"]] for e in obj["events"]]
        out += _table(rows)
    return "\n".join(line.rstrip() for line in out)


def _ago(since: str | None, now: datetime) -> str:
    return f"{age(since, now)} ago" if since else "never"


def _guest_lines(guest: Mapping[str, Any] | None) -> list[str]:
    if not guest:
        return []
    out = ["Guest:"]
    out.append(f"  Agent:       {'answers' if guest.get('agent') else 'not answering'}")
    out.append(f"  Host name:   {guest.get('hostname') or '-'}")
    os_name = guest.get("os") or "-"
    if guest.get("kernel"):
        os_name += f" (kernel {guest['kernel']})"
    out.append(f"  OS:          {os_name}")
    addresses = sorted(guest.get("addresses") or [], key=lambda a: a["family"] != "ipv4")
    if not addresses:
        out.append("  Addresses:   -")
    for index, a in enumerate(addresses):
        head = "  Addresses:   " if index == 0 else "               "
        where = f"{a.get('interface') or '?'} {a.get('mac') or ''}".strip()
        out.append(f"{head}{a['address']}/{a['prefix']} on {where} ({a['source']})")
    return out
