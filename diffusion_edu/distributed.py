"""Data-parallel training on several processes: PyTorch's DistributedDataParallel under ``torchrun``.

The one training loop (:mod:`diffusion_edu.training`) runs unchanged on N processes (one per GPU, or N
CPU processes)::

    torchrun --nproc_per_node 4 -m diffusion_edu train --preset c_cifar10

The conventions, which make a run on N processes the same run as on one:

- ``TrainConfig.batch_size`` is the *global* batch, summed over the processes; each process takes
  ``batch_size / N`` images of it. A global batch that N does not divide is an error
  (:class:`DistributedLaunchError`), raised before any process waits for another.
- Every process draws the same global batch: the epoch permutation from (seed, epoch)
  (:class:`~diffusion_edu.seeding.EpochOrder`), then the flips, label drops, ``t`` and ``eps`` of the
  whole global batch from the run's noise generator (seeded identically everywhere), and then keeps its
  slice ``rank * b : (rank + 1) * b`` with ``b = batch_size / N``. The union of the slices is the batch
  a single process would train on, with the same ``t`` and ``eps``, and the noise generator's state is
  the same on every process and for every N.
- DDP averages the gradients over the processes, so the update is the single-process update of the
  global batch (up to floating-point rounding); the weights, the optimizer state and the EMA (which
  follows the averaged weights) are the same on every process. Process 0 alone writes the checkpoint,
  ``log.jsonl``, ``config.json``, the sample grids and the progress bar, and runs the callbacks.
- Dropout masks are drawn inside the network, on each process's slice, from that process's own global
  RNG stream (process 0's is the single-process stream): the one thing that depends on N.

Resuming (with any N): weights, optimizer state, step, data order and the noise generator continue
exactly; each process takes its slice of the global batch for the new N. Dropout streams: with the
same N every process continues its own (an exact resume); with another N, process 0 continues the
checkpoint's process-0 stream and each other process r starts a fresh stream seeded from
(seed, "dropout", r, step).

Backends: NCCL when the processes train on CUDA, gloo on the CPU, chosen automatically. Without
``torchrun`` (no ``RANK`` / ``WORLD_SIZE`` in the environment) and without a process group set up by
the caller, nothing here runs: a plain single-process run has no process group at all.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .devices import resolve_device
from .seeding import derived_seed

__all__ = [
    "DistributedContext",
    "DistributedLaunchError",
    "check_global_batch",
    "current",
    "dropout_seed",
    "env_rank",
    "launch",
]

# A rank-0 callback (an FID curve) or sample grid may keep the other processes waiting at the next
# all-reduce: allow it an hour rather than the default 10-30 minutes.
TIMEOUT = datetime.timedelta(hours=1)


class DistributedLaunchError(ValueError):
    """A multi-process launch that cannot work (global batch not divisible, a GPU per process missing)."""


def check_global_batch(batch_size: int, world_size: int) -> int:
    """The per-process batch ``batch_size / world_size``; an error naming both when it is not an integer."""
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size
        raise DistributedLaunchError(
            f"TrainConfig.batch_size={batch_size} is the global batch (summed over all processes) and must be "
            f"divisible by the number of processes ({world_size}); use batch_size={lower or world_size} or "
            f"{lower + world_size} (--set batch_size=...), or a process count that divides {batch_size}"
        )
    return batch_size // world_size


def dropout_seed(seed: int, rank: int = 0, step: int = 0) -> int:
    """The seed of process ``rank``'s global RNG stream (dropout masks) started at ``step``: process 0
    at step 0 has the single-process seed, so that one process is exactly a plain run."""
    if rank == 0 and step == 0:
        return derived_seed(seed, "dropout")
    return derived_seed(seed, "dropout", rank, step)


def env_rank() -> int:
    """This process's rank as ``torchrun`` sets it (``$RANK``), 0 for a plain process."""
    return int(os.environ.get("RANK", "0"))


