"""Log lines for people (text) and for log pipelines (JSON), each naming its object.

A worker sets the key it is reconciling in a context variable for the length of the
reconcile; every record logged meanwhile, from any module, carries it: ``[Domain/web]`` in
text, ``"object": "Domain/web"`` in JSON. Nothing has to remember to pass the key.

Every event the store records is also logged once, by :func:`event`, as ``kvmrec events``
shows it (``Domain/web: Started: ...``), so the service's log tells the same story.

Commands other than the service (``status``, ``plan``, ``snapshot``, ...) print their answer
on stdout; their log is for warnings and errors only, unless ``--log-level`` asks for more
(:func:`quiet`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("kvmrec_object", default=None)
_events = logging.getLogger("kvmrec.events")
# The lowest level setup() may set; raised by quiet().
_floor = logging.DEBUG


def event(key: object | None, type_: str, reason: str, message: str) -> None:
    """Log one event (type Normal or Warning) as ``kvmrec events`` shows it."""
    level = logging.WARNING if type_ == "Warning" else logging.INFO
    if key is None:
        _events.log(level, "%s: %s", reason, message, extra={"object": None})
    else:
        _events.log(level, "%s: %s: %s", key, reason, message, extra={"object": str(key)})


def quiet(on: bool = True) -> None:
    """From now on, log warnings and errors only (a command, not the service), whatever level
    :func:`setup` is given later; ``on=False`` lifts it."""
    global _floor
    _floor = logging.WARNING if on else logging.DEBUG
    root = logging.getLogger()
    root.setLevel(max(root.level, _floor))


@contextmanager
def about(key: object) -> Iterator[None]:
    """Log everything inside as being about ``key``."""
    token = _current.set(str(key))
    try:
        yield
    finally:
        _current.reset(token)


class _ObjectFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "object"):
            record.object = _current.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        key = getattr(record, "object", None)
        return f"{line} [{key}]" if key and f"{key}:" not in record.getMessage() else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, object, and the exception."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        key = getattr(record, "object", None)
        if key:
            body["object"] = key
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body)


def setup(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger: stderr, the given level and format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ObjectFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(getattr(logging, level), _floor))
