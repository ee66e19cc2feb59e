"""libvirt's constants, looked up safely, and the words for domain states and their reasons.

The Python binding defines only the constants of the libvirt it was built against: one
built on Debian 12's libvirt 9.0 has no ``VIR_ERR_AGENT_COMMAND_TIMEOUT`` (libvirt 10.x),
and naming it raises ``AttributeError`` in the middle of error handling. A constant newer
than libvirt 9.0 is therefore only ever read through ``constant`` (None where the binding
lacks it) or ``codes`` (the set of those it has), never as ``libvirt.NAME``.

libvirt reports a domain's state with a reason code per state (``VIR_DOMAIN_RUNNING_BOOTED``,
``VIR_DOMAIN_SHUTOFF_DESTROYED``, ``VIR_DOMAIN_PAUSED_SNAPSHOT``); ``reason_word`` turns
them into the words kvmrec shows (``booted``, ``destroyed``, ``snapshot``).
"""

from __future__ import annotations

import libvirt


def constant(name: str) -> int | None:
    """``libvirt.<name>``, or None when this binding does not define it."""
    value = getattr(libvirt, name, None)
    return value if isinstance(value, int) else None


def codes(*names: str) -> frozenset[int]:
    """The values of those of ``names`` this binding defines."""
    return frozenset(v for v in (constant(n) for n in names) if v is not None)


# The reason codes of each state, by name (VIR_DOMAIN_<STATE>_<REASON>), in libvirt's order.
# Only reasons, not flags: VIR_DOMAIN_SHUTDOWN_GUEST_AGENT, for one, is a shutdown flag.
_REASONS: dict[str, tuple[str, ...]] = {
    "RUNNING": (
        "UNKNOWN",
        "BOOTED",
        "MIGRATED",
        "RESTORED",
        "FROM_SNAPSHOT",
        "UNPAUSED",
        "MIGRATION_CANCELED",
        "SAVE_CANCELED",
        "WAKEUP",
        "CRASHED",
        "POSTCOPY",
        "POSTCOPY_FAILED",
    ),
    "BLOCKED": ("UNKNOWN",),
    "PAUSED": (
        "UNKNOWN",
        "USER",
        "MIGRATION",
        "SAVE",
        "DUMP",
        "IOERROR",
        "WATCHDOG",
        "FROM_SNAPSHOT",
        "SHUTTING_DOWN",
        "SNAPSHOT",
        "CRASHED",
        "STARTING_UP",
        "POSTCOPY",
        "POSTCOPY_FAILED",
        "API_ERROR",
    ),
    "SHUTDOWN": ("UNKNOWN", "USER"),
    "SHUTOFF": (
        "UNKNOWN",
        "SHUTDOWN",
        "DESTROYED",
        "CRASHED",
        "MIGRATED",
        "SAVED",
        "FAILED",
        "FROM_SNAPSHOT",
        "DAEMON",
    ),
    "CRASHED": ("UNKNOWN", "PANICKED"),
    "PMSUSPENDED": ("UNKNOWN",),
    "NOSTATE": ("UNKNOWN",),
}


def _words() -> dict[tuple[int, int], str]:
    words: dict[tuple[int, int], str] = {}
    for state, reasons in _REASONS.items():
        code = constant(f"VIR_DOMAIN_{state}")
        if code is None:
            continue
        for reason in reasons:
            value = constant(f"VIR_DOMAIN_{state}_{reason}")
            if value is not None:
                words[(code, value)] = reason.lower().replace("_", "-")
    return words


_WORDS = _words()


def reason_word(state: int, reason: int) -> str:
    """The word for ``reason`` of a domain in ``state`` (``booted``, ``destroyed``, ...);
    for a code this binding does not name, ``reason N``."""
    return _WORDS.get((state, reason), f"reason {reason}")
