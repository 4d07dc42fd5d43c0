"""What the two CIFAR-10 chapters (Reports B and C) share: data per tier, counted FLOPs and the time
estimates made from them, a training run with sample grids at chosen steps, sampling, Inception IS /
FID on colour images, and nearest training neighbours of colour images.

The evaluation kit (:mod:`diffusion_edu.metrics`, :mod:`diffusion_edu.memorisation`) takes grey and colour
images alike (its classifier-feature metrics with a classifier trained on the data, its Inception FID / IS
for RGB); this module keeps what only the CIFAR-10 chapters need on top of it: Inception IS / FID of the
first n samples for several n against several reference sets in one pass (:func:`inception_metrics`, on
the kit's :func:`~diffusion_edu.metrics.to_uint8` and offline error), and nearest training neighbours of
50,000 colour images at their own size (:func:`pixel_nearest` reads the training set in chunks;
:func:`lpips_nearest` uses the kit's LPIPS loader, which raises
:class:`~diffusion_edu.metrics.WeightsNotAvailableError` offline).

Time estimates. A network's FLOPs per image are counted with ``torch.utils.flop_counter.FlopCounterMode``
on the actual network, built on the meta device (no memory, no compute; 2 FLOPs per multiply-add of
every convolution and matrix product, backward included). A device's sustained rate is its datasheet
peak times a utilisation, and the utilisations come from two published runs of Ho et al.'s CIFAR-10
U-Net, computed from counted FLOPs (:data:`MEASURED_RUNS`): every estimate is labelled as such until a
run on the device writes its results file.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from ..data import ImageDataset, load_cifar10, load_dataset, write_fake_cifar10
from ..metrics import inception_metrics, to_uint8  # noqa: F401  (re-exported for the CIFAR chapters)
from ..presets import TrainConfig
from ..samplers import Method
from .common import check_tier, ensure_trained, final_loss, result_path, runs_root, save_result, training_curve
from .evaluation import images_only

__all__ = [
    "SMOKE_PER_BATCH",
    "REFERENCE_SPLITS",
    "Accelerator",
    "ACCELERATORS",
    "MEASURED_RUNS",
    "check_cifar_tier",
    "cifar10",
    "count_flops",
    "network_flops",
    "measured_utilisation",
    "plan_estimate",
    "train_cifar_run",
    "snapshot_network",
    "sample_images",
    "to_uint8",
    "inception_metrics",
    "not_measured",
    "pixel_nearest",
    "lpips_nearest",
    "real_result",
]

SMOKE_PER_BATCH = 20  # fake images per CIFAR-10 batch file at the smoke tier: 100 training, 20 test
REFERENCE_SPLITS = {"train": "train", "test": "test"}  # FID reference sets: Ho et al. use the training set
NEEDS_INTERNET = "not measured: needs internet"


@dataclass(frozen=True)
class Accelerator:
    """A device's datasheet peak (FLOP/s) at the precision a run uses there, with where it is stated."""

    name: str
    peak_flops: float
    precision: str
    source: str


ACCELERATORS: dict[str, Accelerator] = {
    "t4": Accelerator(
        "NVIDIA T4 (free Colab)",
        8.1e12,
        "fp32",
        "NVIDIA T4 datasheet: 8.1 TFLOPS FP32 (no bf16 or TF32 units, so the colab tier trains in fp32)",
    ),
    "rtx2080ti": Accelerator(
        "NVIDIA RTX 2080 Ti",
        13.45e12,
        "fp32",
        "NVIDIA Turing whitepaper: 4,352 CUDA cores x 1,545 MHz boost x 2 = 13.45 TFLOPS FP32",
    ),
    "tpu_v3_8": Accelerator(
        "Google TPU v3-8",
        4 * 123e12,
        "bf16",
        "Cloud TPU v3 documentation: 123 TFLOPS bf16 per chip; a v3-8 has 4 chips",
    ),
    "h100": Accelerator("NVIDIA H100 SXM", 989e12, "bf16", "NVIDIA H100 datasheet: 989 TFLOPS BF16 dense"),
}

