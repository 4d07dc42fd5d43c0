"""The peer benchmark (benchmarks/bench_peers.py, issue 9): its configurations, arithmetic and results file.

The peers (diffusers, denoising-diffusion-pytorch) are optional and not installed by ``make test``: the
tests of the pure parts (matching configurations, ratios, targets, MFU, the peak-FLOP table, FLOP
counting against a hand count) and of the results file (the package alone, shrunk networks) run
everywhere; the tests that build the peers' networks skip with the reason when they are missing
(``make bench-peers`` installs them into benchmarks/.venv, whose python runs these too).
Nothing here asserts a speed: the targets are checked by the benchmark's own output.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffusion_edu.models import MODEL_PRESETS, build_model, count_parameters
from diffusion_edu.results import read_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/ is a folder of scripts, not an installed package
configs = importlib.import_module("peers.configs")
flops = importlib.import_module("peers.flops")

HAVE_PEERS = all(importlib.util.find_spec(m) is not None for m in ("diffusers", "denoising_diffusion_pytorch"))
needs_peers = pytest.mark.skipif(
    not HAVE_PEERS,
    reason="diffusers / denoising-diffusion-pytorch not installed "
    "(optional: `make bench-peers` installs them into benchmarks/.venv)",
)


# ---------------------------------------------------------------------------------------------
# Matching configurations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", configs.PRESETS)
def test_diffusers_config_follows_the_preset_block_by_block(preset):
    """Channels per level, blocks per level, attention at the preset's resolutions (and only there, in the
    mirrored order on the way up), groups and dropout carry over from the package's preset."""
    kw = configs.package_kwargs(preset)
    d = configs.diffusers_unet_kwargs(kw)
    assert d["block_out_channels"] == tuple(kw["ch"] * m for m in kw["ch_mult"])
    assert d["layers_per_block"] == kw["num_res_blocks"]
    res = [kw["image_size"] // 2**i for i in range(len(kw["ch_mult"]))]
    assert [t.startswith("Attn") for t in d["down_block_types"]] == [r in kw["attn_resolutions"] for r in res]
    assert [t.startswith("Attn") for t in d["up_block_types"]] == [r in kw["attn_resolutions"] for r in res[::-1]]
    assert (d["norm_num_groups"], d["dropout"], d["add_attention"]) == (
        kw["norm_groups"] if "norm_groups" in kw else 32,
        kw["dropout"],
        kw.get("mid_attention", True),
    )
    assert d["in_channels"] == d["out_channels"] == kw["in_channels"] and d["sample_size"] == kw["image_size"]
    assert d["attention_head_dim"] is None  # one head, as Ho et al.


def test_cifar10_preset_puts_attention_at_16x16_only():
    """Ho et al.'s CIFAR-10 network: attention in the second level (16x16) on the way down and up."""
    d = configs.diffusers_unet_kwargs(configs.package_kwargs("unet_cifar10"))
    assert d["down_block_types"] == ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D")
    assert d["up_block_types"] == ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")


@pytest.mark.parametrize(
    "option, value",
    [
        ("num_classes", 10),
        ("resblock_updown", True),
        ("num_head_channels", 64),
        ("use_scale_shift_norm", True),
        ("num_heads", 4),
    ],
)
def test_diffusers_config_refuses_what_it_cannot_match(option, value):
    """Options outside Ho et al.'s plain U-Net fail loudly, naming the option, instead of being dropped."""
    kw = {**configs.package_kwargs("unet_cifar10"), option: value}
    with pytest.raises(ValueError, match=option):
        configs.diffusers_unet_kwargs(kw)
    with pytest.raises(ValueError, match="unet"):
        configs.diffusers_unet_kwargs({**kw, "name": "small_unet"})


def test_package_kwargs_are_the_presets_unconditional():
    """The comparison uses the presets' networks without labels (lucidrains' Unet takes none); --tiny shrinks them."""
    for preset in configs.PRESETS:
        kw = configs.package_kwargs(preset)
        assert kw["num_classes"] is None
        assert {k: v for k, v in kw.items() if k != "num_classes"} == {
            k: v for k, v in MODEL_PRESETS[preset].items() if k != "num_classes"
        }
        tiny = configs.package_kwargs(preset, tiny=True)
        assert count_parameters(build_model(**tiny)) < count_parameters(build_model(**kw)) / 5
    with pytest.raises(ValueError, match="preset"):
        configs.package_kwargs("unet_cifar10_improved")


def test_lucidrains_config():
    """Own-size presets use the searched match (same number of resolutions as the package's network); shrunk
    ones the package's widths; default=True the library's README network; an impossible size fails."""
    for preset in configs.PRESETS:
        kw = configs.package_kwargs(preset)
        lk = configs.lucidrains_unet_kwargs(preset, kw)
        assert len(lk["dim_mults"]) == len(kw["ch_mult"]) and lk["channels"] == kw["in_channels"]
        assert lk["dim"] == configs.LUCIDRAINS_MATCH[preset]["dim"]
    tiny = configs.package_kwargs("unet_mnist", tiny=True)
    lk = configs.lucidrains_unet_kwargs("unet_mnist", tiny)
    assert (lk["dim"], lk["dim_mults"], lk["attn_heads"]) == (tiny["ch"], tuple(tiny["ch_mult"]), 1)
    default = configs.lucidrains_unet_kwargs("unet_cifar10", configs.package_kwargs("unet_cifar10"), default=True)
    assert (default["dim"], default["dim_mults"], default["channels"]) == (64, (1, 2, 4, 8), 3)
    with pytest.raises(ValueError, match="divisible"):  # 28 is not divisible by 2^3
        configs.lucidrains_unet_kwargs("unet_mnist", configs.package_kwargs("unet_mnist"), default=True)


def test_mode_follows_the_training_engine():
    """bf16 autocast + channels-last + compile on CUDA, fp32 on CPU; explicit choices win; typos fail."""
    assert configs.resolve_mode("cuda") == {"precision": "bf16", "channels_last": True, "compile": True}
    assert configs.resolve_mode("cpu") == {"precision": "fp32", "channels_last": False, "compile": False}
    assert configs.resolve_mode("cuda", "fp32", False, False) == {
        "precision": "fp32",
        "channels_last": False,
        "compile": False,
    }
    assert configs.resolve_mode("cpu", "bf16", True)["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision"):
        configs.resolve_mode("cpu", "fp16")


# ---------------------------------------------------------------------------------------------
# Arithmetic: ratios, overhead, MFU, the peak table, targets
# ---------------------------------------------------------------------------------------------


def test_ratio_and_faster_peer():
    """package / peer; the faster peer is chosen among the peers only (not the package, not the reference row)."""
    assert configs.ratio(150.0, 100.0) == pytest.approx(1.5)
    assert configs.ratio(None, 100.0) is None and configs.ratio(1.0, None) is None
    with pytest.raises(ValueError, match="positive"):
        configs.ratio(1.0, 0.0)
    rates = {"diffusion_edu": 500.0, "diffusers": 120.0, "lucidrains": 130.0, "lucidrains_default": 900.0}
    assert configs.faster_peer(rates) == ("lucidrains", 130.0)
    assert configs.faster_peer({"diffusion_edu": 1.0, "diffusers": None}) == (None, None)
    assert configs.median_rate([3.0, 1.0, 100.0]) == 3.0
    with pytest.raises(ValueError, match="empty"):
        configs.median_rate([])


def test_overhead_and_mfu_arithmetic():
    """Overhead is loop / bare - 1; MFU is FLOPs per step x steps per second / peak FLOP/s, e.g. 37.3 GFLOP
    per image x 128 images per step at 80 steps/s on a 989.4 TFLOP/s H100 is 38.6%."""
    assert configs.overhead(1.05, 1.0) == pytest.approx(0.05)
    assert configs.overhead(0.9, 1.0) == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="bare_s"):
        configs.overhead(1.0, 0.0)
    assert configs.mfu(37.3e9 * 128, 80.0, 989.4e12) == pytest.approx(37.3e9 * 128 * 80 / 989.4e12)
    assert configs.mfu(37.3e9 * 128, 80.0, 989.4e12) == pytest.approx(0.386, abs=1e-3)
    for bad in ({"flops_per_step": 0.0}, {"steps_per_s": -1.0}, {"peak_flops_per_s": float("nan")}):
        args = {"flops_per_step": 1.0, "steps_per_s": 1.0, "peak_flops_per_s": 1.0, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            configs.mfu(**args)


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.4),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.05),
        ("NVIDIA L4", 121.0),
    ],
)
def test_peak_table_by_device_name(name, tflops):
    """Device names as torch.cuda.get_device_name() gives them; the L40S is not taken for an L4."""
    peak, source = configs.peak_bf16_flops(name)
    assert peak == pytest.approx(tflops * 1e12) and "datasheet" in source


