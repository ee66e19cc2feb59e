"""kvmrec: a declarative, self-healing reconciling controller for KVM hosts.

Manifests in a watched directory describe domains (and later networks, OVS bridges and
snapshot policies); the service diffs them against what libvirt really has and converges,
level-triggered and one object key at a time, in the manner of Kubernetes controllers.
"""

__version__ = "0.1.0"