# Two published runs of Ho et al.'s CIFAR-10 U-Net (35.7M parameters): their speed times the counted
# FLOPs, over the device's peak, is the utilisation they reached.
MEASURED_RUNS: dict[str, dict[str, Any]] = {
    "ho2020_tpu": {
        "device": "tpu_v3_8",
        "kind": "train",
        "images_per_s": 21 * 128,
        "source": "Ho et al. (2020), App. B: 21 steps per second at batch size 128 on a TPU v3-8",
    },
    "pytorch_ddpm_2080ti": {
        "device": "rtx2080ti",
        "kind": "forward",
        "images_per_s": 50_000 * 1000 / (17 * 3600),
        "source": "w86763777/pytorch-ddpm issue #19: 50,000 samples with the 1,000-step "
        "sampler in about 17 hours on one RTX 2080 Ti (fp32), 'normal' per the author",
    },
}
CENTRAL = "pytorch_ddpm_2080ti"  # same GPU generation as the T4 (Turing), same precision (fp32)


def check_cifar_tier(tier: str | None) -> str:
    """The tier, checked: the CIFAR-10 chapters run at smoke (code check), colab or gpu, never at cpu."""
    tier = check_tier(tier)
    if tier == "cpu":
        raise ValueError(
            "tier 'cpu': the CIFAR-10 chapters do not train on a CPU (Ho et al.'s U-Net trains at about 4 images/s "
            "on 2 cores, results/benchmarks/models_cpu.json). Use --tier colab (a Colab or any CUDA GPU, about an "
            "hour) or --tier gpu (the reports' scale); --tier smoke checks the code on fake data."
        )
    return tier


def cifar10(split: str = "train", tier: str = "gpu") -> ImageDataset:
    """CIFAR-10 through torchvision (downloaded when online; offline and absent: DatasetNotAvailableError).

    At the smoke tier: fake batch files (noise) written to a temporary folder and read by the same
    torchvision loader with only its checksum skipped (:func:`~diffusion_edu.data.write_fake_cifar10`).
    """
    if tier == "smoke":
        import tempfile

        with tempfile.TemporaryDirectory() as root:
            write_fake_cifar10(root, per_batch=SMOKE_PER_BATCH)
            return load_cifar10(split == "train", root=root, download=False, check_integrity=False)
    return load_dataset("cifar10", split)


def real_result(chapter: str, part: str) -> dict[str, Any] | None:
    """The part's results record when a colab- or gpu-tier run has written it (what the chapter shows),
    else None (the chapter then says how to produce it)."""
    from ..results import read_results

    path = result_path(chapter, part, "gpu")
    if path.is_file():
        record = read_results(path)
        if record["tier"] in ("colab", "gpu"):
            return record
    return None


# ---- counting FLOPs and estimating time ----------------------------------------------------------


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of running ``fn()`` (a forward pass, and a backward pass if ``fn`` calls one), counted by
    ``FlopCounterMode``: 2 per multiply-add of every convolution, matrix product and attention product."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def network_flops(config: TrainConfig, image_shape: tuple[int, int, int] = (3, 32, 32)) -> dict[str, float]:
    """Parameters and FLOPs per image of the config's network: one forward pass, one training step
    (forward + backward of the loss; the optimizer's elementwise update is not counted), and one
    forward pass of Inception-v3 at 299 x 299 (what FID and IS run on every image)."""
    from torchvision.models import inception_v3

    from ..builders import build_network
    from ..models import count_parameters

    with torch.device("meta"):
        net = build_network(config).train()
        x = torch.zeros(1, *image_shape)
        t = torch.ones(1, dtype=torch.int64)
        y = torch.zeros(1, dtype=torch.int64) if getattr(net, "num_classes", None) else None
        inception = inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
        x299 = torch.zeros(1, 3, 299, 299)
    forward = count_flops(lambda: net(x, t, y))
    train = count_flops(lambda: net(x, t, y).float().square().mean().backward())
    return {
        "params": count_parameters(net),
        "forward_per_image": float(forward),
        "train_per_image": float(train),
        "inception_per_image": float(count_flops(lambda: inception(x299))),
    }


