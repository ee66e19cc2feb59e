"""Errors a manifest can have, each naming where it is and why it is wrong.

    KvmrecError
    └── ManifestError          one problem in one file: file, document, field, reason
        └── (raised, or collected into a list by the parser)

An operator reads these in ``kvmrec validate`` and in the ``errors`` list of ``kvmrec status``,
so every message starts with the file and, where known, the line, document and field.
"""

from __future__ import annotations

from dataclasses import dataclass


class KvmrecError(Exception):
    """Base of the project's own exceptions."""


@dataclass(frozen=True)
class ManifestProblem:
    """One problem found in a manifest file."""

    source: str
    reason: str
    document: int | None = None  # 1-based index of the YAML document in the file
    field: str | None = None  # dotted path, e.g. "spec.disks[0].path"
    line: int | None = None  # 1-based line number
    object: str | None = None  # "Domain/web-1" when known

    def __str__(self) -> str:
        where = [self.source]
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.document is not None:
            where.append(f"document {self.document}")
        if self.object:
            where.append(self.object)
        head = ": ".join(where)
        if self.field:
            return f"{head}: {self.field}: {self.reason}"
        return f"{head}: {self.reason}"

    def message(self) -> str:
        """The message without the file name (the file is reported beside it)."""
        text = str(self)
        return text[len(self.source) + 2 :] if text.startswith(self.source + ": ") else text


class ManifestError(KvmrecError):
    """A manifest file could not be accepted; ``problems`` says every reason found."""

    def __init__(self, problems: list[ManifestProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems
