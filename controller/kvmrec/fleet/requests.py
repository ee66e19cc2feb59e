"""Asking for a migration: where to (the scheduler's filters and score, the source left
out), and the request written in one transaction with the placement it was read at; and
asking an unfinished one to stop."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Literal

from kvmrec.api.kinds import ObjectKey
from kvmrec.fleet import scheduling
from kvmrec.store.fleet import FleetControl, Migrations
from kvmrec.store.fleet_records import Migration

# A Running request moves under its own progress writes: a cancel compares again on a
# fresh read this many times.
CANCEL_TRIES = 5


class Refused(Exception):
    """The request cannot be made; the message says why."""


def pick_target(control: FleetControl, key: ObjectKey, source: str) -> str:
    """The host the scheduler would place Domain ``key`` on if ``source`` took nothing."""
    objects = list(control.store.list())
    hosts = [
        dataclasses.replace(h, cordoned=True) if h.name == source else h
        for h in control.hosts.hosts()
    ]
    placements = {
        k: p.placement for k, p in control.placements.placements("Domain").items() if k != key
    }
    domains = [d for d in scheduling.parsed(objects) if d[0].key == key or d[0].key in placements]
    host_level = [o for o in objects if o.key.kind != "Domain"]
    decision = scheduling.schedule(hosts, domains, placements, host_level).get(key)
    if isinstance(decision, scheduling.Scheduled):
        return decision.host
    if isinstance(decision, scheduling.Unschedulable):
        raise Refused(f"no other host takes it: {decision.message}")
    raise Refused("it cannot be scheduled")


def request(
    control: FleetControl,
    key: ObjectKey,
    to: str | None,
    now: datetime,
    *,
    copy_storage: bool = False,
    mode: Literal["live", "restart"] = "live",
) -> Migration:
    """Write a request to move Domain ``key``; raises ``Refused`` saying why not."""
    obj = control.store.get(key)
    if obj is None:
        raise Refused(f"{key}: not found")
    placed = control.placements.placement(key)
    if placed is None:
        raise Refused(f"{key}: not placed on any host")
    source = placed.placement.host
    pinned = obj.spec.get("host")
    if mode == "live" and isinstance(pinned, str) and pinned == source:
        raise Refused(f"{key}: pinned to {source} by spec.host")
    if mode == "live":
        if to is None:
            to = pick_target(control, key, source)
        if to == source:
            raise Refused(f"{key}: runs on {to} already")
        target = control.hosts.host(to)
        if target is None or not target.ready:
            raise Refused(f"{key}: {to} is not a Ready host")
    existing = control.migrations.migration(key)
    if existing is not None and not existing.final:
        raise Refused(f"{key}: a migration to {existing.to} is {existing.state} already")
    migration = Migration(
        key=key,
        source=source,
        to=to or "",
        requested=now,
        copy_storage=copy_storage,
        mode=mode,
        revision=existing.revision if existing is not None else 0,
    )
    if not control.migrations.request(migration, placed.revision):
        raise Refused(f"{key}: its placement or migration changed meanwhile; try again")
    return control.migrations.migration(key) or migration


def cancel(migrations: Migrations, key: ObjectKey) -> Migration:
    """Stop the unfinished migration of Domain ``key``; raises ``Refused`` when there is
    none. A Pending request ends Cancelled at once (nothing had started, and its source's
    start compares the request's revision); a Running one is marked, and its source host
    aborts libvirt's job, the guest staying where it runs, and ends it Cancelled."""
    for _ in range(CANCEL_TRIES):
        current = migrations.migration(key)
        if current is None or current.final:
            raise Refused(f"{key}: no migration under way")
        if current.cancel:
            return current
        if current.state == "Pending":
            reason = "cancelled by the operator before it started"
            changed = dataclasses.replace(current, state="Cancelled", reason=reason)
        else:
            changed = dataclasses.replace(current, cancel=True)
        if migrations.update(changed):
            return migrations.migration(key) or changed
    raise Refused(f"{key}: its migration kept changing meanwhile; try again")
