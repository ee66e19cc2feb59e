"""The errors every backend raises, so reconcilers handle libvirt and OVSDB alike.

BackendError        a call failed; retry with backoff
├── NotFound        the object does not exist (any more)
└── Unavailable     the daemon cannot be reached; Ready=Unknown until it is back
"""

from __future__ import annotations


class BackendError(Exception):
    """A call to libvirt or OVSDB failed."""


class NotFound(BackendError):
    """The object does not exist (any more)."""


class Unavailable(BackendError):
    """The daemon cannot be reached; retry later."""