def measured_utilisation(flops: dict[str, float]) -> dict[str, dict[str, Any]]:
    """For each of :data:`MEASURED_RUNS`: the FLOP rate it reached (its images/s times the counted FLOPs
    per image) and that rate as a fraction of its device's peak."""
    out = {}
    for name, run in MEASURED_RUNS.items():
        per_image = flops["train_per_image" if run["kind"] == "train" else "forward_per_image"]
        dev = ACCELERATORS[run["device"]]
        achieved = run["images_per_s"] * per_image
        out[name] = {
            **run,
            "achieved_flops": achieved,
            "peak_flops": dev.peak_flops,
            "utilisation": achieved / dev.peak_flops,
            "device_source": dev.source,
        }
    return out


def plan_estimate(
    flops: dict[str, float], plan: dict[str, float], utilisation: dict[str, dict[str, Any]], device: str = "t4"
) -> dict[str, Any]:
    """Seconds a plan takes on ``device``: its FLOPs (training images x FLOPs per training image + network
    evaluations while sampling x forward FLOPs + Inception images x Inception FLOPs) over the device's
    peak times each measured utilisation. ``central`` uses :data:`CENTRAL`; it is an estimate."""
    if device not in ACCELERATORS:
        raise ValueError(f"device must be one of {sorted(ACCELERATORS)}, got {device!r}")
    parts = {
        "train": plan.get("train_images", 0) * flops["train_per_image"],
        "sampling": plan.get("sample_evals", 0) * flops["forward_per_image"],
        "inception": plan.get("inception_images", 0) * flops["inception_per_image"],
    }
    total = sum(parts.values())
    peak = ACCELERATORS[device].peak_flops
    seconds = {name: total / (peak * u["utilisation"]) for name, u in utilisation.items()}
    return {
        "device": device,
        "device_name": ACCELERATORS[device].name,
        "peak_flops": peak,
        "plan": dict(plan),
        "flops": parts,
        "flops_total": total,
        "seconds": seconds,
        "central": CENTRAL,
        "central_seconds": seconds[CENTRAL],
        "part_seconds": {k: v / (peak * utilisation[CENTRAL]["utilisation"]) for k, v in parts.items()},
    }


# ---- training with grids at chosen steps -----------------------------------------------------------


