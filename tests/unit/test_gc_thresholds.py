"""The service's collector thresholds: raised for the young generation, never lowered."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from kvmrec import gc_thresholds


@pytest.fixture(autouse=True)
def _restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_the_young_generation_is_collected_less_often_and_the_others_as_before() -> None:
    gc.set_threshold(700, 10, 10)
    gc_thresholds.raise_thresholds()
    assert gc.get_threshold() == (gc_thresholds.YOUNG, 10, 10)


def test_a_higher_threshold_set_elsewhere_stays() -> None:
    gc.set_threshold(50_000, 5, 7)
    gc_thresholds.raise_thresholds()
    assert gc.get_threshold() == (50_000, 5, 7)
