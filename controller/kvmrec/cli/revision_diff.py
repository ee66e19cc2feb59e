"""``kvmrec history KIND/NAME --diff [REV_A [REV_B]]``: what changed in the spec between two
accepted revisions, as a unified diff of their YAML.

Revisions are named by generation (the GEN column of ``kvmrec history``); without any, the
last two are compared, and with one, that one against the newest. The specs are the stored
ones, schema defaults filled in, keys sorted, so only a change of the spec shows up.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from datetime import UTC

from kvmrec.store.records import Revision


def pick(revisions: Sequence[Revision], wanted: Sequence[str]) -> tuple[Revision, Revision]:
    """The two revisions ``wanted`` names (generations); a ValueError says what exists."""
    by_generation = {r.generation: r for r in revisions}
    known = ", ".join(str(g) for g in by_generation) or "none"
    if len(wanted) > 2:
        raise ValueError(f"--diff takes at most two revisions, got {len(wanted)}")
    generations: list[int] = []
    for text in wanted:
        try:
            generation = int(text)
        except ValueError:
            raise ValueError(f"--diff: {text!r} is not a revision (generations: {known})") from None
        if generation not in by_generation:
            raise ValueError(f"--diff: no revision {generation} (generations: {known})")
        generations.append(generation)
    newest = sorted(by_generation)
    if not generations:
        if len(newest) < 2:
            raise ValueError(f"only one revision to compare (generations: {known})")
        generations = newest[-2:]
    elif len(generations) == 1:
        generations.append(newest[-1])
    return by_generation[generations[0]], by_generation[generations[1]]


def _label(revision: Revision) -> str:
    commit = revision.commit or ""
    # Older versions recorded HEAD+dirty for a directory with changes: no file's commit.
    commit = f", commit {commit[:12]}" if commit and not commit.endswith("+dirty") else ""
    when = revision.time.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return f"{revision.key} generation {revision.generation} ({revision.source}{commit}, {when})"


def render(old: Revision, new: Revision) -> str:
    """The unified diff of the two specs, in YAML; empty when they are the same."""

    def lines(revision: Revision) -> list[str]:
        import yaml  # `kvmrec events` shares the module and prints no YAML

        text = yaml.safe_dump({"spec": dict(revision.spec)}, sort_keys=True)
        return text.splitlines()

    diff = difflib.unified_diff(lines(old), lines(new), _label(old), _label(new), lineterm="", n=3)
    return "\n".join(diff)
