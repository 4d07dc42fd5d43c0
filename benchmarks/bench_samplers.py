"""Benchmark the samplers: images per second, and the sampler's own overhead.

    PYTHONPATH=. python benchmarks/bench_samplers.py            # writes results/benchmarks/samplers_<device>.json

For each network it times DDPM over all T steps, DDIM on 50 steps and DDPM on a 5-step respaced
schedule (Report A's sub-sampling), plus the bare network (min(T, 200) calls on the same batch). The
sampler's overhead is measured with a network that does nothing (returns zeros): its DDPM time over
T steps, divided by the DDPM time of the smallest real network (target: under 5%).

Networks: by default two STAND-INS written here, because the models branch (`diffusion_edu.models`,
with the MNIST presets) had not landed when this was written: a Report D-style CNN (hidden channels
16, 32, 32, 16, kernel 7, GELU, ~0.1M parameters) and a Report E-style two-level U-Net (3x3 double
convolutions, 32-64-128 channels, time and label embedding in every block, ~0.5M parameters). Their
sizes are guesses at the presets. Once the presets exist, pass ``--model NAME --model-kwargs JSON``
(any number of times) to time ``diffusion_edu.models.build_model(NAME, **kwargs)`` instead, and re-run.
Timings are only comparable on the same machine; the file records its hardware and load average.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import torch
from torch import nn

from diffusion_edu import make_schedule, sample
from diffusion_edu.results import current_tier, results_dir, write_results


def _time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the (model) time, Vaswani et al. / Ho et al.: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([args.sin(), args.cos()], dim=1)


class StandInCNN(nn.Module):
    """Report D's CNN denoiser shape: five 7x7 convolutions (1-16-32-32-16-1), GELU, time as a channel bias."""

    def __init__(self, hidden=(16, 32, 32, 16), kernel=7, emb=64):
        super().__init__()
        chans = (1, *hidden, 1)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, kernel, padding=kernel // 2) for a, b in zip(chans, chans[1:]))
        self.time = nn.ModuleList(nn.Linear(emb, c) for c in hidden)
        self.emb, self.in_channels, self.image_size, self.num_classes = emb, 1, 28, None

    def forward(self, x, t, y=None):
        e = _time_embedding(t, self.emb)
        for conv, lin in zip(self.convs, self.time):
            x = nn.functional.gelu(conv(x) + lin(e)[:, :, None, None])
        return self.convs[-1](x)


class _Block(nn.Module):
    def __init__(self, cin, cout, emb):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(cin, cout, 3, padding=1), nn.Conv2d(cout, cout, 3, padding=1)
        self.e = nn.Linear(emb, cout)

    def forward(self, x, e):
        x = torch.relu(self.c1(x) + self.e(e)[:, :, None, None])
        return torch.relu(self.c2(x))


class StandInSmallUNet(nn.Module):
    """Report E's two-level U-Net shape: double 3x3 conv blocks, max-pool down, transposed conv up,
    time and label embedding added in every block; 10 classes plus the null label."""

    def __init__(self, base=32, emb=64, num_classes=10):
        super().__init__()
        c1, c2, c3 = base, 2 * base, 4 * base
        self.down1, self.down2, self.mid = _Block(1, c1, emb), _Block(c1, c2, emb), _Block(c2, c3, emb)
        self.up2, self.dec2 = nn.ConvTranspose2d(c3, c2, 2, stride=2), _Block(2 * c2, c2, emb)
        self.up1, self.dec1 = nn.ConvTranspose2d(c2, c1, 2, stride=2), _Block(2 * c1, c1, emb)
        self.out = nn.Conv2d(c1, 1, 1)
        self.time, self.label = nn.Linear(emb, emb), nn.Embedding(num_classes + 1, emb)
        self.emb, self.in_channels, self.image_size, self.num_classes = emb, 1, 28, num_classes

    def forward(self, x, t, y=None):
        if y is None:
            y = torch.full_like(t, self.num_classes)
        e = self.time(_time_embedding(t, self.emb)) + self.label(y)  # (B, emb)
        h1 = self.down1(x, e)  # (B, c1, 28, 28)
        h2 = self.down2(nn.functional.max_pool2d(h1, 2), e)  # (B, c2, 14, 14)
        h3 = self.mid(nn.functional.max_pool2d(h2, 2), e)  # (B, c3, 7, 7)
        d2 = self.dec2(torch.cat([self.up2(h3), h2], dim=1), e)  # (B, c2, 14, 14)
        d1 = self.dec1(torch.cat([self.up1(d2), h1], dim=1), e)  # (B, c1, 28, 28)
        return self.out(d1)


