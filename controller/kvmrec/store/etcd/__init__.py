"""The store of a fleet: desired state, status, events and hosts in etcd (``etcd://``)."""
