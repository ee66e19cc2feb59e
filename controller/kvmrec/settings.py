"""Settings of the service, with the reason for every default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from kvmrec.engine.backoff import BackoffSettings


def default_uri() -> str:
    """$LIBVIRT_DEFAULT_URI, as virsh does, else the system QEMU driver."""
    return os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"


@dataclass(frozen=True)
class Settings:
    manifests: Path = Path("/etc/kvmrec/manifests")
    connect: str = field(default_factory=default_uri)
    state: Path = Path("/var/lib/kvmrec/state.db")
    ovsdb: str = "unix:/run/openvswitch/db.sock"

    store: str | None = None
    """A store that is not a state file (``etcd://HOST:PORT[,...][/PREFIX]``, a fleet's);
    None: the ``state`` file. A ``sqlite:///PATH`` given as a store is made the ``state``
    (kvmrec/store_choice.py), so one file is never known by two names."""

    host: str | None = None
    """This hypervisor's name in a fleet (``run --host``); only with an etcd store."""

    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """This hypervisor's labels in a fleet (``run --label KEY=VALUE``), which placement
    matches a Domain's ``hostSelector`` against."""

    overcommit_memory: float = 1.0
    """How much of a fleet host's memory the scheduler hands out (fleet/scheduling.py):
    guest memory is really used, so by default none is promised twice."""

    overcommit_cpu: float = 4.0
    """vCPUs per host CPU the scheduler hands out: most vCPUs idle most of the time."""

    shared_storage: tuple[Path, ...] = ()
    """Directories this fleet host shares with the others at the same path (NFS, a cluster
    file system): registered with the host; disks there stay where they are when a guest
    migrates (any other disk is local, copied with --copy-storage), and they are the only
    places the scheduler accepts an HA Domain's disks (fleet/recovery.py). None by default:
    nothing is assumed shared that the operator has not said is."""

    fencing_window: float = 5.0
    """Seconds the scheduler waits, after it has seen a host's lease expired, before it
    starts that host's HA guests elsewhere: time for the cut-off host to finish destroying
    them, on top of the 5 s by which its own fence precedes the expiry (fleet/recovery.py
    does the arithmetic)."""

    migration_uri: str | None = None
    """The URI another host's libvirtd reaches this host's by for a peer-to-peer live
    migration (``run --migration-uri``); None: ``connect``."""

    migration_address: str | None = None
    """The address a migration's QEMU stream connects to on this host; None: libvirt's
    default (the host name)."""

    migration_stall_timeout: float = 150.0
    """A migration whose data remaining has not decreased for this long is cancelled (the
    guest stays where it was), as KubeVirt's progressTimeout."""

    resync: float = 300.0
    """Five minutes bounds how long drift that raised no libvirt event (an autostart flag
    flipped, a definition edited) can last; a no-op resync is one XML read per guest."""

    full_resync_every: int = 12
    """Every 12th resync (an hour at the default period) reconciles every object instead of
    only those whose fingerprint moved: a definition edited without an event (``virsh
    setvcpus --config`` on a running guest) is caught within the hour."""

    workers: int = 4
    """Guests start concurrently: four keeps QEMU start-up, not the queue, the cost on a
    small host without flooding libvirtd's worker pool (its default is 5 to 20 threads)."""

    debounce: float = 0.3
    """Long enough to swallow an editor's write-rename or a ``cp`` burst, short enough that
    a dropped manifest is acted on in well under a second."""

    rescan: float = 60.0
    """A full rescan of the manifest directory every minute repairs dropped inotify events
    (queue overflow, NFS) at the cost of hashing a few files."""

    backoff: BackoffSettings = field(default_factory=BackoffSettings)

    allow_mass_delete: bool = False
    """Off: a pass that would delete most managed objects at once is refused (an emptied or
    unmounted directory is more often an accident than an intent)."""

    insecure_manifests: bool = False
    """Off: kvmrec runs as root and does what manifests say, so, like sshd's StrictModes, it
    refuses a manifest that anyone but root or its own user could have written (the file,
    the directory, every directory on the way; sources/trust.py). On only for a directory
    whose other writers are trusted anyway."""

    disk_roots: tuple[Path, ...] = (Path("/var/lib/libvirt/images"), Path("/data/kvm"))
    """Disk images only under these: libvirt's default pool, and the usual home of a data
    disk's images. A manifest's disk path is opened by QEMU and created by kvmrec as root,
    and must never reach the host's own files (reconcilers/disk_paths.py)."""

    allow_device_disks: bool = False
    """Off: a disk path that is a block or character device is refused; raw LVM volumes are
    a real use, but an opt-in one (their directory must still be a disk root)."""

    stop_grace_period: float = 60.0
    """A guest asked to power off (agent first, then ACPI) gets a minute before it is
    destroyed: long enough for a real OS to flush and unmount, short enough that a guest
    that ignores the request does not hold up a deletion for long. A Domain's
    ``terminationGracePeriodSeconds`` overrides it."""

    metrics_listen: str | None = None
    """Off: a hypervisor's controller exposes nothing it was not asked to. Otherwise
    ``127.0.0.1:PORT`` or ``unix:/run/kvmrec/metrics.sock`` for /metrics, /healthz, /readyz."""

    history_days: float = 30.0
    """Events, reconciles and old revisions are kept for 30 days (the newest revision of an
    object always stays): enough to answer "what happened last month" without a state file
    that grows forever."""

    drain_timeout: float = 8.0
    """SIGTERM must end the process within 10 s (systemd's and the issue's budget); in-flight
    reconciles get 8 s of it to finish."""

    stuck_after: float = 900.0
    """A reconcile running for 15 minutes is hung, not slow: every call one makes is bounded
    well below that (qemu-img's 10 minutes for a full copy, libvirt's keepalive), so the
    systemd watchdog stops being petted and the service is restarted (kvmrec/daemon.py)."""

    @property
    def store_location(self) -> str | Path:
        """What ``kvmrec.store.open`` opens: the ``store`` if there is one, else ``state``."""
        return self.store if self.store is not None else self.state
