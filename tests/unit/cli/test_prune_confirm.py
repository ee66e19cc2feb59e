"""kvmrec prune's question: --yes, a terminal's answer, and no terminal at all."""

from __future__ import annotations

import io

import pytest

from kvmrec.cli.prune import confirm


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def ask(stdin: io.StringIO, *, yes: bool = False) -> tuple[bool, str]:
    stderr = io.StringIO()
    answer = confirm("Delete these 3 objects?", yes=yes, stdin=stdin, stderr=stderr)
    return answer, stderr.getvalue()


@pytest.mark.parametrize("typed", ["y\n", "yes\n", " Y \n", "YES"])
def test_yes_on_a_terminal_approves(typed: str) -> None:
    answer, said = ask(Terminal(typed))
    assert answer is True
    assert said == "Delete these 3 objects? [y/N] "


@pytest.mark.parametrize("typed", ["\n", "n\n", "no\n", "yess\n", ""])
def test_anything_else_on_a_terminal_refuses(typed: str) -> None:
    answer, said = ask(Terminal(typed))
    assert answer is False
    assert said.endswith("not approved\n")


def test_without_a_terminal_it_refuses_even_a_yes_on_stdin() -> None:
    answer, said = ask(io.StringIO("yes\n"))
    assert answer is False
    assert "no terminal to ask on; give --yes" in said


def test_yes_flag_approves_without_asking() -> None:
    stdin = io.StringIO("n\n")
    answer, said = ask(stdin, yes=True)
    assert (answer, said, stdin.tell()) == (True, "", 0)
