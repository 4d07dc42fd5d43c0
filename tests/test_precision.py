"""The precision of a run follows the device's capability, decided in one function used everywhere.

CI has no GPU: the capability queries (``torch.cuda.is_bf16_supported``, the compute capability) are
replaced by what an H100, an A100 and Colab's T4 answer. The T4 case matters most: PyTorch's default
``is_bf16_supported()`` counts emulation and says True there, where bf16 runs slowly.
"""

import pytest
import torch

from diffusion_edu import precision as P
from diffusion_edu.experiments import cifar
from diffusion_edu.presets import TrainConfig
from diffusion_edu.training import TrainingRun, train


def fake_gpu(monkeypatch, capability: tuple[int, int]):
    """Make torch.cuda answer like a GPU of this compute capability (emulated bf16 counts as supported)."""
    native = capability[0] >= 8

    def is_bf16_supported(including_emulation: bool = True):
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


@pytest.mark.parametrize("capability, name", [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16"), ((7, 0), "fp16")])
def test_auto_is_bf16_only_with_native_units_else_fp16_with_a_scaler(monkeypatch, capability, name):
    fake_gpu(monkeypatch, capability)
    got = P.resolve_precision("auto", "cuda")
    assert got.name == name
    assert got.scaler == (name == "fp16")
    assert got.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


def test_auto_is_fp32_off_cuda_and_explicit_choices_are_kept(monkeypatch):
    fake_gpu(monkeypatch, (9, 0))
    assert P.resolve_precision("auto", "cpu") == P.FP32
    assert P.resolve_precision("fp32", "cuda") == P.FP32
    assert P.resolve_precision("bf16", "cpu") == P.BF16  # CPU bf16 autocast is real
    assert P.resolve_precision("fp16", "cuda:1") == P.FP16


def test_impossible_choices_are_refused_with_the_reason(monkeypatch):
    fake_gpu(monkeypatch, (7, 5))  # a T4
    with pytest.raises(ValueError, match="no native bf16"):
        P.resolve_precision("bf16", "cuda")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        P.resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        P.resolve_precision("fp8", "cuda")


def test_a_torch_without_the_emulation_argument_falls_back_to_the_capability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert not P.cuda_has_native_bf16("cuda")


TINY = dict(
    model="small_unet",
    model_kwargs=dict(in_channels=1, image_size=28, ch=8, depth=1, time_dim=16),
    T=20,
    dataset="mnist-embedded",
    subset=32,
    batch_size=8,
    steps=3,
    log_every=1,
    checkpoint_every=0,
    callback_every=0,
    sample_every=0,
    device="cpu",
)


def test_training_and_cifar_sampling_ask_the_one_function(monkeypatch):
    """Both the training loop and the CIFAR chapters' sampling resolve precision through
    resolve_precision (no second copy of the capability logic)."""
    calls = []
    real = P.resolve_precision

    def spy(precision, device):
        calls.append((precision, torch.device(device).type))
        return real(precision, device)

    monkeypatch.setattr(P, "resolve_precision", spy)
    import diffusion_edu.training as training

    monkeypatch.setattr(training, "resolve_precision", spy)
    run = TrainingRun(TrainConfig(**TINY))
    assert run.precision == P.FP32 and run.scaler is None
    with cifar._autocast(torch.device("cpu")):
        pass
    assert calls == [("auto", "cpu"), ("auto", "cpu")]


def test_the_fp16_path_scales_the_loss_and_resumes_exactly(monkeypatch, tmp_path):
    """The GradScaler path (what a T4 runs) trains, records its precision and resumes from its
    checkpoint with the scaler's state: run on the CPU with bf16 autocast standing in for fp16."""
    import diffusion_edu.training as training

    monkeypatch.setattr(
        training, "resolve_precision", lambda precision, device: P.Precision("fp16", torch.bfloat16, True)
    )
    whole = train(TrainConfig(**TINY), tmp_path / "whole", progress=False)
    assert whole.precision == "fp16"
    state = torch.load(whole.checkpoint, weights_only=True)
    assert state["precision"] == "fp16" and "scale" in state["grad_scaler"]
    train(TrainConfig(**{**TINY, "steps": 2}), tmp_path / "split", progress=False)
    resumed = train(TrainConfig(**TINY), tmp_path / "split", progress=False)
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
