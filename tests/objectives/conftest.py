"""Shared setup for the objectives tests."""

import sys
from pathlib import Path


# The loop references live beside the tests; make them importable however pytest is
# configured to import test modules (rootdir-relative packages or not).
sys.path.insert(0, str(Path(__file__).resolve().parent))