def _env_world() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) from torchrun's environment, or None for a plain process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as e:
        raise DistributedLaunchError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({e})") from None
    if not 0 <= rank < world:
        raise DistributedLaunchError(f"RANK={rank} must be in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    return rank, world, local


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the process group and the few collectives the training loop uses.

    rank: 0..world_size-1 (process 0 writes every file); local_rank: the GPU index on this machine.
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch_size: int) -> slice:
        """This process's slice of a global batch of ``batch_size`` images."""
        b = check_global_batch(batch_size, self.world_size)
        return slice(self.rank * b, (self.rank + 1) * b)

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The network in DistributedDataParallel (which broadcasts process 0's weights and buffers)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = (
            [device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda"
            else None
        )
        return DistributedDataParallel(model, device_ids=ids)

    def barrier(self) -> None:
        if self.backend == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over the processes (a new tensor; ``value`` is left as it is)."""
        total = value.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total / self.world_size

    def first_bad_step(self, bad_step: torch.Tensor, bad_loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first step at which any process saw a non-finite loss (-1 if none) and that loss."""
        never = torch.iinfo(torch.int64).max
        first = torch.where(bad_step < 0, never, bad_step)
        dist.all_reduce(first, op=dist.ReduceOp.MIN)
        first = torch.where(first == never, -1, first)
        loss = torch.where((bad_step == first) & (first >= 0), bad_loss, torch.zeros_like(bad_loss))
        dist.all_reduce(loss, op=dist.ReduceOp.SUM)
        return first, loss

    def agree(self, value: int, what: str) -> None:
        """Check that every process has the same ``value`` (e.g. the step of the checkpoint it read)."""
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        if len(set(values)) > 1:
            raise DistributedLaunchError(
                f"the processes disagree on {what}: {values} (do all of them see the "
                "same out_dir? it must be on a file system every process can read)"
            )

    def broadcast_int(self, value: int) -> int:
        """Process 0's ``value`` on every process (e.g. the number of steps a wall-clock budget fixed)."""
        box = [int(value)]
        dist.broadcast_object_list(box, src=0)
        return int(box[0])

    def gather_rng(self, device: torch.device) -> list[dict[str, torch.Tensor]]:
        """Every process's global RNG state (CPU and its accelerator): index r is process r's."""
        mine: dict[str, torch.Tensor] = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            mine["cuda"] = torch.cuda.get_rng_state(device)
        states: list[Any] = [None] * self.world_size
        dist.all_gather_object(states, mine)
        return states

    def restore_rng(self, state: dict[str, Any], device: torch.device, seed: int) -> None:
        """Put back this process's global RNG stream from a checkpoint, following the resume rule of the
        module docstring (process 0's stream is restored with the rest of the RNG state beforehand)."""
        saved = state.get("rng_per_process")
        if saved is not None and len(saved) == self.world_size:
            torch.set_rng_state(saved[self.rank]["torch"])
            if device.type == "cuda" and "cuda" in saved[self.rank]:
                torch.cuda.set_rng_state(saved[self.rank]["cuda"], device)
        elif self.rank > 0:
            torch.manual_seed(dropout_seed(seed, self.rank, int(state["step"])))


def current() -> DistributedContext | None:
    """The context of the initialised process group, or None when there is none (a plain run)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    env = _env_world()
    rank, world = dist.get_rank(), dist.get_world_size()
    if env is not None and env[:2] == (rank, world):
        local = env[2]
    else:
        local = rank % max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 0
    return DistributedContext(rank, world, local, str(dist.get_backend()))


def _device_for(spec: str, local_rank: int, world_size: int) -> torch.device:
    """The device of the process with ``local_rank``: its own GPU (cuda:local_rank), else the CPU."""
    kind = (spec or "auto").split(":")[0]
    if kind == "mps":
        raise DistributedLaunchError(
            "TrainConfig.device='mps': Apple's MPS has no multi-process backend; "
            "use device='cpu' (gloo) for several processes on a Mac"
        )
    if kind == "cuda" and ":" in spec:
        if world_size > 1:
            raise DistributedLaunchError(
                f"TrainConfig.device={spec!r} names one GPU, but under torchrun each of "
                f"the {world_size} processes uses its own (cuda:LOCAL_RANK): use "
                "device='auto' or 'cuda'"
            )
        return resolve_device(spec)
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    resolve_device("cuda")  # a clear error when device='cuda' but there is no CUDA
    if local_rank >= torch.cuda.device_count():
        raise DistributedLaunchError(
            f"process LOCAL_RANK={local_rank} has no GPU of its own (this machine shows "
            f"{torch.cuda.device_count()}): start at most that many processes per "
            "machine (torchrun --nproc_per_node), or use device='cpu'"
        )
    return torch.device("cuda", local_rank)


@contextlib.contextmanager
def launch(device: str, batch_size: int) -> Iterator[tuple[DistributedContext | None, torch.device]]:
    """Join the process group for one training run; yields (context or None, this process's device).

    Under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set) with no process group yet, it checks the global
    batch first, then initialises the group (NCCL for CUDA, gloo for the CPU) and destroys it on exit. A
    group the caller initialised is used as it is and left alone. Otherwise: (None, the usual device).
    """
    ctx = current()
    if ctx is not None:
        check_global_batch(batch_size, ctx.world_size)
        dev = _device_for(device, ctx.local_rank, ctx.world_size)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        yield ctx, dev
        return
    env = _env_world()
    if env is None:
        yield None, resolve_device(device)
        return
    rank, world, local = env
    check_global_batch(batch_size, world)
    dev = _device_for(device, local, world)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(
        backend, rank=rank, world_size=world, timeout=TIMEOUT, device_id=dev if dev.type == "cuda" else None
    )
    try:
        yield DistributedContext(rank, world, local, backend), dev
    finally:
        dist.destroy_process_group()
