"""The fleet tests run in the lab of scripts/lab.sh (`make lab-up`), beside the real stack."""

from support.lab import *  # noqa: F403 (the fixtures are found by name)
