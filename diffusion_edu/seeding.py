"""Seeds, random-number state and the data order: what makes a run reproducible and resumable.

One seed names every random stream of a run through :func:`derived_seed` (network init, noise, data
order, sample grids); :func:`capture_rng_state` / :func:`restore_rng_state` carry the generators
through a checkpoint, and :class:`EpochOrder` fixes which images form each batch.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from .checkpoint import CheckpointError

__all__ = ["EpochOrder", "capture_rng_state", "derived_seed", "forked_rng", "restore_rng_state"]


def derived_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and ``keys`` (numpy's SeedSequence), so that the streams
    of one run (network init, noise, data order, sample grids) are independent of each other."""
    words = [seed] + [k if isinstance(k, int) else int.from_bytes(k.encode(), "little") for k in keys]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def capture_rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The global CPU RNG (dropout on CPU), the accelerator's RNG and the run's noise generator."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    """Put back what :func:`capture_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    elif device.type == "mps" and "mps" in state:
        torch.mps.set_rng_state(state["mps"])


@contextlib.contextmanager
def forked_rng(device: torch.device):
    """Run a block without changing the caller's random state (CPU and the run's accelerator)."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda" if cuda else "cpu"):
        if device.type == "mps":
            mps_state = torch.mps.get_rng_state()
            try:
                yield
            finally:
                torch.mps.set_rng_state(mps_state)
        else:
            yield


class EpochOrder:
    """Which images form each batch: epoch e visits a permutation drawn from (seed, e) alone, in
    consecutive slices of ``batch_size``; the last incomplete slice is skipped, so every batch has
    ``batch_size`` images. The state is (epoch, position): resuming from it gives the same batches."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device | str = "cpu"):
        if batch_size > n:
            raise ValueError(
                f"batch_size={batch_size} is larger than the dataset ({n} images): lower "
                "batch_size, or train on more images (subset)"
            )
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, torch.device(device)
        self.epoch, self.position = 0, 0
        self._perm: torch.Tensor | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of epoch ``epoch``: a permutation of 0..n-1 (int64, shape (n,))."""
        g = torch.Generator().manual_seed(derived_seed(self.seed, "data", epoch))
        return torch.randperm(self.n, generator=g)

    def next(self) -> torch.Tensor:
        """The indices (batch_size,) of the next batch."""
        if self.position == self.batches_per_epoch:
            self.epoch, self.position, self._perm = self.epoch + 1, 0, None
        if self._perm is None:
            self._perm = self.permutation(self.epoch).to(self.device)
        start = self.position * self.batch_size
        self.position += 1
        return self._perm[start : start + self.batch_size]

    def state_dict(self) -> dict[str, int]:
        return {
            "n": self.n,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        mine = {"n": self.n, "batch_size": self.batch_size, "seed": self.seed}
        theirs = {k: state.get(k) for k in mine}
        if mine != theirs:
            raise CheckpointError(
                f"the checkpoint's data order was made for {theirs}, but this run has "
                f"{mine}: resume with the same dataset, batch size and seed"
            )
        self.epoch, self.position, self._perm = int(state["epoch"]), int(state["position"]), None
