"""The progress line: drawn on a terminal for many objects, silent otherwise."""

from __future__ import annotations

import io

from kvmrec.cli.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_redrawn_line_that_is_cleared_at_the_end() -> None:
    out = Terminal()
    progress = Progress("converging", out)
    progress.update(10, 40)
    progress.update(40, 40)
    progress.close()
    text = out.getvalue()
    assert "\rconverging  10/40 [#######" in text
    assert "\rconverging  40/40 [" + "#" * 30 + "]" in text
    assert text.endswith("\r\x1b[K")


def test_a_pipe_gets_nothing() -> None:
    out = io.StringIO()
    progress = Progress("converging", out)
    progress.update(10, 1000)
    progress.close()
    assert out.getvalue() == ""


def test_a_few_objects_get_nothing_even_on_a_terminal() -> None:
    out = Terminal()
    progress = Progress("planning", out)
    progress.update(1, 5)
    progress.close()
    assert out.getvalue() == ""