class NullModel(nn.Module):
    """A network that does nothing: what is left of the sampling time is the sampler's own work."""

    in_channels, image_size, num_classes = 1, 28, None

    def forward(self, x, t, y=None):
        return torch.zeros_like(x)


def _timed(fn, device: torch.device, repeats: int = 1) -> float:
    """Median wall time of fn() over ``repeats`` runs, synchronising the GPU around each."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(model: nn.Module, schedule, n: int, device: torch.device, repeats: int) -> dict:
    """Images/s for DDPM (all steps), DDIM-50 and respaced DDPM-5, and the bare network over T calls."""
    model = model.to(device).eval()
    gen = lambda: torch.Generator(device).manual_seed(0)  # noqa: E731
    kw = dict(generator=None, device=device)
    sample(model, schedule, n, steps=5, **kw)  # warm-up (allocator, kernels)
    T = schedule.T
    out = {"params": sum(p.numel() for p in model.parameters())}
    runs = {"ddpm_all": dict(method="ddpm"), "ddim_50": dict(method="ddim", steps=min(50, T)),
            "respaced_5": dict(method="ddpm", steps=5)}
    for name, opts in runs.items():
        reps = 1 if name == "ddpm_all" else repeats
        sec = _timed(lambda: sample(model, schedule, n, **opts, generator=gen(), device=device), device, reps)
        out[name] = {"seconds": sec, "images_per_s": n / sec, "steps": opts.get("steps", T)}
    x = torch.randn(n, model.in_channels, model.image_size, model.image_size, device=device)
    t = torch.full((n,), T // 2, dtype=torch.int64, device=device)

    calls = min(T, 200)

    def bare():
        with torch.no_grad():
            for _ in range(calls):
                model(x, t)

    out["bare_network_call_s"] = _timed(bare, device) / calls
    out["loop_overhead_vs_bare_network"] = out["ddpm_all"]["seconds"] / (T * out["bare_network_call_s"]) - 1
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=16, help="images per sampling run (one batch)")
    p.add_argument("--T", type=int, default=1000, help="diffusion steps (Reports D and E use 1000)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (CI machine: 2)")
    p.add_argument("--repeats", type=int, default=3, help="repeats (median) for the short runs")
    p.add_argument("--model", action="append", default=[], help="a diffusion_edu.models name (repeatable)")
    p.add_argument("--model-kwargs", action="append", default=[], help="JSON kwargs for the matching --model")
    p.add_argument("--out", default=None, help="results file (default results/benchmarks/samplers_<device>.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    schedule = make_schedule("linear", args.T)
    if args.model:
        from diffusion_edu.models import build_model

        kwargs = [json.loads(k) for k in args.model_kwargs] + [{}] * (len(args.model) - len(args.model_kwargs))
        models = {name: (build_model(name, **kw), False) for name, kw in zip(args.model, kwargs)}
    else:
        models = {"cnn_standin": (StandInCNN(), True), "small_unet_standin": (StandInSmallUNet(), True)}
    t_start = time.perf_counter()
    data = {"models": {}}
    for name, (model, stand_in) in models.items():
        data["models"][name] = {"stand_in": stand_in, **bench_model(model, schedule, args.n, device, args.repeats)}
        print(name, json.dumps(data["models"][name], indent=1))
    null = NullModel()
    null_s = _timed(lambda: sample(null, schedule, args.n, device=device), device, args.repeats)
    smallest = min(data["models"].values(), key=lambda r: r["params"])
    data["null_model_ddpm_all_s"] = null_s
    data["null_model_per_step_us"] = 1e6 * null_s / args.T
    data["sampler_overhead_fraction"] = null_s / smallest["ddpm_all"]["seconds"]
    data["overhead_target"] = 0.05
    data["overhead_within_target"] = data["sampler_overhead_fraction"] < 0.05
    data["load_average"] = os.getloadavg()
    print(json.dumps({k: v for k, v in data.items() if k != "models"}, indent=1))
    tier = current_tier()
    config = {k: v for k, v in vars(args).items() if k != "out"}
    config["note"] = None if args.model else "stand-in networks (models branch not landed); re-run with --model"
    out = args.out or results_dir() / "benchmarks" / f"samplers_{device.type}.json"
    if tier == "smoke" and args.out is None:
        print("tier 'smoke': nothing written (smoke numbers are never results); pass --out to keep them")
        return 0
    path = write_results(out, "samplers/benchmark", data, config, tier, time.perf_counter() - t_start, device)
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
