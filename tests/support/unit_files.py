"""Reading systemd unit files in tests: sections of KEY=VALUE lines, as systemd reads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def parse(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's unit syntax: sections of KEY=VALUE lines, keys may repeat (configparser
    would refuse or collapse that), comments start with # or ;."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"line {number}: not KEY=VALUE in a section: {raw}"
        assert not line.endswith("\\"), f"line {number}: keep settings on one line"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def words(values: list[str]) -> set[str]:
    return {word for value in values for word in value.split()}


def verify(unit: Path, tmp_path: Path) -> list[str]:
    """What ``systemd-analyze verify`` says of ``unit``: an empty list when it is clean.
    verify insists that ExecStart= exists: the unit's kvmrec is this venv's."""
    kvmrec = Path(sys.executable).parent / "kvmrec"
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/usr/local/bin/kvmrec", str(kvmrec)))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Warnings (an unknown key, a bad value) are printed without failing: none is allowed.
    complaints = [line for line in done.stderr.splitlines() if unit.name in line]
    return complaints if done.returncode == 0 else [done.stderr, *complaints]
