"""Label selectors: the kubectl -l syntax, and which labels each requirement matches."""

from __future__ import annotations

import pytest

from kvmrec.api import selectors
from kvmrec.api.selectors import Requirement

WEB = {"tier": "web", "env": "prod"}
DB = {"tier": "db", "backup": "daily"}
NONE: dict[str, str] = {}


@pytest.mark.parametrize(
    ("texts", "matching"),
    [
        pytest.param([], ["web", "db", "none"], id="empty-matches-everything"),
        pytest.param(["tier=web"], ["web"], id="equals"),
        pytest.param(["tier==web"], ["web"], id="double-equals"),
        pytest.param(["tier!=web"], ["db", "none"], id="not-equals-includes-absent"),
        pytest.param(["backup"], ["db"], id="exists"),
        pytest.param(["!backup"], ["web", "none"], id="absent"),
        pytest.param(["tier=web,env=prod"], ["web"], id="comma-is-and"),
        pytest.param(["tier=web", "env=test"], [], id="repeated-is-and"),
        pytest.param(["tier, !env"], ["db"], id="spaces-around-commas"),
        pytest.param(["env="], [], id="empty-value-is-a-value"),
    ],
)
def test_which_labels_a_selector_matches(texts: list[str], matching: list[str]) -> None:
    selector = selectors.parse(texts)
    labels = {"web": WEB, "db": DB, "none": NONE}
    assert [name for name, lab in labels.items() if selector.matches(lab)] == matching


def test_parsed_requirements_and_their_text() -> None:
    selector = selectors.parse(["a=1,b!=2", "kvmrec.io/role", "!c"])
    assert selector.requirements == (
        Requirement("a", "=", "1"),
        Requirement("b", "!=", "2"),
        Requirement("kvmrec.io/role", "exists"),
        Requirement("c", "!exists"),
    )
    assert str(selector) == "a=1,b!=2,kvmrec.io/role,!c"
    assert selector
    assert not selectors.parse([])


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param("tier=web,", "an empty requirement", id="trailing-comma"),
        pytest.param("=web", "'' is not a label key", id="no-key"),
        pytest.param("ti er=web", "'ti er' is not a label key", id="space-in-key"),
        pytest.param("tier=we b", "'we b' is not a label value", id="space-in-value"),
        pytest.param("tier=-web", "'-web' is not a label value", id="value-starts-badly"),
        pytest.param("x" * 64, "is not a label key", id="key-too-long"),
        pytest.param("tier in (a,b)", "not a label key", id="set-syntax-unsupported"),
    ],
)
def test_a_bad_selector_names_what_is_wrong(text: str, named: str) -> None:
    with pytest.raises(ValueError, match="selector") as caught:
        selectors.parse([text])
    assert named in str(caught.value)
