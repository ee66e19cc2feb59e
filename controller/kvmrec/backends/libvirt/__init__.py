"""libvirt: the connection and the operations on it, one module a concern.

``connection`` opens the connection, runs libvirt's event loop and reconnects; ``domains``,
``snapshots``, ``storage`` and ``networks`` are the operations on it, and ``hypervisor`` puts
them together on one connection; ``guest_agent`` talks to the guest through it. ``live``
holds what they read back, and ``names`` libvirt's constants and words for states.

Only this package imports the libvirt binding. This file imports nothing, so ``live`` costs
a reader no libvirt.
"""
