"""Label selectors, as ``kubectl -l`` spells them: which objects a command is about.

``-l tier=web,env!=prod -l backup`` is one selector of three requirements, all of which an
object's labels must meet: ``key=value`` (also ``key==value``) the label is there with that
value, ``key!=value`` it is absent or has another value, ``key`` it is there with any
value, ``!key`` it is absent. Requirements may be given in one argument separated by
commas, in several arguments, or both. An empty selector matches everything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Operator = Literal["=", "!=", "exists", "!exists"]

# Label keys as Kubernetes allows them: an optional DNS prefix and a slash, then a name.
_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "!exists":
            return self.key not in labels
        equal = labels.get(self.key) == self.value
        return equal if self.operator == "=" else not equal

    def __str__(self) -> str:
        if self.operator == "exists":
            return self.key
        if self.operator == "!exists":
            return f"!{self.key}"
        return f"{self.key}{self.operator}{self.value}"


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def parse(texts: Iterable[str]) -> Selector:
    """The selector of ``-l`` arguments; ``ValueError`` names the requirement at fault."""
    requirements = []
    for text in texts:
        for part in text.split(","):
            requirements.append(_requirement(part.strip(), text))
    return Selector(tuple(requirements))


def _requirement(part: str, text: str) -> Requirement:
    if not part:
        raise ValueError(f"selector {text!r}: an empty requirement")
    key, operator, value = part, "", ""
    for op in ("!=", "==", "="):
        if op in part:
            key, _, value = part.partition(op)
            operator = "=" if op == "==" else op
            break
    key = key.strip()
    value = value.strip()
    if not operator:
        absent = key.startswith("!")
        key = key.removeprefix("!").strip()
        _check_key(key, text)
        return Requirement(key, "!exists" if absent else "exists")
    _check_key(key, text)
    if not _VALUE.match(value) or len(value) > 63:
        raise ValueError(
            f"selector {text!r}: {value!r} is not a label value (letters, digits, '-', '_', "
            "'.', at most 63, starting and ending with a letter or digit)"
        )
    return Requirement(key, "=" if operator == "=" else "!=", value)


def _check_key(key: str, text: str) -> None:
    name = key.rpartition("/")[2]
    if not _KEY.match(key) or len(name) > 63:
        raise ValueError(
            f"selector {text!r}: {key!r} is not a label key (letters, digits, '-', '_', '.', "
            "at most 63, with an optional DNS prefix and '/')"
        )


def label(text: str) -> tuple[str, str]:
    """One ``KEY=VALUE`` label as a command line gives it (``run --label``); ValueError
    says what is wrong with it, in the words of a selector's."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r} is not KEY=VALUE")
    requirement = _requirement(f"{key.strip()}={value.strip()}", text)
    return requirement.key, requirement.value
