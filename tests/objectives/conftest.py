"""Shared setup for the objectives tests."""

import sys
from pathlib import Path

import pytest
import torch

# The loop references live beside the tests; make them importable however pytest is
# configured to import test modules (rootdir-relative packages or not).
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is fastest and leaves the shared cores to others."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
