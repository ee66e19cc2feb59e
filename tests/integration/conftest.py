"""Fixtures of the real stack for this folder (shared with tests/faults via realstack), of
the etcd it runs and of the test guest."""

from etcd_fixtures import *  # noqa: F403
from guest_os import *  # noqa: F403
from realstack import *  # noqa: F403 (the fixtures are found by name)
