"""Shared test set-up. Tests run on CPU with a fixed seed per test; nothing here touches the network."""

import os

import pytest
import torch

import diffusion_edu  # noqa: F401  (applies the torchvision import fix first)

os.environ.setdefault("DIFFUSION_EDU_TIER", "smoke")

# Under pytest-xdist each worker gets its share of the cores, and so do the processes a test starts
# (OpenMP threads of two workers on two cores spin against each other).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    _share = max(1, (os.cpu_count() or 1) // _workers)
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
