"""The fault suite runs on the real stack with the integration tests' fixtures."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from realstack import *  # noqa: F403 (the fixtures are found by name)
