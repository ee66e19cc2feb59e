"""How long ago something was, as kubectl prints an age: 12s, 5m10s, 3h20m, 3d4h.

Shared by the commands that show times to people (``describe``, ``hosts``); it imports
nothing heavier than datetime, so a fast command can use it.
"""

from __future__ import annotations

from datetime import datetime


def age(since: str | None, now: datetime) -> str:
    """How long ago, as kubectl shows it: 12s, 5m10s, 45m, 3h20m, 20h, 3d4h, 12d."""
    if not since:
        return "-"
    seconds = max(0, int((now - datetime.fromisoformat(since)).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"
