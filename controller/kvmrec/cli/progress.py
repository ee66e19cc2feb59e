"""A progress line for long runs on a terminal, and silence everywhere else.

``run --once`` and ``plan`` over many objects take a while; on a terminal they redraw one
line (``converging  812/1000 [#################   ]``). Piped or redirected — CI logs,
``| jq`` — they print nothing extra, so their output stays machine-readable.
"""

from __future__ import annotations

import sys
from typing import TextIO

MINIMUM = 20  # fewer objects than this finish before a progress line would help
WIDTH = 30


class Progress:
    def __init__(self, label: str, stream: TextIO | None = None, minimum: int = MINIMUM) -> None:
        self._label = label
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty()
        self._minimum = minimum
        self._shown = False

    def update(self, done: int, total: int) -> None:
        if not self._enabled or total < self._minimum:
            return
        filled = WIDTH * done // max(total, 1)
        bar = "#" * filled + " " * (WIDTH - filled)
        self._stream.write(f"\r{self._label}  {done}/{total} [{bar}]")
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")  # clear the line for what is printed next
            self._stream.flush()
            self._shown = False