def single_process(part: str) -> None:
    """Refuse to run ``part`` under ``torchrun`` with several processes: only training is data-parallel;
    sampling and measuring run once, in one process, after it."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError(
            f"part {part!r} runs in one process: under torchrun run only the training part "
            "(--only training), then the rest with plain python -m diffusion_edu experiment ..."
        )


@contextlib.contextmanager
def _training_data(dataset: ImageDataset):
    """Hand ``dataset`` to the training loop instead of ``load_dataset`` (smoke tier: fake CIFAR files that
    need ``check_integrity=False``, which ``train`` cannot pass on)."""
    from .. import training

    original = training.load_dataset
    training.load_dataset = lambda *args, **kwargs: dataset
    try:
        yield
    finally:
        training.load_dataset = original


def _grid_callback(out: Path, config: TrainConfig, grid_steps: list[int], snapshot_steps: list[int], n: int):
    """A training callback: at ``grid_steps`` a grid of ``n`` samples from fixed noise (DDIM, the config's
    ``sample_steps``; labels 0..9 in turn for a conditional network), at ``snapshot_steps`` the weights
    (EMA when kept) saved as ``snapshots/step_NNNNNNN.pt``."""
    from ..results import atomic_write_bytes
    from ..samplers import sample
    from ..schedules import make_schedule
    from ..seeding import derived_seed
    from ..viz import save_image_grid

    grids, snaps = set(grid_steps), set(snapshot_steps)

    def callback(step: int, model: torch.nn.Module, ema: torch.nn.Module | None) -> None:
        net = ema if ema is not None else model
        dev = next(net.parameters()).device
        if step in grids:
            schedule = make_schedule(config.schedule, config.T, **config.schedule_kwargs)
            classes = getattr(net, "num_classes", None)
            y = torch.arange(n, device=dev) % classes if classes else None
            gen = torch.Generator(dev).manual_seed(derived_seed(config.seed, "grids"))
            images = sample(
                net, schedule, n, method="ddim", steps=min(config.sample_steps, config.T), y=y, generator=gen
            )
            save_image_grid(images_only(images), out / "grids" / f"step_{step:07d}.png", nrow=10 if classes else 8)
        if step in snaps:
            import io

            buf = io.BytesIO()
            torch.save({"step": step, "state_dict": net.state_dict()}, buf)
            atomic_write_bytes(out / "snapshots" / f"step_{step:07d}.pt", buf.getvalue())

    return callback


def train_cifar_run(
    chapter: str,
    run: str,
    config: TrainConfig,
    tier: str,
    grid_steps: list[int],
    snapshot_steps: list[int],
    progress: bool = True,
    grid_n: int = 64,
) -> Path:
    """Train (or resume) ``config`` into ``runs/<tier>/<chapter>/<run>`` with grids at ``grid_steps`` and
    weight snapshots at ``snapshot_steps``; write ``results/<chapter>/training.json`` (curve, throughput,
    the grids copied to ``results/<chapter>/training_grids/``).

    Under ``torchrun`` every process calls this and trains its slice of each global batch; process 0 alone
    clears a smoke run, draws grids, saves snapshots and writes the results file (the other processes still
    pass a callback, so that all of them stop at the same steps of the loop)."""
    from ..distributed import env_rank

    t0 = time.perf_counter()
    first = env_rank() == 0
    out = runs_root(tier) / chapter / run
    if tier == "smoke" and first:
        shutil.rmtree(out, ignore_errors=True)  # throwaway: always a fresh run
    callback = (
        _grid_callback(out, config, grid_steps, snapshot_steps, grid_n) if first else lambda step, model, ema: None
    )
    with _training_data(cifar10("train", tier)) if tier == "smoke" else contextlib.nullcontext():
        result = ensure_trained(chapter, run, config, tier, progress=progress and first, callbacks=callback)
    if not first:
        return result_path(chapter, "training", tier)
    curve = training_curve(out)
    dest = result_path(chapter, "training", tier).parent / "training_grids"
    grids = {}
    for png in sorted((out / "grids").glob("step_*.png")):
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, dest / png.name)
        grids[str(int(png.stem.split("_")[1]))] = f"training_grids/{png.name}"
    data = {
        "params": sum(p.numel() for p in result.model.parameters()),
        "steps": result.step,
        "batch_size": config.batch_size,
        "train_wall_time_s": round(result.wall_time_s, 1),
        "precision": result.precision,
        "img_per_s": result.step * config.batch_size / max(result.wall_time_s, 1e-9),
        "final_loss": final_loss(curve),
        "curve": curve,
        "grids": grids,
        "dataset": "fake CIFAR-10-format noise (smoke)" if tier == "smoke" else "CIFAR-10 training set (50,000)",
    }
    return save_result(
        chapter,
        "training",
        data,
        {"run": config.to_dict(), "grid_steps": grid_steps, "snapshot_steps": snapshot_steps},
        tier,
        time.perf_counter() - t0,
    )


def snapshot_network(run_dir: Path, step: int, config: TrainConfig, device: str | torch.device | None = None):
    """The network saved at ``step`` by :func:`train_cifar_run` (eval mode) and its schedule, on ``device``."""
    from ..builders import build_network
    from ..devices import resolve_device
    from ..schedules import make_schedule

    path = Path(run_dir) / "snapshots" / f"step_{step:07d}.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"no snapshot {path}: train first (python -m diffusion_edu experiment "
            f"{Path(run_dir).parent.name} --tier {Path(run_dir).parent.parent.name} --only training)"
        )
    dev = resolve_device(device or "auto")
    net = build_network(config)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    net.to(dev).eval()
    return net, make_schedule(config.schedule, config.T, **config.schedule_kwargs).to(dev)


# ---- sampling and measuring ---------------------------------------------------------------------------


def _autocast(device: torch.device):
    """Sampling's autocast: :func:`~diffusion_edu.precision.resolve_precision` ("auto") on ``device``,
    the same choice as training's (bf16 with native units, fp16 on other CUDA GPUs, fp32 on the CPU)."""
    from ..precision import autocast, resolve_precision

    return autocast(device, resolve_precision("auto", device))


