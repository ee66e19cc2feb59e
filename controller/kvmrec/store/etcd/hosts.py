"""The hosts of a fleet in etcd: a live registration on each host's lease, and what stays.

    P/hosts/NAME     the host as it registered, on its lease: Ready while the key exists;
                     etcd deletes it when the lease expires (NotReady within the TTL plus
                     etcd's half-second expiry check)
    P/hostinfo/NAME  labels, capacity, version, cordon flag, last heartbeat: kept when the
                     lease goes, so ``kvmrec hosts`` still shows a dead host; ``stopped``
                     when its kvmrec stopped on purpose (cleared by registering)

With nothing changing, a host writes nothing but its lease renewals: a Ready host's last
heartbeat is read from its lease (granted TTL minus remaining TTL ago), not written per
renewal. ``P/hostinfo`` records a heartbeat only when the host registers and when someone
that saw it live says so (``record_last_heartbeat``), e.g. the scheduler when it goes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from kvmrec.store.base import StoreError
from kvmrec.store.etcd.gateway import (
    EtcdError,
    Gateway,
    KeyValue,
    compare,
    put_op,
    range_op,
    range_response,
)
from kvmrec.store.etcd.leases import HostLease
from kvmrec.store.fleet_records import Capacity, HostRecord

_ATTEMPTS = 10  # compare-and-swap retries against concurrent writers of one hostinfo


class EtcdHosts:
    """The Hosts of a fleet; ``lease`` (the host's own) is needed only to ``register``."""

    def __init__(self, gateway: Gateway, prefix: str = "/kvmrec", lease: HostLease | None = None):
        self._gateway = gateway
        self._live = f"{prefix}/hosts/".encode()
        self._info = f"{prefix}/hostinfo/".encode()
        self._lease = lease

    def live_key(self, name: str) -> bytes:
        return self._live + name.encode()

    def register(self, host: HostRecord, now: datetime) -> None:
        """Publish ``host`` on the lease (replacing an older registration of the same name,
        whose lease then no longer guards its writes); keeps the cordon flag."""
        if self._lease is None:
            raise StoreError("registering a host needs its lease")
        live = json.dumps(_host_json(host)).encode()
        for _ in range(_ATTEMPTS):
            info_kv = self._gateway.get(self._info + host.name.encode())
            kept = _loads(info_kv)
            flags = {f: bool(kept.get(f, False)) for f in ("cordoned", "draining")}
            info = _host_json(host) | {"last_heartbeat": now.isoformat()} | flags
            result = self._gateway.txn(
                [_unchanged(self._info + host.name.encode(), info_kv)],
                [
                    put_op(self.live_key(host.name), live, self._lease.id),
                    put_op(self._info + host.name.encode(), json.dumps(info).encode()),
                ],
            )
            if result.succeeded:
                return
        raise StoreError(f"host {host.name}: its record keeps changing; not registered")

    def hosts(self) -> Sequence[HostRecord]:
        result = self._gateway.txn(
            [], [range_op(self._live, prefix=True), range_op(self._info, prefix=True)]
        )
        live = {_name(kv.key, self._live): kv for kv in range_response(result.responses[0]).kvs}
        infos = {_name(kv.key, self._info): kv for kv in range_response(result.responses[1]).kvs}
        now = datetime.now(UTC)
        return [
            self._record(name, infos.get(name), live.get(name), now)
            for name in sorted(live.keys() | infos.keys())
        ]

    def host(self, name: str) -> HostRecord | None:
        result = self._gateway.txn(
            [], [range_op(self.live_key(name)), range_op(self._info + name.encode())]
        )
        live, info = (range_response(response).kvs for response in result.responses)
        if not live and not info:
            return None
        return self._record(
            name, info[0] if info else None, live[0] if live else None, datetime.now(UTC)
        )

    def set_cordoned(self, name: str, cordoned: bool) -> bool:
        return self._update_info(name, {"cordoned": cordoned})

    def set_stopped(self, name: str, when: datetime) -> bool:
        return self._update_info(name, {"stopped": when.isoformat()})

    def set_draining(self, name: str, draining: bool) -> bool:
        return self._update_info(name, {"draining": draining})

    def record_last_heartbeat(self, name: str, when: datetime) -> bool:
        """Keep ``when`` as the host's last heartbeat if it is later than the one kept."""
        info = self._gateway.get(self._info + name.encode())
        kept = _time(_loads(info).get("last_heartbeat"))
        if kept is not None and kept >= when:
            return True
        return self._update_info(name, {"last_heartbeat": when.isoformat()})

    def _update_info(self, name: str, fields: Mapping[str, Any]) -> bool:
        key = self._info + name.encode()
        for _ in range(_ATTEMPTS):
            kv = self._gateway.get(key)
            if kv is None:
                return False
            info = _loads(kv) | dict(fields)
            result = self._gateway.txn(
                [compare(key, "MOD", kv.mod_revision)], [put_op(key, json.dumps(info).encode())]
            )
            if result.succeeded:
                return True
        raise StoreError(f"host {name}: its record keeps changing; not updated")

    def _record(
        self, name: str, info_kv: KeyValue | None, live_kv: KeyValue | None, now: datetime
    ) -> HostRecord:
        info = _loads(info_kv)
        data = _loads(live_kv) or info
        heartbeat = _time(info.get("last_heartbeat"))
        unrenewed = None
        if live_kv is not None and live_kv.lease:
            unrenewed = self._unrenewed_for(live_kv.lease)
            if unrenewed is not None:
                heartbeat = now - timedelta(seconds=unrenewed)
        capacity = data.get("capacity", {})
        return HostRecord(
            name=name,
            labels=dict(data.get("labels", {})),
            capacity=Capacity(int(capacity.get("memory_bytes", 0)), int(capacity.get("vcpus", 0))),
            domain_type="qemu" if data.get("domain_type") == "qemu" else "kvm",
            ovs_datapath=data.get("ovs_datapath"),
            version=str(data.get("version", "")),
            ready=live_kv is not None,
            last_heartbeat=heartbeat,
            cordoned=bool(info.get("cordoned", False)),
            shared_storage=tuple(str(p) for p in data.get("shared_storage", ())),
            stopped=live_kv is None and bool(info.get("stopped")),
            draining=bool(info.get("draining", False)),
            migration_uri=_text(data.get("migration_uri")),
            migration_address=_text(data.get("migration_address")),
            unrenewed_for=unrenewed,
        )

    def _unrenewed_for(self, lease: int) -> int | None:
        """Seconds since ``lease`` was last renewed (None: etcd no longer knows it)."""
        try:
            answer = self._gateway.post("/v3/kv/lease/timetolive", {"ID": str(lease)})
        except EtcdError:
            return None
        granted, left = int(answer.get("grantedTTL", 0)), int(answer.get("TTL", -1))
        if left < 0:
            return None
        return granted - left


def _host_json(host: HostRecord) -> dict[str, Any]:
    return {
        "labels": dict(host.labels),
        "capacity": {"memory_bytes": host.capacity.memory_bytes, "vcpus": host.capacity.vcpus},
        "domain_type": host.domain_type,
        "ovs_datapath": host.ovs_datapath,
        "version": host.version,
        "shared_storage": list(host.shared_storage),
        "migration_uri": host.migration_uri,
        "migration_address": host.migration_address,
    }


def _unchanged(key: bytes, kv: KeyValue | None) -> dict[str, Any]:
    return compare(key, "MOD", kv.mod_revision) if kv else compare(key, "CREATE", 0)


def _loads(kv: KeyValue | None) -> dict[str, Any]:
    if kv is None or not kv.value:
        return {}
    data = json.loads(kv.value)
    return data if isinstance(data, dict) else {}


def _name(key: bytes, prefix: bytes) -> str:
    return key[len(prefix) :].decode()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _time(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None
