"""What an Open vSwitch says about itself, for the host checks (``kvmrec doctor``).

One select on the root row, without loading a replica of the database: the version, the
datapath classes built into ovs-vswitchd and whether ovs-vswitchd has applied the
configuration (``cur_cfg`` caught up with ``next_cfg``; it lags while ovs-vswitchd is down).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvmrec.backends import host
from kvmrec.backends.errors import BackendError
from kvmrec.backends.ovs import idl


@dataclass(frozen=True)
class SwitchFacts:
    version: str | None
    datapath_types: tuple[str, ...]  # built into ovs-vswitchd ("netdev", "system")
    vswitchd_current: bool  # ovs-vswitchd has applied the latest configuration
    kernel_datapath: bool  # the openvswitch kernel module is loaded (host.kernel_datapath)

    @property
    def working_datapaths(self) -> tuple[str, ...]:
        """The datapath types a bridge can really use here."""
        return tuple(t for t in self.datapath_types if t != "system" or self.kernel_datapath)


def switch_facts(remote: str, timeout: float = 3.0) -> SwitchFacts:
    """``Unavailable`` when the OVSDB server does not answer."""
    select = {
        "op": "select",
        "table": "Open_vSwitch",
        "where": [],
        "columns": ["ovs_version", "datapath_types", "cur_cfg", "next_cfg"],
    }
    reply = idl.ask(remote, "transact", ["Open_vSwitch", select], timeout, "read the root of")
    if reply.error is not None:
        raise BackendError(f"{remote}: {reply.error}")
    rows = reply.result[0].get("rows", []) if reply.result else []
    if not rows:
        raise BackendError(f"{remote}: the database has no Open_vSwitch row (ovs-vsctl init)")
    row = rows[0]
    version = _atoms(row.get("ovs_version"))
    return SwitchFacts(
        version=version[0] if version else None,
        datapath_types=tuple(sorted(_atoms(row.get("datapath_types")))),
        vswitchd_current=row.get("cur_cfg") == row.get("next_cfg"),
        kernel_datapath=host.kernel_datapath(),
    )


def _atoms(value: Any) -> list[str]:
    """An OVSDB datum (an atom, or ``["set", [...]]``) as a list of strings."""
    if isinstance(value, list) and value and value[0] == "set":
        return [str(v) for v in value[1]]
    return [] if value is None else [str(value)]
