"""Open vSwitch: bridges and ports through OVSDB, one module a concern.

``model`` is the data (bridges, ports, changes and what of a change is needed); ``idl`` the
ovsdbapp replica fitted to kvmrec; ``connection`` keeps it connected and turns its updates
into bridge events; ``netlink`` is the kernel's side (promiscuous flag, link
notifications); ``client`` (``Ovsdb``) is what the service uses.

Only this package imports ovsdbapp and python-ovs. This file imports nothing, so ``model``
costs a reader none of them.
"""
