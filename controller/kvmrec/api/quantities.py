"""Kubernetes-style quantities for memory and disk sizes.

``64Mi`` and ``2Gi`` are binary (powers of 1024), ``1G`` is decimal, a bare number is bytes.
libvirt counts memory in KiB, so the canonical form kvmrec keeps is an integer of bytes and
conversions round to whole KiB upwards (a guest never gets less than it asked for).
"""

from __future__ import annotations

import re
from decimal import Decimal

_UNITS: dict[str, int] = {
    "": 1,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}
_PATTERN = re.compile(r"^(?P<num>[0-9]+(?:\.[0-9]+)?)(?P<unit>Ki|Mi|Gi|Ti|K|M|G|T)?$")


def parse_bytes(value: str | int) -> int:
    """Bytes in a quantity; raises ValueError with the reason when it is not one."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    if not isinstance(value, str):  # e.g. a float: the schema lets any number through
        raise ValueError(f"{value!r} is not a quantity (examples: 64Mi, 2Gi, 1G)")
    match = _PATTERN.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a quantity (examples: 64Mi, 2Gi, 1G)")
    number = Decimal(match["num"]) * _UNITS[match["unit"] or ""]
    return int(number.to_integral_value(rounding="ROUND_CEILING"))


def to_kib(nbytes: int) -> int:
    """Whole KiB, rounded up."""
    return -(-nbytes // 1024)


def format_bytes(nbytes: int) -> str:
    """The shortest exact binary quantity: 67108864 -> '64Mi'."""
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        size = _UNITS[unit]
        if nbytes and nbytes % size == 0:
            return f"{nbytes // size}{unit}"
    return str(nbytes)