def sample_images(
    model,
    schedule,
    n: int,
    *,
    method: str = "ddpm",
    steps: int | None = None,
    batch_size: int = 500,
    y: torch.Tensor | None = None,
    w: float = 0.0,
    seed: int = 0,
    progress: bool = False,
    x_T: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """n samples as uint8 (n, C, H, W) on the CPU, drawn in chunks of ``batch_size`` (autocast as
    :func:`_autocast` chooses), and the wall time in seconds."""
    from ..samplers import sample

    dev = next(model.parameters()).device
    gen = torch.Generator(dev).manual_seed(seed)
    out, t0 = [], time.perf_counter()
    with _autocast(dev):
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            yb = None if y is None else y[i : i + b].to(dev)
            xb = None if x_T is None else x_T[i : i + b].to(dev)
            images = sample(
                model,
                schedule,
                b,
                method=cast(Method, method),
                steps=steps,
                y=yb,
                w=w,
                generator=gen,
                x_T=xb,
                progress=progress,
            )
            out.append(to_uint8(images_only(images)).cpu())
    return torch.cat(out), time.perf_counter() - t0


def not_measured(error: BaseException) -> dict[str, Any]:
    """What a results file records instead of a number when pretrained weights cannot be loaded."""
    return {
        "status": NEEDS_INTERNET,
        "reason": f"{type(error).__name__}: {error}",
        "is": None,
        "is_std": None,
        **{f"fid_{name}": None for name in REFERENCE_SPLITS},
    }


@torch.no_grad()
def pixel_nearest(
    samples: torch.Tensor, train: torch.Tensor, k: int = 1, chunk: int = 5000
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` training images nearest to each sample in pixel distance ||x - x_train||_2 (images in [-1, 1],
    any shape (B, C, H, W)). The training set is read in chunks (50,000 CIFAR-10 images do not fit in one
    distance matrix on a small GPU). Returns distances (B, k) ascending and indices (B, k)."""
    if samples.shape[1:] != train.shape[1:]:
        raise ValueError(f"samples {tuple(samples.shape)} and train {tuple(train.shape)} must share image shapes")
    if not 1 <= k <= train.shape[0]:
        raise ValueError(f"k must lie in 1..{train.shape[0]}, got {k}")
    s = samples.flatten(1).double()  # (B, D)
    best_d = torch.full((s.shape[0], 0), 0.0, dtype=torch.float64)
    best_i = torch.zeros((s.shape[0], 0), dtype=torch.int64)
    for start in range(0, train.shape[0], chunk):
        t = train[start : start + chunk].to(samples.device).flatten(1).double()  # (c, D)
        d = torch.cdist(s, t)  # (B, c)
        d_all = torch.cat([best_d.to(d.device), d], dim=1)
        i_all = torch.cat(
            [best_i.to(d.device), torch.arange(start, start + t.shape[0], device=d.device).expand_as(d)], dim=1
        )
        best_d, order = d_all.topk(min(k, d_all.shape[1]), dim=1, largest=False)
        best_i = i_all.gather(1, order)
    return best_d.float().cpu(), best_i.cpu()


@torch.no_grad()
def lpips_nearest(
    samples: torch.Tensor,
    train: torch.Tensor,
    candidates: int = 50,
    net_type: str = "alex",
    lpips: Callable | None = None,
    chunk: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's nearest training image by LPIPS (Zhang et al. 2018; Report B: the 'alex' network),
    searched among its ``candidates`` pixel-nearest training images, at the images' own size (32 x 32).
    ``lpips``: any callable (a, b) -> distances for (P, 3, H, W) pairs in [-1, 1] (default: the kit's
    torchmetrics LPIPS, which raises WeightsNotAvailableError offline). Returns distances (B,), indices (B,)."""
    if lpips is None:
        from ..memorisation import _lpips_distance  # the kit's loader and its offline error

        lpips = _lpips_distance(net_type)
    _, cand = pixel_nearest(samples, train, k=min(candidates, train.shape[0]))  # (B, K)
    K = cand.shape[1]
    best_d, best_i = [], []
    for i in range(0, samples.shape[0], chunk):
        s, c = samples[i : i + chunk], cand[i : i + chunk]
        a = s.repeat_interleave(K, dim=0).float().clamp(-1, 1)  # (c * K, 3, H, W)
        b = train[c.reshape(-1)].float().clamp(-1, 1)
        d = torch.as_tensor(lpips(a, b)).reshape(s.shape[0], K)  # (c, K)
        m, j = d.min(dim=1)
        best_d.append(m.cpu())
        best_i.append(c.gather(1, j[:, None].cpu()).squeeze(1))
    return torch.cat(best_d), torch.cat(best_i)
