"""Internal snapshots of domains through libvirt, and freezing a guest for one.

A snapshot is read as a ``SnapshotInfo`` (snapshot_state.py: when, with memory or not,
whether a revert to it can work). Freezing and thawing the guest's file systems go through
the guest agent, for a snapshot taken quiesced.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from kvmrec.backends import snapshot_state
from kvmrec.backends.libvirt.connection import OnConnection
from kvmrec.backends.snapshot_state import SnapshotInfo


class Snapshots(OnConnection):
    """The snapshots of the domains of one libvirt connection."""

    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        """The domain's snapshots, newest first."""
        with self._call(f"list snapshots of {name}") as conn:
            dom = conn.lookupByName(name)
            found = [snapshot_state.parse(snap.getXMLDesc(0)) for snap in dom.listAllSnapshots(0)]
        return sorted(found, key=lambda s: s.time, reverse=True)

    def get_snapshot(self, name: str, snapshot: str) -> SnapshotInfo:
        """One snapshot of the domain; ``NotFound`` when there is no such snapshot."""
        with self._call(f"read snapshot {snapshot} of {name}") as conn:
            snap = conn.lookupByName(name).snapshotLookupByName(snapshot)
            return snapshot_state.parse(snap.getXMLDesc(0))

    def create_snapshot(self, name: str, snapshot: str, description: str) -> None:
        """An internal snapshot (in the qcow2 images): with the memory state when the guest
        runs, which QEMU requires of an internal snapshot of a running guest."""
        root = ET.Element("domainsnapshot")
        ET.SubElement(root, "name").text = snapshot
        ET.SubElement(root, "description").text = description
        with self._call(f"snapshot {name}") as conn:
            conn.lookupByName(name).snapshotCreateXML(
                ET.tostring(root, encoding="unicode"),
                libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC,
            )

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        with self._call(f"delete snapshot {snapshot} of {name}") as conn:
            conn.lookupByName(name).snapshotLookupByName(snapshot).delete(0)

    def revert_snapshot(self, name: str, snapshot: str, *, running: bool | None) -> None:
        """Back to ``snapshot``; ``running`` True/False forces the guest's state after it,
        None keeps the snapshot's own."""
        flags = 0
        if running is True:
            flags = libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING
        with self._call(f"revert {name} to {snapshot}") as conn:
            dom = conn.lookupByName(name)
            dom.revertToSnapshot(dom.snapshotLookupByName(snapshot), flags)
            if running is False and dom.isActive():
                dom.destroy()

    def freeze(self, name: str) -> int:
        """Freeze the guest's file systems through the guest agent; how many it froze."""
        with self._call(f"freeze file systems of {name}") as conn:
            return int(conn.lookupByName(name).fsFreeze())

    def thaw(self, name: str) -> None:
        with self._call(f"thaw file systems of {name}") as conn:
            conn.lookupByName(name).fsThaw()
