"""Backends: the only modules that talk to libvirt (and later OVSDB and etcd).

``domain_xml`` turns the Domain model into libvirt domain XML and live XML back into the
model; ``hypervisor`` owns the libvirt connection, its event loop and reconnection.
"""
