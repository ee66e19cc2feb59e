"""``kvmrec snapshot``: list, take, revert and delete snapshots by hand, and simulate a
policy's schedule and retention over a span of time without touching anything.

What is done here by hand is recorded as an event of the domain in the state file of the
running service (found as cli/where.py says, or ``--state``; cli/by_hand.py), so
``kvmrec events`` tells the whole story of a guest.

Whether a snapshot can be restored is read from the snapshot itself before anything is
done (backends/snapshot_state.py): ``list`` says it, ``revert`` refuses one that cannot
be (``--force`` tries anyway). A revert that fails is a ``RevertFailed`` event and
condition with QEMU's words and what became of the guest (reconcilers/reverts.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from kvmrec import config
from kvmrec.api import manifests
from kvmrec.api.errors import ManifestError
from kvmrec.api.kinds import ObjectKey, SnapshotPolicySpec
from kvmrec.backends import protocols
from kvmrec.backends.errors import BackendError, Unavailable
from kvmrec.backends.libvirt.guest_agent import GuestAgent
from kvmrec.backends.libvirt.hypervisor import Hypervisor
from kvmrec.backends.snapshot_state import qemu_reason
from kvmrec.cli import by_hand, where
from kvmrec.engine.clock import SystemClock
from kvmrec.reconcilers import reverts, snapshot_policy
from kvmrec.reconcilers.snapshots import SnapshotFailed, take
from kvmrec.snapshots.retention import select
from kvmrec.snapshots.schedule import Schedule, ScheduleError, local_zone
from kvmrec.sources.scanning import scan
from kvmrec.store.base import Store
from kvmrec.store.records import SnapshotRecord

SIMULATION_LIMIT = 100_000  # snapshots; a span and schedule beyond it is refused
# Seconds for the agent of a reverted guest to answer again.
AGENT_PATIENCE = 20.0


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "snapshot", help="list, create, revert, delete snapshots; simulate a policy"
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--connect", default=None, help="libvirt URI")
        where.add_state(p, "state file, for the events (and the policy of each snapshot)")
        config.add_option(p)  # last of the options that are settings: it tracks them

    listing = verbs.add_parser("list", help="a domain's snapshots")
    listing.add_argument("domain")
    listing.add_argument("-o", "--output", choices=["table", "json"], default="table")
    common(listing)
    create = verbs.add_parser("create", help="take a snapshot now")
    create.add_argument("domain")
    create.add_argument("name")
    create.add_argument("--quiesce", choices=["auto", "required", "never"], default="auto")
    create.add_argument(
        "--no-memory", action="store_true", help="disk only (the guest must be shut off)"
    )
    common(create)
    revert = verbs.add_parser("revert", help="go back to a snapshot")
    revert.add_argument("domain")
    revert.add_argument("name")
    revert.add_argument(
        "--stop",
        action="store_true",
        help="leave the guest shut off afterwards (default: a running guest keeps running)",
    )
    revert.add_argument(
        "--force",
        action="store_true",
        help="try even a snapshot that `snapshot list` says cannot be restored",
    )
    revert.add_argument(
        "--sync-clock",
        action="store_true",
        help="set the guest clock through the guest agent afterwards (default: as the "
        "domain's manifest says in syncClock)",
    )
    common(revert)
    delete = verbs.add_parser("delete", help="delete a snapshot")
    delete.add_argument("domain")
    delete.add_argument("name")
    common(delete)
    simulate = verbs.add_parser(
        "simulate", help="which snapshots a policy would keep and prune over a time span"
    )
    simulate.add_argument("policy")
    simulate.add_argument("--from", dest="start", required=True, help="ISO time")
    simulate.add_argument("--to", dest="end", required=True, help="ISO time")
    where.add_manifests(simulate)
    config.add_option(simulate)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.verb == "simulate":
        return _simulate(args)
    settings = where.cli_settings(args)
    hv = Hypervisor(settings.connect)
    store = by_hand.open_store(settings.state)
    try:
        hv.open()
        return _VERBS[args.verb](args, hv, store)
    except (BackendError, SnapshotFailed) as exc:
        print(f"kvmrec snapshot {args.verb}: {exc}", file=sys.stderr)
        return 1
    finally:
        hv.close()
        if store is not None:
            store.close()


def _list(args: argparse.Namespace, hv: protocols.LibvirtHost, store: Store | None) -> int:
    records = {r.name: r for r in store.snapshots(domain=args.domain)} if store else {}
    snapshots = hv.list_snapshots(args.domain)
    if args.output == "json":
        listed = []
        for snap in snapshots:
            record = records.get(snap.name)
            listed.append(
                {
                    "name": snap.name,
                    "time": snap.time.isoformat(),
                    "state": snap.state,
                    "memory": snap.memory,
                    "kvmrec": record is not None,
                    "policy": record.policy if record else None,
                    "quiesced": record.quiesced if record else None,
                    "restorable": snap.restore_problem is None,
                    "restoreProblem": snap.restore_problem,
                }
            )
        print(json.dumps({"domain": args.domain, "snapshots": listed}, indent=2))
        return 0
    rows = [["NAME", "TIME", "STATE", "POLICY", "QUIESCED", "RESTORABLE"]]
    for snap in snapshots:
        record = records.get(snap.name)
        rows.append(
            [
                snap.name,
                snap.time.astimezone().isoformat(timespec="seconds"),
                snap.state,
                (record.policy or "-") if record else "(not kvmrec's)",
                ("yes" if record.quiesced else "no") if record else "-",
                f"no: {snap.restore_problem}" if snap.restore_problem else "yes",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _create(args: argparse.Namespace, hv: protocols.LibvirtHost, store: Store | None) -> int:
    live = hv.get_domain(args.domain)
    quiesced = take(
        hv,
        args.domain,
        args.name,
        "kvmrec snapshot create",
        quiesce=args.quiesce,
        memory=not args.no_memory,
    )
    if store is not None:
        store.record_snapshot(
            SnapshotRecord(
                args.domain,
                args.name,
                None,
                SystemClock().wall(),
                quiesced,
                bool(live and live.active),
            )
        )
    by_hand.record(
        store,
        args.domain,
        "SnapshotTaken",
        f"{args.name} by hand{' (quiesced)' if quiesced else ''}",
    )
    print(f"snapshot {args.name} of {args.domain} taken{' (quiesced)' if quiesced else ''}")
    problem = hv.get_snapshot(args.domain, args.name).restore_problem
    if problem:
        print(f"warning: {args.name} cannot be reverted to: {problem}", file=sys.stderr)
    return 0


def _revert(args: argparse.Namespace, hv: protocols.LibvirtHost, store: Store | None) -> int:
    live = hv.get_domain(args.domain)
    problem = hv.get_snapshot(args.domain, args.name).restore_problem
    if problem and not args.force:
        print(
            f"kvmrec snapshot revert: {args.domain} cannot be reverted to {args.name}: "
            f"{problem}. Nothing was done (--force tries anyway).",
            file=sys.stderr,
        )
        return 1
    running: bool | None = None
    if args.stop:
        running = False
    elif live is not None and live.active:
        running = True  # a running guest keeps running
    key = ObjectKey("Domain", args.domain)
    try:
        hv.revert_snapshot(args.domain, args.name, running=running)
    except Unavailable:
        raise
    except BackendError as exc:
        after = hv.get_domain(args.domain)
        obj = store.get(key) if store is not None else None
        message = (
            f"revert to {args.name} failed: {qemu_reason(str(exc))}; "
            f"{reverts.what_next(obj, after)}"
        )
        if store is not None:
            reverts.record(store, key, failed=True, message=message, now=SystemClock().wall())
        print(f"kvmrec snapshot revert: {args.domain}: {message}", file=sys.stderr)
        return 1
    if store is not None:
        message = f"reverted to {args.name} by hand"
        reverts.record(store, key, failed=False, message=message, now=SystemClock().wall())
    print(f"{args.domain} reverted to {args.name}")
    after = hv.get_domain(args.domain)
    runs = after is not None and after.state == "running"
    agent = GuestAgent(hv)
    if runs and after is not None and after.config.guest_agent:
        records = {r.name: r for r in store.snapshots(domain=args.domain)} if store else {}
        quiesced = args.name in records and records[args.name].quiesced
        if agent.thaw_if_frozen(args.domain, patience=AGENT_PATIENCE if quiesced else 0):
            by_hand.record(
                store, args.domain, "Thawed", f"{args.name} was quiesced: file systems thawed"
            )
            print(f"{args.domain}: file systems thawed (the snapshot was taken quiesced)")
    if runs and (args.sync_clock or _manifest_syncs_clock(store, args.domain)):
        # The guest's clock went back with its memory; the agent inside it takes a moment
        # to answer again after the revert.
        agent.sync_clock(args.domain, patience=AGENT_PATIENCE)
        by_hand.record(store, args.domain, "ClockSynced", "guest clock set after the revert")
        print(f"{args.domain}: guest clock set through the guest agent")
    return 0


def _manifest_syncs_clock(store: Store | None, domain: str) -> bool:
    obj = store.get(ObjectKey("Domain", domain)) if store is not None else None
    return bool(obj is not None and obj.spec.get("syncClock"))


def _delete(args: argparse.Namespace, hv: protocols.LibvirtHost, store: Store | None) -> int:
    hv.delete_snapshot(args.domain, args.name)
    if store is not None:
        store.forget_snapshot(args.domain, args.name)
    by_hand.record(store, args.domain, "SnapshotDeleted", f"{args.name} deleted by hand")
    print(f"snapshot {args.name} of {args.domain} deleted")
    return 0


_VERBS = {"list": _list, "create": _create, "revert": _revert, "delete": _delete}


def _simulate(args: argparse.Namespace) -> int:
    try:
        start = _time(args.start)
        end = _time(args.end)
    except ValueError as exc:
        print(f"kvmrec snapshot simulate: {exc}", file=sys.stderr)
        return 1
    spec = None
    directory = where.cli_settings(args).manifests
    snapshot = scan(directory)
    for path, content in sorted(snapshot.files.items()):
        try:
            for manifest in manifests.parse_file(path, content.data):
                if manifest.kind == "SnapshotPolicy" and manifest.name == args.policy:
                    spec = SnapshotPolicySpec.from_spec(manifest.spec)
        except ManifestError:
            continue
    if spec is None:
        print(
            f"kvmrec snapshot simulate: no valid SnapshotPolicy {args.policy} in {directory}",
            file=sys.stderr,
        )
        return 1
    try:
        schedule = Schedule.of(schedule=spec.schedule, every=spec.every)
    except ScheduleError as exc:
        print(f"kvmrec snapshot simulate: {exc}", file=sys.stderr)
        return 1
    retention = snapshot_policy.retention(spec)
    kept: list[datetime] = []
    pruned: list[tuple[datetime, datetime]] = []  # (snapshot, when it was pruned)
    now = start
    last: datetime | None = None
    for _ in range(SIMULATION_LIMIT):
        due = schedule.next_due(last, now, since=start)  # as if put in place at --from
        if due > end:
            break
        now = max(due, now)
        kept.insert(0, now)
        last = now
        decision = select(kept, lambda t: t, retention)
        pruned += [(t, now) for t in decision.prune]
        kept = list(decision.keep)
    else:
        print(
            f"kvmrec snapshot simulate: more than {SIMULATION_LIMIT} snapshots; shorten the span",
            file=sys.stderr,
        )
        return 1
    reasons = select(kept, lambda t: t, retention).reasons
    print(
        f"policy {args.policy}: {len(kept) + len(pruned)} snapshots from "
        f"{start.isoformat()} to {end.isoformat()}; {len(kept)} kept, {len(pruned)} pruned"
    )
    for t in kept:
        print(f"keep   {t.isoformat()}  ({reasons.get(t, '')})")
    for t, when in sorted(pruned, reverse=True):
        print(f"prune  {t.isoformat()}  (at {when.isoformat()})")
    return 0


def _time(text: str) -> datetime:
    # In the host's local time, as the controller reads cron schedules and cuts retention
    # periods; an offset only says which instant. Naive: the host's local time.
    return datetime.fromisoformat(text).astimezone(local_zone())
