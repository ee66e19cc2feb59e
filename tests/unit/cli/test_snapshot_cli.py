"""``kvmrec snapshot simulate``: a policy's schedule and retention over a span of time, read
from a manifest directory, touching nothing.

The expected snapshot times are written out independently of the schedule module; what is
kept is checked against ``retention.select`` on those same times.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from kvmrec.cli.main import main
from kvmrec.snapshots.retention import Retention, select

IST = timezone(timedelta(hours=5, minutes=30))
LINE = re.compile(r"^(keep|prune) +(\S+)  \((.*)\)$")


def _policy(directory: Path, name: str, body: str, file: str = "policies.yaml") -> Path:
    path = directory / file
    previous = path.read_text() + "---\n" if path.exists() else ""
    path.write_text(
        previous
        + f"apiVersion: kvmrec.io/v1alpha1\nkind: SnapshotPolicy\nmetadata:\n  name: {name}\n"
        + "spec:\n  domains: [web]\n"
        + body
    )
    return directory


def _simulate(
    capsys: pytest.CaptureFixture[str], manifests: Path, policy: str, start: str, end: str
) -> tuple[int, str, str]:
    code = main(
        [
            "snapshot",
            "simulate",
            policy,
            "--from",
            start,
            "--to",
            end,
            "--manifests",
            str(manifests),
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def _parse(out: str) -> tuple[str, list[datetime], list[datetime]]:
    header, *lines = out.splitlines()
    kept: list[datetime] = []
    pruned: list[datetime] = []
    for line in lines:
        match = LINE.match(line)
        assert match, line
        (kept if match[1] == "keep" else pruned).append(datetime.fromisoformat(match[2]))
    return header, kept, pruned


@pytest.fixture
def host_in_india() -> Iterator[None]:
    """The host's local zone is UTC+05:30 for the test (a POSIX TZ: no tzdata needed)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "IST-5:30"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_every_day_keep_last_3_over_10_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _policy(tmp_path, "daily3", '  every: "1d"\n  retention:\n    keepLast: 3\n')
    code, out, err = _simulate(
        capsys, tmp_path, "daily3", "2024-01-01T00:00:00+00:00", "2024-01-10T00:00:00+00:00"
    )
    assert (code, err) == (0, "")
    header, kept, pruned = _parse(out)
    assert header == (
        "policy daily3: 10 snapshots from 2024-01-01T00:00:00+00:00 to "
        "2024-01-10T00:00:00+00:00; 3 kept, 7 pruned"
    )
    days = [datetime(2024, 1, d, tzinfo=UTC) for d in range(1, 11)]
    assert kept == days[::-1][:3]  # the three newest, newest first
    assert sorted(pruned) == days[:7]
    assert out.splitlines()[1:4] == [f"keep   {t.isoformat()}  (last)" for t in kept]
    # Each pruned snapshot goes when the fourth newer one is taken.
    assert f"prune  {days[0].isoformat()}  (at {days[3].isoformat()})" in out


