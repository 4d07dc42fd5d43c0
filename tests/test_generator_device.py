"""Random generators draw only on their own device, whatever device the network lives on.

PyTorch refuses a draw on a device other than the generator's ("Expected a 'cuda' device type for
generator but found 'cpu'"), but only on CUDA, which CI does not have. These tests put the network on
PyTorch's ``meta`` device (shapes without data: a stand-in for a GPU) and replace ``torch.randn`` with a
check that raises exactly that error whenever a generator is asked to draw on another device. Before
the fix, ``generate`` and the ``sample`` command built a CPU generator and drew on the model's device:
these tests then fail on the first draw, as the same code failed on every CUDA machine.
"""

import pytest
import torch

from diffusion_edu import forward, samplers
from diffusion_edu.checkpoint import LoadedModel
from diffusion_edu.cli import main
from diffusion_edu.generate import generate
from diffusion_edu.presets import TrainConfig
from diffusion_edu.schedules import make_schedule

_real_randn = torch.randn


class DrawLog:
    """Every generator draw made through torch.randn: (generator device, device drawn on)."""

    def __init__(self):
        self.draws: list[tuple[torch.device, torch.device]] = []

    def randn(self, *size, generator=None, device=None, **kwargs):
        if generator is not None:
            on = torch.device(device) if device is not None else torch.device("cpu")
            self.draws.append((generator.device, on))
            if generator.device.type != on.type:  # what PyTorch's CUDA generator check says
                raise RuntimeError(
                    f"Expected a '{on.type}' device type for generator but found '{generator.device.type}'"
                )
        return _real_randn(*size, generator=generator, device=device, **kwargs)


@pytest.fixture
def draws(monkeypatch):
    log = DrawLog()
    monkeypatch.setattr(torch, "randn", log.randn)
    return log


class TinyEps(torch.nn.Module):
    """A conditional eps network small enough to run on the meta device."""

    in_channels, image_size, num_classes, parameterization = 1, 8, 3, "eps"

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.emb = torch.nn.Embedding(4, 1)

    def forward(self, x, t, y=None):
        y = torch.full((x.shape[0],), 3, device=x.device) if y is None else y
        return self.conv(x) + self.emb(y)[:, :, None, None]


def meta_model():
    return TinyEps().to("meta").eval()


SCHEDULE = make_schedule("linear", 10)


def test_the_fake_device_reproduces_the_cuda_failure(draws):
    """The check is real: a CPU generator asked to draw on the model's device is refused."""
    with pytest.raises(RuntimeError, match="Expected a 'meta' device type for generator"):
        torch.randn(2, generator=torch.Generator().manual_seed(0), device="meta")


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_sample_draws_on_the_generators_device(draws, method):
    kw = {"eta": 1.0} if method == "ddim" else {}
    x = samplers.sample(
        meta_model(),
        SCHEDULE,
        5,
        method=method,
        steps=4,
        y=torch.tensor([0, 1, 2, 0, 1]),
        w=0.5,
        generator=torch.Generator().manual_seed(0),
        batch_size=2,
        **kw,
    )
    assert x.device.type == "meta" and x.shape == (5, 1, 8, 8)
    # x_T for three chunks, then noise at every step but the last of each chunk
    assert len(draws.draws) == 3 + 3 * 3
    assert all(g.type == "cpu" and on.type == "cpu" for g, on in draws.draws)


def test_step_noise_and_forward_noise_draw_on_the_generators_device(draws):
    """ddpm_step and ddim_step add their noise through the loop's _add_noise (the public steps check
    finiteness, which meta tensors cannot answer); forward.randn_like (q_sample's
    noise) likewise."""
    g = torch.Generator().manual_seed(0)
    xt = torch.zeros(2, 1, 8, 8, device="meta")
    assert samplers._add_noise(xt, 0.5, None, g).device.type == "meta"
    assert forward.randn_like(xt, g).device.type == "meta"
    assert len(draws.draws) == 2 and all(g_.type == on.type == "cpu" for g_, on in draws.draws)


def test_generate_and_the_sample_command_on_a_non_cpu_model(draws, monkeypatch, tmp_path, capsys):
    """generate() and ``python -m diffusion_edu sample`` draw every x_T and step noise on the CPU
    generator's device and move it to the model's. On meta only the final copy to the CPU cannot run
    (meta tensors hold no data), so reaching it means every draw went through."""
    loaded = LoadedModel(meta_model(), SCHEDULE, TrainConfig(model="small_unet", T=10, device="cpu"))
    with pytest.raises(NotImplementedError, match="meta"):
        generate(loaded, 4, steps=3, seed=0)
    n_generate = len(draws.draws)
    assert n_generate == 1 + 2 and all(g.type == on.type == "cpu" for g, on in draws.draws)

    import diffusion_edu.pretrained as pretrained

    monkeypatch.setattr(pretrained, "load_pretrained", lambda name, device=None: loaded)
    # The CLI turns the unexpected error into one line and exit 1 (its error contract).
    code = main(
        [
            "sample",
            "--pretrained",
            "report_e",
            "--n",
            "4",
            "--steps",
            "3",
            "--out",
            str(tmp_path / "x.png"),
            "--no-progress",
        ]
    )
    assert code == 1 and "meta" in capsys.readouterr().err
    assert len(draws.draws) == 2 * n_generate


def test_a_generator_on_the_models_device_draws_there(draws):
    """A generator that lives where the model does draws there (the training loop's own generator)."""
    model = TinyEps().eval()
    samplers.sample(model, SCHEDULE, 2, steps=3, generator=torch.Generator("cpu").manual_seed(1))
    assert draws.draws and all(g == on for g, on in draws.draws)
