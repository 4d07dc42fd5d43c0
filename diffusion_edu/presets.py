"""Training configurations: the :class:`TrainConfig` dataclass, the reports' named presets, and the
``train`` / ``presets`` commands of ``python -m diffusion_edu`` that run them.

A ``TrainConfig`` is plain JSON-able data (checkpoints store it as a dict), validated when it is
built: every bad value raises an error naming the field and what was expected. The presets below
reproduce each report's configuration; where a report leaves a setting out, the preset's
description says what we chose and why. Report-scale presets keep the reports' step counts (the
CLI's ``--steps`` and the experiments modules override them for the CPU and Colab tiers).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any, Literal

__all__ = ["TrainConfig", "TrainingPreset", "TRAINING_PRESETS", "training_preset", "apply_sets"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "process": ("gaussian", "cold"),
    "parameterization": ("eps", "x0", "mu", "v"),
    "loss": ("l2", "l1"),
    "loss_weighting": ("uniform", "min_snr"),
    "optimizer": ("adam", "adamw"),
    "lr_schedule": ("constant", "cosine"),
    "disc_input": ("x0", "mu"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "cold_axis": ("rows", "columns", "both"),
    "cold_order": ("random", "outside-in", "inside-out"),
}
_POSITIVE_INT = (
    "budget_probe_steps",
    "T",
    "batch_size",
    "steps",
    "log_every",
    "sample_n",
    "sample_steps",
    "cold_group",
)
_NONNEG_INT = ("warmup_steps", "ema_start", "checkpoint_every", "sample_every", "callback_every", "seed", "cold_seed")
_BOOL = ("hflip", "compile")


@dataclass
class TrainConfig:
    """Everything one training run needs, as JSON-able values (``t`` is 1-based, see schedules.py).

    Data: ``dataset`` (``mnist-embedded`` | ``mnist`` | ``fashion-mnist`` | ``cifar10`` | ``image-folder`` |
    ``array-file``), ``split``, ``subset`` (first n of a class-balanced order, or None for all),
    ``data_path`` (the folder or file of ``image-folder`` / ``array-file``; a data root for the others),
    ``image_size`` and ``channels`` (centre-crop and resize to image_size x image_size, 1 = grey or 3 = RGB;
    None = as the data is). Network: ``model`` (a name for ``diffusion_edu.models.build_model``) and
    ``model_kwargs``; ``in_channels``, ``image_size`` and ``num_classes`` that ``model_kwargs`` does not
    fix follow the data when training starts (:func:`diffusion_edu.data_fit.fit_to_data`).
    Process: ``process="gaussian"`` with ``schedule``, ``T``, ``schedule_kwargs`` (e.g. beta_start),
    or ``process="cold"`` (Bansal et al. 2022; Report D) with ``cold_axis``, ``cold_order``,
    ``cold_group`` (lines averaged per step; T = size / group, doubled for axis "both") and
    ``cold_seed`` (the random order).
    Objective: ``parameterization`` (what the network outputs: eps, x0, the posterior mean mu, or the
    velocity v of Salimans & Ho 2022; cold diffusion predicts x0), ``loss`` (l2 = mean squared error,
    Ho et al. Eq. 14; l1 = mean absolute error, Report E and Bansal et al.), ``loss_weighting``
    (``uniform``, Ho et al.'s L_simple; or ``min_snr``, Hang et al. 2023, with ``min_snr_gamma``; see
    :func:`diffusion_edu.losses.snr_weight`), ``p_uncond`` (probability of replacing a label by the null
    label, Ho & Salimans 2022), ``hflip`` (random horizontal flips), ``disc_weight`` (Report A's gamma,
    Eqs. 8-9; see :func:`diffusion_edu.losses.discriminator_term`) with ``disc_input``, and
    ``aux_weight`` (weight of a network's ``aux_loss``, e.g. the VAE's KL term).
    Optimisation: ``optimizer``, ``lr``, ``weight_decay``, ``warmup_steps`` (linear warm-up of the
    learning rate), ``lr_schedule`` (``constant``, as every report; or ``cosine``: decay to 0 at ``steps``,
    which the book's short cpu-tier runs use), ``grad_clip`` (max global gradient norm or None), ``ema_decay`` (None = no EMA)
    and ``ema_start`` (the EMA copies the weights until this step), ``batch_size``, ``steps``.
    Wall-clock budget: ``minutes`` (None = train ``steps`` steps). With a budget the run times its first
    ``budget_probe_steps`` steps, fixes ``steps`` so that the learning-rate schedule ends when the
    budget does (:func:`diffusion_edu.training.steps_for_budget`), re-times once a tenth of the way to
    that count (periodic costs and a slowing machine included) and fixes it for good, records that
    step count in ``steps`` and the step of the last fix in ``budget_fixed_at``, and keeps both on resume.
    Bookkeeping (0 = never): ``log_every``, ``checkpoint_every``, ``sample_every`` (grids of
    ``sample_n`` images, DDIM with ``sample_steps`` steps), ``callback_every``; ``seed``.
    Hardware: ``device`` (auto | cpu | cuda | cuda:N | mps), ``precision`` (auto = bf16 autocast on
    GPUs with native bf16, fp16 autocast with a gradient scaler on other CUDA GPUs such as the T4, fp32
    elsewhere; see :mod:`diffusion_edu.precision`), ``channels_last`` (None = on for CUDA), ``compile`` (torch.compile).
    Sampling: ``sample_defaults``, the sampler settings recommended for this network (any of ``method``,
    ``steps``, ``w``, ``variance``, ``eta``), stored with the run: the ``sample`` command uses them where
    its options are not given (:func:`diffusion_edu.generate.sampler_defaults`).
    """

    dataset: str = "mnist-embedded"
    split: str = "train"
    subset: int | None = None
    data_path: str | None = None
    image_size: int | None = None
    channels: int | None = None
    model: str = "small_unet_mnist"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    process: Literal["gaussian", "cold"] = "gaussian"
    schedule: str = "linear"
    T: int = 1000
    schedule_kwargs: dict[str, Any] = field(default_factory=dict)
    cold_axis: Literal["rows", "columns", "both"] = "columns"
    cold_order: Literal["random", "outside-in", "inside-out"] = "random"
    cold_group: int = 1
    cold_seed: int = 0
    parameterization: Literal["eps", "x0", "mu", "v"] = "eps"
    loss: Literal["l2", "l1"] = "l2"
    loss_weighting: Literal["uniform", "min_snr"] = "uniform"
    min_snr_gamma: float = 5.0
    p_uncond: float = 0.0
    hflip: bool = False
    disc_weight: float = 0.0
    disc_input: Literal["x0", "mu"] = "x0"
    aux_weight: float = 1.0
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float | None = None
    ema_decay: float | None = 0.9999
    ema_start: int = 0
    batch_size: int = 128
    steps: int = 10_000
    minutes: float | None = None
    budget_probe_steps: int = 30
    budget_fixed_at: int | None = None
    log_every: int = 100
    checkpoint_every: int = 1000
    sample_every: int = 0
    sample_n: int = 16
    sample_steps: int = 50
    callback_every: int = 1000
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool | None = None
    compile: bool = False
    sample_defaults: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._validate()

    # -- conversions -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able data (what checkpoints and ``config.json`` hold)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict (e.g. a checkpoint's ``config``); unknown keys are an error (typos)."""
        if not isinstance(data, dict):
            raise TypeError(f"a TrainConfig is built from a dict, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields are {sorted(names)}")
        floats = ("lr", "weight_decay", "p_uncond", "disc_weight", "aux_weight", "grad_clip", "ema_decay", "minutes")
        as_float = {k: float(v) for k, v in data.items() if k in floats and type(v) is int}  # JSON's 1 for 1.0
        return cls(**{**data, **as_float})

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated); unknown names are an error."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    # -- validation ----------------------------------------------------------------------------
    # (Longer than ~60 lines: one check per field, each with its own message; read top to bottom.)
    def _validate(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"TrainConfig.{name} must be {expected}, got {getattr(self, name)!r}")

        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise bad(name, "one of " + ", ".join(repr(c) for c in choices))
        for name in _POSITIVE_INT + _NONNEG_INT:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"TrainConfig.{name} must be an int, got {type(v).__name__} {v!r}")
            if v < (1 if name in _POSITIVE_INT else 0):
                raise bad(name, "a positive int" if name in _POSITIVE_INT else "an int >= 0")
        for name in _BOOL:
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "true or false")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise bad("channels_last", "true, false or null (auto: on for CUDA)")
        for name in ("model_kwargs", "schedule_kwargs"):
            v = getattr(self, name)
            if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
                raise bad(name, "a dict of keyword arguments")
            try:
                json.dumps(v, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise ValueError(f"TrainConfig.{name} must hold JSON-able values ({e})") from None
        from .generate import check_sample_defaults

        check_sample_defaults(self.sample_defaults, "TrainConfig.sample_defaults")
        for name in ("dataset", "split", "model", "schedule", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise bad(name, "a non-empty string")
        from .data import DATASETS

        if self.dataset not in DATASETS:
            raise bad("dataset", "one of " + ", ".join(DATASETS))
        if self.split not in ("train", "heldout", "test", "all"):
            raise bad("split", "'train', 'heldout', 'test' or 'all'")
        if self.subset is not None and (type(self.subset) is not int or self.subset < 1):
            raise bad("subset", "a positive int or None")
        if self.data_path is not None and (not isinstance(self.data_path, str) or not self.data_path):
            raise bad("data_path", "a non-empty path string or None")
        if self.dataset in ("image-folder", "array-file") and self.data_path is None:
            what = "folder of images" if self.dataset == "image-folder" else ".npz or .npy file"
            raise ValueError(f"TrainConfig.dataset={self.dataset!r} reads your own files: set data_path to the {what}")
        if self.image_size is not None and (type(self.image_size) is not int or self.image_size < 1):
            raise bad("image_size", "a positive int (pixels per side) or None (as the data is)")
        if self.channels is not None and (type(self.channels) is not int or self.channels not in (1, 3)):
            raise bad("channels", "1 (grey), 3 (RGB) or None (as the data is)")
        if self.device.split(":")[0] not in ("auto", "cpu", "cuda", "mps"):
            raise bad("device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")

        def number(name: str) -> float:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                raise TypeError(f"TrainConfig.{name} must be a number, got {type(v).__name__} {v!r}")
            if v in (float("inf"), float("-inf")):
                raise ValueError(f"TrainConfig.{name} must be a finite number, got {v!r}")
            return float(v)

        if not number("lr") > 0:
            raise bad("lr", "a positive learning rate")
        for name in ("weight_decay", "disc_weight", "aux_weight"):
            if not number(name) >= 0:
                raise bad(name, "a number >= 0")
        if not 0 <= number("p_uncond") < 1:
            raise bad("p_uncond", "a probability in [0, 1)")
        if self.grad_clip is not None and not number("grad_clip") > 0:
            raise bad("grad_clip", "a positive max gradient norm, or None for no clipping")
        if self.minutes is not None and not number("minutes") > 0:
            raise bad("minutes", "a positive wall-clock budget in minutes, or None for a fixed number of steps")
        if self.budget_fixed_at is not None and (type(self.budget_fixed_at) is not int or self.budget_fixed_at < 0):
            raise bad("budget_fixed_at", "the step at which a budget fixed `steps` (an int >= 0), or None")
        if self.ema_decay is not None and not 0 <= number("ema_decay") < 1:
            raise bad("ema_decay", "a decay in [0, 1), or None for no EMA")
        if not number("min_snr_gamma") > 0:
            raise bad("min_snr_gamma", "a positive SNR cap (Hang et al. use 5)")
        if self.loss_weighting == "min_snr" and self.parameterization not in ("eps", "x0", "v"):
            raise ValueError(
                f"loss_weighting='min_snr' is defined for eps, x0 and v predictions, not "
                f"parameterization={self.parameterization!r}"
            )
        if self.process == "cold":
            if self.parameterization != "x0":
                raise ValueError(
                    "process='cold' trains the network to predict the clean image "
                    "(Bansal et al. 2022): set parameterization='x0'"
                )
            if self.disc_weight:
                raise ValueError("disc_weight (Report A's discriminator term) needs process='gaussian'")
        else:
            from .schedules import SCHEDULES

            if self.schedule not in SCHEDULES:
                raise bad("schedule", "one of " + ", ".join(sorted(SCHEDULES)))


# ---------------------------------------------------------------------------------------------
# The reports' presets.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingPreset:
    """A named configuration with a one-line description (shown by ``python -m diffusion_edu presets``)."""

    name: str
    description: str
    config: TrainConfig


_MNIST_EPOCH = 60_000 // 128  # 468 full batches of 128 in MNIST's 60,000 training digits
_HO: dict[str, Any] = dict(schedule="linear", T=1000, optimizer="adam", lr=2e-4, batch_size=128, ema_decay=0.9999)

# A table, one preset per entry: the formatter leaves it as written.
# fmt: off
_PRESET_LIST: list[TrainingPreset] = [
    # The ten-minute recipe (chapter "Ten minutes of CPU", results/benchmarks/recipe_cpu.json): Report E's
    # small U-Net predicting v, L2 loss with Min-SNR-5 weighting, 200 warm-up steps and a cosine decay (each
    # kept because the screen found it better than its parent, v-prediction on two training seeds); the
    # sampler the study recommends within 10 s for 1,000 samples is stored with every run it trains.
    TrainingPreset("quick_mnist", "Offline demo and the ten-minute recipe: Report E's small U-Net on the embedded "
           "MNIST digits, v-prediction, L2 loss with Min-SNR-5 weighting, warm-up and cosine decay; 3000 steps, or "
           "--minutes 10 (the steps the budget buys are recorded in the run's config). Its network follows the data: "
           "--set dataset=fashion-mnist, or image-folder / array-file with --set data_path=...",
           TrainConfig(dataset="mnist-embedded", model="small_unet_mnist",
                       T=1000, parameterization="v", loss="l2", loss_weighting="min_snr", p_uncond=0.1, lr=1e-3,
                       warmup_steps=200, lr_schedule="cosine", batch_size=32, steps=3000, ema_decay=0.995,
                       log_every=50, checkpoint_every=500, sample_every=1000,
                       sample_defaults={"method": "dpm_solver_2m", "steps": 9, "w": 0.7})),
    TrainingPreset("a_unet", "Report A: conditional U-Net, eps-prediction, linear betas, T=400 (optimizer, batch and "
           "steps not reported: Ho et al.'s Adam 2e-4, batch 128, 20k steps; no EMA).",
           TrainConfig(dataset="mnist", model="unet_mnist", model_kwargs={"num_classes": 10}, schedule="linear",
                       T=400, lr=2e-4, batch_size=128, steps=20_000, ema_decay=None)),
    TrainingPreset("a_unet_mu", "Report A: the same U-Net trained to output the posterior mean mu instead of eps.",
           TrainConfig(dataset="mnist", model="unet_mnist", model_kwargs={"num_classes": 10}, T=400,
                       parameterization="mu", steps=20_000, ema_decay=None)),
    TrainingPreset("a_unet_disc", "Report A Eqs. 8-9: conditional U-Net plus gamma=0.1 times a frozen MNIST "
           "classifier's error on the predicted clean digit (gamma not reported).",
           TrainConfig(dataset="mnist", model="unet_mnist", model_kwargs={"num_classes": 10}, T=400,
                       disc_weight=0.1, steps=20_000, ema_decay=None)),
    TrainingPreset("a_autoencoder", "Report A: the convolutional autoencoder denoiser with its output skip, T=400.",
           TrainConfig(dataset="mnist", model="autoencoder_mnist", model_kwargs={"num_classes": 10}, T=400,
                       steps=20_000, ema_decay=None)),
    TrainingPreset("a_vae", "Report A: the VAE-style denoiser, T=400; its KL term (per pixel, like the MSE) enters with weight 1.",
           TrainConfig(dataset="mnist", model="vae_mnist", model_kwargs={"num_classes": 10}, T=400,
                       steps=20_000, ema_decay=None)),
    TrainingPreset("c_cifar10", "Report C / Ho et al.: 35.7M U-Net, dropout 0.1, linear 1e-4..0.02, T=1000, Adam 2e-4, "
           "batch 128, warm-up 5000, clip 1, EMA 0.9999, flips, 800k steps (Report C ran 100k).",
           TrainConfig(dataset="cifar10", model="unet_cifar10", model_kwargs={"dropout": 0.1}, **_HO,
                       warmup_steps=5000, grad_clip=1.0, hflip=True, steps=800_000,
                       log_every=100, checkpoint_every=5000, sample_every=10_000)),
    TrainingPreset("b_cifar10_cfg", "Report B: improved U-Net with class embedding, cosine schedule, p_uncond 0.1, AdamW "
           "3e-4, batch 14, ~1M steps (T, EMA, flips not reported: 1000, 0.9999, on).",
           TrainConfig(dataset="cifar10", model="unet_cifar10_improved", model_kwargs={"num_classes": 10},
                       schedule="cosine", T=1000, p_uncond=0.1, optimizer="adamw", lr=3e-4, weight_decay=0.0,
                       batch_size=14, steps=1_000_000, hflip=True, ema_decay=0.9999,
                       checkpoint_every=5000, sample_every=10_000)),
    TrainingPreset("d_cnn", "Report D: CNN (16,32,32,16; kernel 7; GELU), T=1000, Adam 2e-4, batch 128, MSE, "
           "100 epochs of MNIST (46,800 steps).",
           TrainConfig(dataset="mnist", model="cnn_mnist", **{**_HO, "ema_decay": None},
                       steps=100 * _MNIST_EPOCH, checkpoint_every=_MNIST_EPOCH, callback_every=_MNIST_EPOCH)),
    TrainingPreset("d_cnn_selu", "Report D's harder variant: the CNN with SELU, T=100, lr 6e-4, batch 128, 100 epochs.",
           TrainConfig(dataset="mnist", model="cnn_mnist_selu", schedule="linear", T=100, lr=6e-4,
                       batch_size=128, ema_decay=None, steps=100 * _MNIST_EPOCH,
                       checkpoint_every=_MNIST_EPOCH, callback_every=_MNIST_EPOCH)),
    TrainingPreset("d_cold_columns", "Report D cold diffusion: column averaging in random order, one column per step "
           "(T=28), the CNN predicts x0 with MSE (epochs not reported: 100).",
           TrainConfig(dataset="mnist", model="cnn_mnist", process="cold", T=28, cold_axis="columns",
                       cold_order="random", cold_group=1, parameterization="x0", loss="l2", lr=2e-4,
                       batch_size=128, ema_decay=None, steps=100 * _MNIST_EPOCH,
                       checkpoint_every=_MNIST_EPOCH, callback_every=_MNIST_EPOCH)),
    TrainingPreset("e_unet", "Report E: small two-level U-Net with time and label in every block, T=1000 linear, L1, "
           "batch 32, 100k steps, p_uncond 0.1 (rate not reported), Adam 1e-4 (authors' notebook), no EMA.",
           TrainConfig(dataset="mnist", model="small_unet_mnist", model_kwargs={"num_classes": 10},
                       schedule="linear", T=1000, loss="l1", p_uncond=0.1, lr=1e-4, batch_size=32,
                       steps=100_000, ema_decay=None, checkpoint_every=5000, sample_every=10_000)),
]
# fmt: on
_E = _PRESET_LIST[-1].config
for _T, _schedule in ((4000, "linear"), (1000, "cosine"), (4000, "cosine")):
    _PRESET_LIST.append(
        TrainingPreset(
            f"e_unet_{_schedule}_T{_T}",
            f"Report E's sweep: e_unet with the {_schedule} schedule and T={_T}.",
            _E.replace(schedule=_schedule, T=_T),
        )
    )

TRAINING_PRESETS: dict[str, TrainingPreset] = {p.name: p for p in _PRESET_LIST}


def training_preset(name: str, **overrides: Any) -> TrainConfig:
    """The named preset's config, with ``overrides`` applied (validated), e.g.
    ``training_preset("e_unet", steps=2000, dataset="mnist-embedded")``."""
    if name not in TRAINING_PRESETS:
        raise ValueError(
            f"unknown preset {name!r}; valid presets are {sorted(TRAINING_PRESETS)} "
            "(python -m diffusion_edu presets lists them)"
        )
    return TRAINING_PRESETS[name].config.replace(**overrides)  # always a fresh copy


def apply_sets(config: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides (the ``train`` command's ``--set``) to a config dict. VALUE is read as
    JSON when it parses (1e-3, true, null, {"dropout": 0.1}) and as a plain string otherwise;
    ``model_kwargs.dropout=0.1`` sets one entry."""
    config = dict(config)
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        top, dot, sub = key.partition(".")
        if dot:
            if not isinstance(config.get(top), dict):
                raise ValueError(f"--set {key}: {top!r} is not a dict field of TrainConfig")
            config[top] = {**config[top], sub: value}
        else:
            config[key] = value
    return config
