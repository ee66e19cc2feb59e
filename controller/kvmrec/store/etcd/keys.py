"""Where each record lives under the store's prefix, and how a key reads back.

    P/objects/KIND/NAME            the desired object
    P/revisions/KIND/NAME/GEN      every accepted spec (GEN zero-padded, so keys sort by it)
    P/status/KIND/NAME/HOST        the status one host reported ("-": a store without a host)
    P/events/KIND/NAME/ID          events, on a lease ("-/ID" for events of no object)
    P/history/KIND/NAME/ID         one record per reconcile
    P/snapshots/DOMAIN/NAME        the snapshot ledger
    P/source-errors, P/approval    the manifest files in error, the pending mass deletion

Hosts, placements and the scheduler's election live beside these (P/hosts/, P/hostinfo/,
P/placements/, P/election/). Kinds and names never hold a "/", so a key splits back cleanly.
"""

from __future__ import annotations

import uuid

from kvmrec.api.objects import ObjectKey

NO_HOST = "-"
NO_OBJECT = "-"


class Layout:
    """The keys of one store (``prefix`` such as ``/kvmrec``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self.root = f"{self.prefix}/".encode()

    def _key(self, *parts: str) -> bytes:
        return "/".join((self.prefix, *parts)).encode()

    def objects(self, kind: str | None = None) -> bytes:
        return self._key("objects", kind, "") if kind else self._key("objects", "")

    def object(self, key: ObjectKey) -> bytes:
        return self._key("objects", key.kind, key.name)

    def object_key(self, raw: bytes) -> ObjectKey:
        kind, name = raw[len(self.objects()) :].decode().split("/", 1)
        return ObjectKey(kind, name)

    def revisions(self, key: ObjectKey | None = None) -> bytes:
        if key is None:
            return self._key("revisions", "")
        return self._key("revisions", key.kind, key.name, "")

    def revision(self, key: ObjectKey, generation: int) -> bytes:
        return self._key("revisions", key.kind, key.name, f"{generation:010d}")

    def statuses(self, key: ObjectKey | None = None) -> bytes:
        if key is None:
            return self._key("status", "")
        return self._key("status", key.kind, key.name, "")

    def placement(self, key: ObjectKey) -> bytes:
        return self._key("placements", key.kind, key.name)

    def status(self, key: ObjectKey, host: str | None) -> bytes:
        return self._key("status", key.kind, key.name, host or NO_HOST)

    def status_owner(self, raw: bytes) -> tuple[ObjectKey, str | None]:
        """The object and host (None for "-") of a status key."""
        kind, name, host = raw[len(self.statuses()) :].decode().split("/", 2)
        return ObjectKey(kind, name), None if host == NO_HOST else host

    def events(self, key: ObjectKey | None = None) -> bytes:
        if key is None:
            return self._key("events", "")
        return self._key("events", key.kind, key.name, "")

    def new_event(self, key: ObjectKey | None, index: int) -> bytes:
        """The key of the ``index``-th event of one transaction (they share a create
        revision; the index orders them)."""
        name = f"{index:04d}-{uuid.uuid4().hex}"
        if key is None:
            return self._key("events", NO_OBJECT, name)
        return self._key("events", key.kind, key.name, name)

    def history(self, key: ObjectKey | None = None) -> bytes:
        if key is None:
            return self._key("history", "")
        return self._key("history", key.kind, key.name, "")

    def new_history(self, key: ObjectKey) -> bytes:
        return self._key("history", key.kind, key.name, uuid.uuid4().hex)

    def snapshots(self) -> bytes:
        return self._key("snapshots", "")

    def snapshot(self, domain: str, name: str) -> bytes:
        return self._key("snapshots", domain, name)

    def source_errors(self) -> bytes:
        return self._key("source-errors")

    def approval(self) -> bytes:
        return self._key("approval")
