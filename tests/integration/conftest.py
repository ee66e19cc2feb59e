"""Fixtures of the real stack for this folder (shared with tests/faults via realstack)."""

from realstack import *  # noqa: F403 (the fixtures are found by name)
