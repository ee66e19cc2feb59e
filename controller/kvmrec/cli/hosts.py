"""``kvmrec hosts``: the hosts of a fleet, as ``kubectl get nodes`` shows nodes.

One line per host that ever registered: whether its lease is alive (``Ready``, else
``NotReady``; ``SchedulingDisabled`` beside it when cordoned, ``Draining`` while ``kvmrec
drain`` moves its guests away), its labels, how many Domains
are placed on it, the memory and vCPUs those Domains' specs take of its capacity (without
the scheduler's overcommit), its kvmrec version and how long ago its lease was last
renewed. ``-o json|yaml`` prints the shape of DESIGN.md's fleet contract.

It only reads: the store is opened without a lease, so looking never joins the fleet.
Exit 0 when every host is Ready, 2 when one is not, 1 when the store cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kvmrec import config
from kvmrec import store as stores
from kvmrec.api import domain_size
from kvmrec.api.objects import ObjectKey
from kvmrec.cli import report, where
from kvmrec.cli.ages import age
from kvmrec.store.base import StoreError
from kvmrec.store.fleet import FleetView
from kvmrec.store.fleet_records import Capacity, HostRecord, Placement
from kvmrec.store.records import StoredObject

HEADER = ["NAME", "READY", "LABELS", "DOMAINS", "MEMORY", "VCPUS", "VERSION", "LAST HEARTBEAT"]


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "hosts", help="list the hosts of a fleet (exit 2 if one is not Ready)"
    )
    parser.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="the fleet's store, etcd://HOST:PORT[,HOST:PORT...][/PREFIX]; if not given, "
        f"${config.ENVIRONMENT['store']}, else the configuration file's",
    )
    parser.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    config.add_option(parser)  # last: it tracks the flags added above
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = where.cli_settings(args, warn=False)
    url = settings.store
    if url is None or not url.startswith("etcd://"):
        print("kvmrec hosts: hosts needs an etcd:// store (--store etcd://...)", file=sys.stderr)
        return 1
    try:
        view = stores.open_fleet_view(url)
    except StoreError as exc:
        print(f"kvmrec hosts: {exc}", file=sys.stderr)
        return 1
    try:
        result = build(view)
    except StoreError as exc:
        print(f"kvmrec hosts: {exc}", file=sys.stderr)
        return 1
    finally:
        view.close()
    print(render(result, args.output, datetime.now(UTC)))
    return exit_code(result)


def build(view: FleetView) -> dict[str, Any]:
    """The hosts of ``view`` in the JSON shape of the fleet contract."""
    hosts = view.hosts()
    placements = view.placements()
    return {"hosts": entries(hosts, view.list("Domain"), placements)}


def entries(
    hosts: Sequence[HostRecord],
    domains: Sequence[StoredObject],
    placements: Mapping[ObjectKey, Placement],
) -> list[dict[str, Any]]:
    """One entry per host: what it registered, and what the Domains placed on it take, as
    the scheduler counts it (a placement of a Domain that no longer exists counts for
    nothing)."""
    used: dict[str, Capacity] = {}
    counts: dict[str, int] = {}
    for obj in domains:
        placed = placements.get(obj.key)
        if placed is None:
            continue
        was = used.get(placed.host, Capacity(0, 0))
        memory, vcpus = domain_size.memory(obj.spec), domain_size.vcpus(obj.spec)
        used[placed.host] = Capacity(was.memory_bytes + memory, was.vcpus + vcpus)
        counts[placed.host] = counts.get(placed.host, 0) + 1
    return [
        {
            "name": host.name,
            "ready": host.ready,
            "labels": dict(host.labels),
            "capacity": _capacity(host.capacity),
            "allocated": _capacity(used.get(host.name, Capacity(0, 0))),
            "domains": counts.get(host.name, 0),
            "version": host.version,
            "lastHeartbeatTime": report.iso(host.last_heartbeat),
            "cordoned": host.cordoned,
            "draining": host.draining,
        }
        for host in hosts
    ]


def _capacity(capacity: Capacity) -> dict[str, int]:
    return {"memoryBytes": capacity.memory_bytes, "vcpus": capacity.vcpus}


def exit_code(result: Mapping[str, Any]) -> int:
    return 0 if all(host["ready"] for host in result["hosts"]) else 2


def render(result: Mapping[str, Any], output: str, now: datetime) -> str:
    if output == "json":
        return json.dumps(result, indent=2)
    if output == "yaml":
        import yaml  # only for -o yaml

        return yaml.safe_dump(dict(result), sort_keys=False, default_flow_style=False)
    return table(result["hosts"], now)


def table(hosts: Sequence[Mapping[str, Any]], now: datetime) -> str:
    rows = [HEADER, *(row(host, now) for host in hosts)]
    text = report.lines(rows, report.widths(rows))
    if not hosts:
        text.append("(no hosts)")
    return "\n".join(text)


def row(host: Mapping[str, Any], now: datetime) -> list[str]:
    ready = "Ready" if host["ready"] else "NotReady"
    if host["cordoned"]:
        ready += ",SchedulingDisabled"
    if host.get("draining"):
        ready += ",Draining"
    labels = ",".join(f"{k}={v}" for k, v in sorted(host["labels"].items()))
    used, total = host["allocated"], host["capacity"]
    return [
        host["name"],
        ready,
        labels or "<none>",
        str(host["domains"]),
        f"{size(used['memoryBytes'])}/{size(total['memoryBytes'])}",
        f"{used['vcpus']}/{total['vcpus']}",
        host["version"] or "-",
        age(host["lastHeartbeatTime"], now),
    ]


def size(nbytes: int) -> str:
    """Memory in the units of a quantity, to a tenth at most: ``512Mi``, ``7.6Gi``."""
    for unit, scale in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f}".removesuffix(".0") + unit
    return "0" if nbytes == 0 else f"{nbytes / 1024:.1f}".removesuffix(".0") + "Ki"
