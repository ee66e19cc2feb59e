"""Backends: the only modules that talk to libvirt, Open vSwitch and the host's kernel.

``protocols`` says what the rest of kvmrec needs of each concern (domains, snapshots,
storage, networks, the guest agent, OVS bridges) and is all the reconcilers type against.
``libvirt/`` and ``ovs/`` implement them; ``errors`` holds the errors all of them raise.
``domain_xml``, ``network_xml`` and ``snapshot_state`` translate between the manifests'
models and libvirt's XML, ``images`` makes disk images with qemu-img, and ``host`` answers
what neither daemon does (network devices, the kernel's OVS datapath).
"""
