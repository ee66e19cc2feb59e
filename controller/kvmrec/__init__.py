"""kvmrec: a declarative, self-healing reconciling controller for KVM hosts.

Manifests in a watched directory describe domains, libvirt networks, Open vSwitch bridges,
snapshots and snapshot policies; the service diffs them against what libvirt and OVSDB
really have and converges, level-triggered and one object key at a time, in the manner of
Kubernetes controllers.
"""

__version__ = "0.1.0"