def test_cron_with_daily_and_weekly_over_60_days_matches_select(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _policy(
        tmp_path,
        "nightly",
        '  schedule: "0 3 * * *"\n  retention:\n    daily: 7\n    weekly: 4\n',
    )
    start = datetime(2024, 1, 1, tzinfo=UTC)
    code, out, err = _simulate(
        capsys, tmp_path, "nightly", start.isoformat(), (start + timedelta(days=60)).isoformat()
    )
    assert (code, err) == (0, "")
    header, kept, pruned = _parse(out)

    # Put in place at --from (midnight), the policy takes its first snapshot at 03:00.
    times = [start + timedelta(days=d, hours=3) for d in range(60)]
    decision = select(times, lambda t: t, Retention(daily=7, weekly=4))
    assert header.endswith(
        f"{len(times)} snapshots from {start.isoformat()} to "
        f"{(start + timedelta(days=60)).isoformat()}; "
        f"{len(decision.keep)} kept, {len(decision.prune)} pruned"
    )
    assert kept == list(decision.keep)
    assert sorted(pruned, reverse=True) == list(decision.prune)
    assert (len(kept), len(pruned)) == (11, 49)
    reasons = [LINE.match(line)[3] for line in out.splitlines()[1:12]]  # type: ignore[index]
    assert reasons == [decision.reasons[t] for t in kept] == ["daily"] * 7 + ["weekly"] * 4


def test_cron_is_simulated_in_the_hosts_local_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host_in_india: None
) -> None:
    """The controller reads cron schedules (and cuts retention periods) in the host's local
    time; an offset on --from says which instant, not which zone."""
    _policy(tmp_path, "nightly", '  schedule: "0 3 * * *"\n  retention:\n    daily: 2\n')
    code, out, _ = _simulate(
        capsys, tmp_path, "nightly", "2024-01-01T00:00:00+00:00", "2024-01-04T00:00:00+00:00"
    )
    assert code == 0
    _, kept, _ = _parse(out)
    assert kept == [datetime(2024, 1, 4, 3, tzinfo=IST), datetime(2024, 1, 3, 3, tzinfo=IST)]


def test_naive_times_are_the_hosts_local_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host_in_india: None
) -> None:
    _policy(tmp_path, "daily3", '  every: "1d"\n  retention:\n    keepLast: 1\n')
    code, out, _ = _simulate(capsys, tmp_path, "daily3", "2024-01-01T00:00", "2024-01-02T00:00")
    assert code == 0
    _, kept, pruned = _parse(out)
    assert kept == [datetime(2024, 1, 2, tzinfo=IST)]
    assert pruned == [datetime(2024, 1, 1, tzinfo=IST)]


def test_the_policy_is_found_among_other_documents_and_broken_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _policy(tmp_path, "other", '  every: "1h"\n  retention:\n    keepLast: 1\n')
    _policy(tmp_path, "wanted", '  every: "12h"\n  retention:\n    keepLast: 5\n')
    (tmp_path / "broken.yaml").write_text("kind: [unclosed\n")
    code, out, _ = _simulate(
        capsys, tmp_path, "wanted", "2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00+00:00"
    )
    assert code == 0
    assert out.startswith("policy wanted: 3 snapshots ")
    assert "3 kept, 0 pruned" in out


def test_an_unknown_policy_fails_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _policy(tmp_path, "daily3", '  every: "1d"\n  retention:\n    keepLast: 3\n')
    code, out, err = _simulate(
        capsys, tmp_path, "nope", "2024-01-01T00:00:00+00:00", "2024-01-10T00:00:00+00:00"
    )
    assert (code, out) == (1, "")
    assert err == f"kvmrec snapshot simulate: no valid SnapshotPolicy nope in {tmp_path}\n"


def test_an_invalid_policy_counts_as_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _policy(tmp_path, "bad", '  every: "1d"\n  retention:\n    keepLast: -1\n')
    code, out, err = _simulate(
        capsys, tmp_path, "bad", "2024-01-01T00:00:00+00:00", "2024-01-10T00:00:00+00:00"
    )
    assert (code, out) == (1, "")
    assert "no valid SnapshotPolicy bad" in err


@pytest.mark.parametrize("bad", ["from", "to"])
def test_a_bad_time_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str) -> None:
    _policy(tmp_path, "daily3", '  every: "1d"\n  retention:\n    keepLast: 3\n')
    times = {"from": "2024-01-01T00:00:00+00:00", "to": "2024-01-10T00:00:00+00:00"}
    times[bad] = "yesterday"
    code, out, err = _simulate(capsys, tmp_path, "daily3", times["from"], times["to"])
    assert (code, out) == (1, "")
    assert err.startswith("kvmrec snapshot simulate: ")
    assert "'yesterday'" in err


def test_a_missing_time_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["snapshot", "simulate", "daily3", "--to", "2024-01-10", "--manifests", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--from" in capsys.readouterr().err
