"""Shared test set-up. Tests run on CPU with a fixed seed per test; nothing here touches the network."""

import os

import pytest
import torch

import diffusion_edu  # noqa: F401  (applies the torchvision import fix first)

os.environ.setdefault("DIFFUSION_EDU_TIER", "smoke")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