def test_peak_table_unknown_devices():
    """No bf16 tensor cores (T4) or no GPU: no peak, and a reason instead of a guess."""
    assert configs.peak_bf16_flops("Tesla T4") == (None, configs.peak_bf16_flops("Tesla T4")[1])
    assert "PEAK_BF16_TFLOPS" in configs.peak_bf16_flops("Tesla T4")[1]
    assert configs.peak_bf16_flops(None)[0] is None


def _data(device_name, precision, mfu_value, training_ratio, overhead_value, ddim_ratio):
    return {
        "device": "cuda" if device_name else "cpu",
        "device_name": device_name,
        "mode": {"precision": precision},
        "training": {"unet_cifar10": {"faster_peer": "diffusers", "ratio_vs_faster_peer": training_ratio}},
        "sampling": {
            "unet_mnist": {
                "loops": {"diffusion_edu": {"overhead": overhead_value}},
                "faster_peer": None,
                "ratio_vs_faster_peer": ddim_ratio,
            }
        },
        "mfu": {"unet_cifar10": {"mfu": mfu_value}},
    }


def test_targets_met_missed_and_unmeasured():
    """Each of issue 9's targets is met, missed (with the margin) or not measured (met=None), never guessed."""
    targets = configs.evaluate_targets(_data("NVIDIA H100 80GB HBM3", "bf16", 0.40, 0.9, 0.03, None))
    by_name = {t["target"].split()[0] + ("" if t["preset"] is None else t["preset"]): t for t in targets}
    train = by_name["trainingunet_cifar10"]
    assert train["met"] is False and train["margin"] == pytest.approx(-0.1)
    over = by_name["packageunet_mnist"]
    assert over["met"] is True and over["margin"] == pytest.approx(-0.02)
    assert by_name["DDIM-50unet_mnist"]["met"] is None
    mfu_t = by_name["CIFAR-10unet_cifar10"]
    assert mfu_t["met"] is True and mfu_t["margin"] == pytest.approx(0.40 / 0.35 - 1)
    assert configs.evaluate_targets(_data("NVIDIA H100 80GB HBM3", "bf16", 0.30, 1.2, 0.07, 1.0))[-1]["met"] is False
    # the MFU target is about an H100 in bf16: elsewhere it is unmeasured, whatever the number
    for device, precision in ((None, "fp32"), ("NVIDIA A100-SXM4-80GB", "bf16"), ("NVIDIA H100 80GB HBM3", "fp32")):
        t = configs.evaluate_targets(_data(device, precision, 0.5, 1.0, 0.0, 1.0))[-1]
        assert t["met"] is None and t["value"] is None


# ---------------------------------------------------------------------------------------------
# FLOP counting against hand counts
# ---------------------------------------------------------------------------------------------


class TwoConvs(nn.Module):
    """conv 1 -> 2 channels, then 2 -> 1, 3x3, no bias; t enters as an added constant (no FLOPs)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(2, 1, 3, padding=1, bias=False)

    def forward(self, x, t):
        return self.c2(torch.relu(self.c1(x))) + t.float().view(-1, 1, 1, 1)


def test_flop_count_matches_a_hand_count():
    """A 3x3 conv costs 2 * B * C_out * C_in * 9 * H * W FLOPs forward. Backward computes the weight
    gradient of both convs (same cost each) and the input gradient of the second only (the images need
    none): a training step is 2 f1 + 3 f2, per image (2 f1 + 3 f2) / B."""
    B, H, W = 4, 6, 5
    net = TwoConvs()
    f1, f2 = 2 * B * 2 * 1 * 9 * H * W, 2 * B * 1 * 2 * 9 * H * W
    x, t = torch.randn(B, 1, H, W), torch.zeros(B, dtype=torch.int64)
    assert flops.count_flops(lambda: net(x, t)) == f1 + f2
    per_image = flops.train_flops_per_image(lambda x, t: net(x, t), net, (1, H, W), batch=B)
    assert per_image == (2 * f1 + 3 * f2) / B
    assert all(p.grad is None for p in net.parameters())  # the count leaves no gradients behind


def test_attention_flops_are_counted_on_cpu():
    """scaled_dot_product_attention is 4 B N^2 d FLOPs forward (Q K^T and the weighted sum of V). The
    counter has no formula for the fused CPU kernel; counting through the math backend sees it."""
    B, N, d = 2, 16, 8
    q, k, v = (torch.randn(B, 1, N, d) for _ in range(3))
    assert flops.count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == 4 * B * N * N * d


def test_timed_windows_counts_whole_steps():
    """Each window runs at least one whole step; one rate per window (no speed is asserted)."""
    calls = []
    rates, cpu_rates = flops.timed_windows(lambda: calls.append(1), windows=3, window_s=0.0, device=torch.device("cpu"))
    assert len(calls) == 3 and len(rates) == len(cpu_rates) == 3 and all(r > 0 for r in rates)
    with pytest.raises(ValueError, match="windows"):
        flops.timed_windows(lambda: None, windows=0, window_s=0.0, device=torch.device("cpu"))


# ---------------------------------------------------------------------------------------------
# The script end to end: the package alone, shrunk networks, one process
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_peers():
    return importlib.import_module("bench_peers")


def test_results_file_shape_without_peers(bench_peers, tmp_path):
    """One run writes the envelope (name, tier, hardware, versions) and per preset the package's row with its
    parameters and counted FLOPs, the sampling loop with its overhead, and every target (peer ones unmeasured)."""
    out = tmp_path / "peers.json"
    rc = bench_peers.main(
        [
            "--libraries",
            "diffusion_edu",
            "--presets",
            "unet_mnist",
            "--tiny",
            "--in-process",
            "--threads",
            "1",
            "--warmup",
            "1",
            "--windows",
            "2",
            "--window-s",
            "0",
            "--sample-n",
            "2",
            "--sample-repeats",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    record = read_results(out)
    assert record["name"] == "benchmarks/peers_cpu" and record["tier"] == "smoke"
    data = record["data"]
    assert data["mode"] == {"precision": "fp32", "channels_last": False, "compile": False}
    assert data["versions"]["torch"] == torch.__version__
    row = data["training"]["unet_mnist"]["rows"]["diffusion_edu"]
    kw = configs.package_kwargs("unet_mnist", tiny=True)
    assert row["params"] == count_parameters(build_model(**kw)) and row["batch"] == 4
    assert len(row["img_s_windows"]) == 2 and row["img_s"] > 0 and row["train_flops_per_image"] > 0
    assert data["training"]["unet_mnist"]["ratios"] == {} and data["training"]["unet_mnist"]["faster_peer"] is None
    loop = data["sampling"]["unet_mnist"]["loops"]["diffusion_edu"]
    assert set(loop) >= {"seconds", "img_s", "overhead", "overhead_repeats"} and math.isfinite(loop["overhead"])
    assert data["sampling"]["unet_mnist"]["steps"] == 50
    assert data["mfu"]["unet_mnist"]["mfu"] is None  # no GPU, no peak
    assert [t["met"] for t in data["targets"]][0] is None and len(data["targets"]) == 4
    json.dumps(record)  # plain JSON throughout


def test_partial_file_resumes_a_split_run(bench_peers, tmp_path, monkeypatch):
    """With --partial every finished measurement is saved at once; a second run with the same file
    measures nothing it already holds (a run split over time-limited commands), and a file from another
    device or mode is refused by name."""
    partial = tmp_path / "partial.json"
    args = [
        "--libraries",
        "diffusion_edu",
        "--presets",
        "unet_mnist",
        "--tiny",
        "--in-process",
        "--threads",
        "1",
        "--warmup",
        "1",
        "--windows",
        "1",
        "--window-s",
        "0",
        "--sample-n",
        "2",
        "--sample-repeats",
        "1",
        "--partial",
        str(partial),
    ]
    assert bench_peers.main(args + ["--out", str(tmp_path / "a.json")]) == 0
    saved = json.loads(partial.read_text())
    assert "diffusion_edu" in saved["training"]["unet_mnist"] and "unet_mnist" in saved["sampling"]

    def must_not_measure(*a, **k):
        raise AssertionError("measured again although the partial file holds it")

    monkeypatch.setattr(bench_peers, "run_training_job", must_not_measure)
    monkeypatch.setattr(bench_peers, "measure_sampling", must_not_measure)
    assert bench_peers.main(args + ["--out", str(tmp_path / "b.json")]) == 0
    a, b = (read_results(tmp_path / f)["data"] for f in ("a.json", "b.json"))
    assert a["training"] == b["training"] and a["sampling"] == b["sampling"]
    saved["mode"] = {**saved["mode"], "precision": "bf16"}
    partial.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="mode"):
        bench_peers.main(args + ["--out", str(tmp_path / "c.json")])


def test_a_failing_library_is_recorded_not_fatal(bench_peers, monkeypatch):
    """A library whose worker process fails (a compile error, out of memory) becomes a row that says why,
    in the field the page renders, and the run goes on with the other libraries."""

    class Failed:
        returncode, stdout, stderr = 1, "", "Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory"

    monkeypatch.setattr(bench_peers.subprocess, "run", lambda *a, **k: Failed())
    monkeypatch.setattr(bench_peers, "available", lambda lib: None)
    args = bench_peers.argparse.Namespace(in_process=False)
    row = bench_peers.run_training_job(args, {"library": "diffusers", "preset": "unet_mnist"})
    assert row["library"] == "diffusers" and "out of memory" in row["skipped"] and "img_s" not in row
    assert bench_peers.training_summary({"diffusion_edu": {"img_s": 5.0}, "diffusers": row})["ratios"] == {}


def test_finalize_writes_what_a_cut_off_run_measured_and_nothing_else(bench_peers, tmp_path):
    """--finalize turns the partial file of a run cut off on a GPU machine into a results file: the rows it
    holds with their ratios and MFU (from counted FLOPs and the device's peak), the rows it never reached
    listed as not measured (never estimated), their targets unmeasured, and the GPU from the run's log."""
    row = {
        "img_s": 1000.0,
        "img_s_windows": [990.0, 1000.0, 1010.0],
        "batch": 128,
        "threads": 2,
        "train_flops_per_image": 3.0e10,
        "params": 10,
        "peak_memory_mib": 1.0,
        "load_average_1min": 0.1,
    }
    partial = tmp_path / "partial.json"
    partial.write_text(
        json.dumps(
            {
                "device_name": "NVIDIA H100 80GB HBM3",
                "mode": {"precision": "bf16", "channels_last": True, "compile": True},
                "training": {
                    "unet_cifar10": {
                        "diffusion_edu": {**row, "library": "diffusion_edu"},
                        "diffusers": {**row, "library": "diffusers", "img_s": 1250.0},
                    }
                },
                "sampling": {},
            }
        )
    )
    log = tmp_path / "log.txt"
    log.write_text(
        "name, driver_version, memory.total [MiB], clocks.max.sm [MHz]\n"
        "NVIDIA H100 80GB HBM3, 580.1, 81559 MiB, 1980 MHz\ntorch 2.11.0+cu130 cuda 13.0 NVIDIA H100 80GB HBM3\n"
    )
    out = tmp_path / "peers_cuda.json"
    with pytest.raises(ValueError, match="--wall-time"):
        bench_peers.main(["--finalize", str(partial), "--out", str(out)])
    assert (
        bench_peers.main(["--finalize", str(partial), "--log", str(log), "--wall-time", "570", "--out", str(out)]) == 0
    )
    rec = read_results(out)
    assert rec["hardware"]["gpu"] == "NVIDIA H100 80GB HBM3" and rec["hardware"]["torch"] == "2.11.0+cu130"
    assert rec["hardware"]["driver"] == "580.1" and rec["wall_time_s"] == 570.0 and rec["config"]["threads"] == 2
    data = rec["data"]
    assert data["training"]["unet_cifar10"]["ratios"] == {"diffusers": pytest.approx(0.8)}
    peak = configs.peak_bf16_flops("NVIDIA H100 80GB HBM3")[0]
    assert data["mfu"]["unet_cifar10"]["mfu"] == pytest.approx(3.0e10 * 1000.0 / peak)
    assert data["not_measured"]["training"] == {
        "unet_mnist": ["diffusion_edu", "diffusers", "lucidrains"],
        "unet_cifar10": ["lucidrains"],
    }
    assert data["not_measured"]["sampling"] == ["unet_mnist", "unet_cifar10"] and data["sampling"] == {}
    by_name = {(t["target"], t["preset"]): t for t in data["targets"]}
    assert by_name[("training images/s >= the faster peer's", "unet_cifar10")]["met"] is False
    assert by_name[("DDIM-50 images/s >= the faster peer loop's", "unet_cifar10")]["met"] is None
    assert by_name[("CIFAR-10 preset training step MFU > 35% (H100, bf16)", "unet_cifar10")]["met"] is False


def test_checkpoint_argument_is_checked(bench_peers):
    with pytest.raises(ValueError, match="PRESET=PATH"):
        bench_peers.parse_checkpoints(["unet_cifar10_improved=/x.pt"])
    assert bench_peers.parse_checkpoints(["unet_mnist=/x.pt"]) == {"unet_mnist": "/x.pt"}


# ---------------------------------------------------------------------------------------------
# With the peers installed
# ---------------------------------------------------------------------------------------------


@needs_peers
@pytest.mark.parametrize("preset", configs.PRESETS)
def test_peer_networks_match_the_presets_size(preset):
    """diffusers' UNet2DModel built from the preset is Ho et al.'s network: the same parameter count to the
    last weight; lucidrains' chosen Unet is within 10% in parameters."""
    from denoising_diffusion_pytorch import Unet
    from diffusers import UNet2DModel

    kw = configs.package_kwargs(preset)
    n = count_parameters(build_model(**kw))
    assert count_parameters(UNet2DModel(**configs.diffusers_unet_kwargs(kw))) == n
    lucid = count_parameters(Unet(**configs.lucidrains_unet_kwargs(preset, kw)))
    assert abs(lucid / n - 1) < 0.10


@needs_peers
def test_peer_training_steps_and_sampling_loops_run(tmp_path):
    """Each library's step trains (finite loss, weights move); each DDIM-50 loop returns finite images of the
    right shape from the one shared network."""
    training = importlib.import_module("peers.training")
    sampling = importlib.import_module("peers.sampling")
    kw = configs.package_kwargs("unet_mnist", tiny=True)
    data = training.load_data(kw)
    mode = configs.resolve_mode("cpu")
    for lib in ("diffusers", "lucidrains", "diffusion_edu"):
        bench = training.build_step(lib, "unet_mnist", kw, data, 2, torch.device("cpu"), mode)
        before = [p.detach().clone() for p in bench.model.parameters()]
        loss = bench.step()
        assert torch.isfinite(loss)
        assert any(not torch.equal(a, b) for a, b in zip(before, bench.model.parameters())), lib
    net = build_model(**kw)
    loops = sampling.sampling_loops(net, 2, torch.device("cpu"), mode, ["diffusion_edu", "diffusers", "lucidrains"])
    assert set(loops) == {"bare", "diffusion_edu", "diffusers", "lucidrains"}
    for name, loop in loops.items():
        x = loop()
        assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all(), name
