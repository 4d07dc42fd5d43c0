"""Report A's chapter: its parts run end to end at the smoke tier and write what the notebook and the
ledger read; the helpers they are built from are pinned by their properties.

The parts run once per module in a temporary checkout (``$DIFFUSION_EDU_RESULTS``), so the test never
touches the book's own ``results/`` or ``runs/`` and can run beside the notebooks under xdist.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from diffusion_edu import make_schedule, q_posterior
from diffusion_edu.experiments import report_a as A
from diffusion_edu.experiments.common import result_path
from diffusion_edu.experiments.store import Cache
from diffusion_edu.ledger import ENTRIES, _lookup
from diffusion_edu.results import read_results

pytestmark = pytest.mark.filterwarnings("ignore:FID from:UserWarning")  # smoke: tens of samples

PARTS_AFTER_TRAINING = [p for p in A.PARTS if p != "training"]


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    """Every part of the chapter at the smoke tier, in a throwaway checkout: {part: results record}."""
    root = tmp_path_factory.mktemp("book")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFUSION_EDU_RESULTS", str(root / "results"))
        torch.set_num_threads(1)
        cache = Cache()  # one chapter run: each network loaded, each setting drawn, once
        images = []  # the batch size of every network call made by the evaluation parts
        for name, part in A.PARTS.items():
            part.run("smoke", False, cache)
            if name == "training":
                for run in A.runs_at("smoke"):
                    A.load_run(run, "smoke", cache)[0].register_forward_hook(
                        lambda m, args, out: images.append(len(args[0]))
                    )
        records = {p: read_results(result_path(A.CHAPTER, p, "smoke")) for p in A.PARTS}
        records["_root"] = root
        records["_network_images"] = sum(images)
        records["_draws"] = {(run, sampler, n) for _, run, tier, sampler, n in cache.keys("samples") if tier == "smoke"}
        yield records


def test_parts_write_smoke_results_outside_results(smoke_results):
    """Smoke numbers never land in results/: each part wrote runs/smoke/results/report_a/<part>.json."""
    root = smoke_results["_root"]
    assert not (root / "results" / "report_a").exists()
    for part in A.PARTS:
        assert smoke_results[part]["tier"] == "smoke"
        assert (root / "runs" / "smoke" / "results" / "report_a" / f"{part}.json").is_file()


def test_results_hold_what_the_notebook_reads(smoke_results):
    """The keys the chapter's tables, plots and figures use, with one number per setting."""
    d = smoke_results["denoisers"]["data"]
    assert set(d["fid"]) == {"unet", "autoencoder", "vae"} and d["params"]["unet"] > 0
    assert all(d["settings"][r]["training"]["steps"] == 6 for r in d["fid"])
    for part in ("denoisers", "parameterization", "conditioning"):  # the metric columns never replace the header
        head = smoke_results[part]["data"]
        assert head["n"] == A.samples_per_setting("smoke") and isinstance(head["sampler"], str), part
        assert "run" not in head and "figure" not in head, part
    p = smoke_results["parameterization"]["data"]
    assert set(p["fid"]) == {"eps", "mu"} and p["bound"]["t"] == list(A.KL_TIMESTEPS)
    assert all(len(p["bound"][k]["L"]) == len(A.KL_TIMESTEPS) for k in ("eps", "mu"))
    s = smoke_results["schedules"]["data"]
    assert (
        set(s["protocols"]) == {"book", "no_clip", "report", "book_full", "report_full"}
        and s["fid"] == s["protocols"]["book"]["fid"]
    )
    full = s["protocols"]["report_full"]
    assert full["n"] == A.protocol_samples("smoke", "report_full") and set(full["fid"]) == set(A.SCHEDULE_RUNS)
    assert smoke_results["schedules"]["config"]["protocols"]["report_full"]["steps"] == A.BUDGETS["smoke"].full_steps
    for where in (s, *s["protocols"].values()):  # every ranking carries the baseline it must beat, at its own n
        assert set(where["fid_baseline"]["beats"]) == set(A.SCHEDULE_RUNS) and "fid_interval" in where["fid_baseline"]
    assert full["fid_baseline"]["n"] == A.protocol_samples("smoke", "report_full") and s["fid_baseline"][
        "n"
    ] == A.samples_per_setting("smoke")
    assert set(p["full"]["fid"]) == {"eps", "mu"} and p["full"]["n"] == A.full_samples("smoke")
    assert set(p["full"]["fid_interval"]) == {"eps", "mu"} and set(p["full"]["fid_baseline"]["beats"]) == {"eps", "mu"}
    for name in A.SCHEDULE_RUNS:
        diag = s["diagnostics"][name]
        assert diag["full"]["unclipped"]["gain"] == pytest.approx(float(make_schedule(name, 400).alphas[400]) ** -0.5)
    c = smoke_results["conditioning"]["data"]
    assert set(c["conditional_accuracy"]) == set(c["knn_accuracy"]) == {"unet", "unet_disc"}
    assert c["disc_weight"]["unet"] == 0 and c["disc_weight"]["unet_disc"] > 0 and 0.5 < c["judges"]["knn_heldout"] <= 1
    f = smoke_results["fast_sampling"]["data"]
    assert f["K"] == list(A.BUDGETS["smoke"].fast_k) and set(f["samplers"]) == set(A.FAST_SAMPLERS)
    assert all(len(f["samplers"][k]["fid"]) == len(f["K"]) for k in f["samplers"])
    for K in f["K"]:  # the ledger judges the sweep from intervals and against the baseline at that K's n
        at = f["by_K"][str(K)]
        assert set(at["fid_interval"]) == set(A.FAST_SAMPLERS) and set(at["recall"]) == set(A.FAST_SAMPLERS)
        assert at["fid_baseline"]["n"] == A.BUDGETS["smoke"].fast_k[K]
    dd = smoke_results["ddim"]["data"]
    assert set(dd["settings"]) == set(A.ddim_settings("smoke")) and dd["T"] == 400
    assert set(dd["steps"]["fid"]) | set(dd["full"]["fid"]) == set(dd["settings"])
    assert all(k.endswith("_full") for k in dd["full"]["fid"]) and "fid_baseline" in dd["full"]
    assert dd["start"]["signal_T"] == pytest.approx(float(make_schedule("linear", 400).alpha_bar[-1]) ** 0.5)
    other = dd["other_network"]  # chapter 5's run is not trained in this throwaway checkout: named, with its command
    assert (
        other["run"] == A.DDIM_OTHER_NETWORK[1]
        and other["missing"] == "no checkpoint"
        and "report_e" in other["command"]
    )
    v = smoke_results["variance"]["data"]
    assert v["full_K"] == max(A.BUDGETS["smoke"].variance_k) and set(v["full"]["fid"]) == {"zero", "beta", "beta_tilde"}
    assert smoke_results["pretrained"]["data"]["bytes"] > 0
    figures = smoke_results["_root"] / "runs" / "smoke" / "results" / "report_a"
    for part in ("denoisers", "parameterization", "conditioning"):
        for rec in smoke_results[part]["data"]["settings"].values():
            assert (figures / rec["figure"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ledger_rows_for_report_a_find_their_numbers(smoke_results, tmp_path):
    """Every Report A ledger entry's key exists in the file its part writes (a renamed key fails here,
    not at the book's build)."""
    rows = [e for e in ENTRIES if e.report == "A"]
    assert len(rows) >= 10
    for e in rows:
        part = e.results.split("/")[1].removesuffix(".json")
        assert e.results.startswith("report_a/") and part in A.PARTS
        if part == "t_range" and int(e.key[1]) not in A.t_values("smoke"):  # a T the smoke tier does not train
            assert e.absent and e.key[1] not in smoke_results[part]["data"]["by_T"]
            continue
        _lookup(smoke_results[part]["data"], e.key)


def test_planned_evaluations_count_what_the_parts_do(smoke_results):
    """The cost the cpu tier's budgets are chosen by (planned_evaluations) is the number of images the
    parts really pass through the networks, and planned_draws lists exactly the settings they draw."""
    planned = A.planned_evaluations("smoke")
    assert smoke_results["_network_images"] == planned["sampling"] + planned["bound"] + planned["first_step"]
    drawn = smoke_results["_draws"]
    assert drawn == A.planned_draws("smoke") and planned["settings"] == len(drawn)
    budget = smoke_results["schedules"]["config"]["chapter_budget"]
    assert budget["planned_evaluations"] == planned and budget["samples_per_setting"] == A.samples_per_setting("smoke")


def test_cpu_budget_counts_whole_classes_and_every_k():
    """The cpu tier measures every K of the issue (5 to 400) and draws whole classes in every setting."""
    cpu = A.BUDGETS["cpu"]
    assert list(cpu.fast_k) == [5, 10, 20, 50, 100, 400] and max(cpu.variance_k) == 400
    counts = [A.samples_per_setting("cpu"), *cpu.fast_k.values(), *cpu.variance_k.values()]
    assert all(n >= 10 and n % 10 == 0 for n in counts)
    assert A.samples_per_setting("cpu") == cpu.samples


def test_same_setting_same_samples(smoke_results):
    """A setting is drawn once per chapter run (one cache), with the same seed: the parts that share it
    report the same numbers."""
    fid = smoke_results["denoisers"]["data"]["fid"]["unet"]
    assert smoke_results["parameterization"]["data"]["fid"]["eps"] == fid
    assert smoke_results["schedules"]["data"]["fid"]["linear"] == fid
    assert smoke_results["conditioning"]["data"]["fid"]["unet"] == fid


# ---- the helpers -------------------------------------------------------------------------------


def test_class_labels_are_balanced_and_interleaved():
    y = A.class_labels(30)
    assert y.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1] and torch.bincount(y).tolist() == [3] * 10
    for bad in (0, 15, 10.0, True):
        with pytest.raises(ValueError, match="n must be a positive multiple of 10"):
            A.class_labels(bad)


def test_sampler_kwargs_follow_the_method():
    """DDPM takes a variance and no eta, DDIM an eta and no variance (sample() refuses the mix)."""
    assert A.Sampler("ddpm", 20, "zero").kwargs() == {
        "method": "ddpm",
        "steps": 20,
        "clip_x0": True,
        "variance": "zero",
    }
    assert A.Sampler("ddim", 5, eta=0.5, clip_x0=False).kwargs() == {
        "method": "ddim",
        "steps": 5,
        "clip_x0": False,
        "eta": 0.5,
    }
    assert A.Sampler("ddpm", None, "beta").describe() == "DDPM, variance beta, clipped x0, all steps"


def test_for_metrics_counts_what_it_repairs():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 0, :4] = torch.tensor([float("nan"), float("inf"), 3.0, -2.0])
    images, stats = A.for_metrics(x)
    assert stats["non_finite"] == pytest.approx(2 / 784) and stats["out_of_range"] == pytest.approx(2 / 784)
    assert stats["max_abs"] == 3.0 and torch.isfinite(images).all() and images.abs().max() == 1.0
    assert images[0, 0, 0, :4].tolist() == [0.0, 1.0, 1.0, -1.0]


class _Constant(nn.Module):
    """A 'network' that outputs zeros (eps = 0): its errors are the noise itself."""

    parameterization = "eps"

    def forward(self, x, t, y=None):
        return torch.zeros_like(x)


class _Oracle(nn.Module):
    """Knows the clean images: outputs the exact eps, or the exact posterior mean (Ho et al. Eq. 7)."""

    def __init__(self, x0, schedule, parameterization):
        super().__init__()
        self.x0, self.schedule, self.parameterization = x0, schedule, parameterization

    def forward(self, xt, t, y=None):
        ab = self.schedule.alpha_bar[t].view(-1, 1, 1, 1).float()
        if self.parameterization == "mu":
            return q_posterior(self.x0.double(), xt.double(), t, self.schedule)[0].float()
        return (xt - ab.sqrt() * self.x0) / (1 - ab).sqrt()


def test_bound_terms_vanish_for_an_oracle_and_follow_ho_eq_12():
    """An exact network has zero bound terms; for eps-prediction L_{t-1} = beta_t / (2 alpha_t (1 - alpha_bar_t))
    ||eps - eps_theta||^2 (Ho et al. Eq. 12 with sigma_t^2 = beta_t), here with eps_theta = 0."""
    schedule = make_schedule("linear", 400)
    x0 = torch.rand(4, 1, 28, 28) * 2 - 1
    ts = (1, 7, 200, 400)
    for p in ("eps", "mu"):
        out = A.bound_terms(_Oracle(x0, schedule, p), schedule, x0, None, ts, torch.Generator().manual_seed(0))
        assert max(out["L"]) < 1e-3 and max(out["eps_mse"]) < 1e-6 and max(out["x0_mse"]) < 1e-6, (p, out)
    out = A.bound_terms(_Constant(), schedule, x0, None, ts, torch.Generator().manual_seed(0))
    for t, L, mse in zip(ts, out["L"], out["eps_mse"]):
        b, a, ab = (float(v[t]) for v in (schedule.betas, schedule.alphas, schedule.alpha_bar))
        assert L == pytest.approx(b / (2 * a * (1 - ab)) * mse * 784, rel=1e-4)
    with pytest.raises(ValueError, match="ts must hold integer steps in 1..T=400"):
        A.bound_terms(_Constant(), schedule, x0, None, (0,))


def test_first_step_gain_is_one_over_sqrt_alpha_T():
    """Without clipping, Eq. 11's mean multiplies x_T - (beta_T / sqrt(1 - alpha_bar_T)) eps_theta by 1/sqrt(alpha_T):
    with eps_theta = 0 the rms of x_{T-1} is exactly that gain times the rms of x_T."""
    x_T = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for name in ("linear", "cosine"):
        schedule = make_schedule(name, 400)
        out = A.first_step(_Constant(), schedule, x_T, None, clip_x0=False)
        assert out["gain"] == pytest.approx(float(schedule.alphas[400]) ** -0.5)
        assert out["rms"] == pytest.approx(out["gain"] * float(x_T.square().mean().sqrt()), rel=1e-5)


def test_nearest_neighbour_judge_returns_a_training_digit_its_own_label():
    from diffusion_edu import load_embedded_mnist

    train = load_embedded_mnist("train")
    idx = torch.tensor([0, 17, 500, 4321])
    images, labels = train.batch(idx)
    assert torch.equal(A.nearest_neighbour_labels(images), labels.to(torch.int64))


def test_missing_checkpoint_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path / "results"))
    with pytest.raises(FileNotFoundError, match="experiment report_a --tier cpu --only training"):
        A.load_run("unet", "cpu")
    with pytest.raises(ValueError, match="run must be one of"):
        A.checkpoint_path("unet_typo", "cpu")


def test_results_files_are_json_with_the_envelope(smoke_results):
    for part in PARTS_AFTER_TRAINING:
        rec = smoke_results[part]
        assert {"config", "hardware", "wall_time_s"} <= set(rec) and rec["config"]["seed"] == A.SEED
        json.dumps(rec, allow_nan=False)  # plain JSON, no NaN


def test_zero_snr_part_compares_the_samplers_on_two_schedule_ends(smoke_results):
    """The part ``zero_snr``: DDIM and the DDPM step on the v-prediction U-Net, on the linear schedule (13% of
    the digit left at T = 400) and rescaled to zero terminal SNR (none left), each at the book's steps and at
    all T, with the baseline beside each pair; the runs differ in the schedule only."""
    rec = smoke_results["zero_snr"]
    d = rec["data"]
    assert list(d["networks"]) == list(A.ZERO_SNR_RUNS) == ["unet_v", "unet_v_zsnr"]
    lin, zs = d["networks"]["unet_v"], d["networks"]["unet_v_zsnr"]
    assert lin["parameterization"] == zs["parameterization"] == "v"
    assert lin["schedule"] == "linear" and zs["schedule"] == "linear+zsnr"
    assert lin["signal_T"] == pytest.approx(make_schedule("linear", 400).alpha_bar[-1].item() ** 0.5)
    assert zs["signal_T"] < 1e-3 < 0.1 < lin["signal_T"]
    for net in (lin, zs):
        assert set(net["steps"]["fid"]) == {"ddim", "ddpm"} and set(net["full"]["fid"]) == {"ddim_full", "ddpm_full"}
        assert all(net["steps"]["fid_interval"][k] for k in ("ddim", "ddpm"))
        assert (
            net["steps"]["fid_baseline"]["n"] == d["n"]["ddim"]
            and net["full"]["fid_baseline"]["n"] == d["n"]["ddim_full"]
        )
        assert (
            net["settings"]["ddim"]["sampler"]["method"] == "ddim"
            and net["settings"]["ddpm"]["sampler"]["method"] == "ddpm"
        )
        assert net["final_loss"] > 0
    runs = rec["config"]["runs"]
    differ = {k for k in runs["unet_v"] if runs["unet_v"][k] != runs["unet_v_zsnr"][k]}
    assert differ == {"schedule_kwargs"} and runs["unet_v_zsnr"]["schedule_kwargs"] == {"zero_terminal_snr": True}


def test_seeds_part_judges_both_rankings_over_training_seeds(smoke_results):
    """The part ``seeds``: each network of the denoisers' and the schedules' rankings on each training seed of
    the tier, seed 0 being the very draw of the parts ``denoisers`` and ``schedules``; with two seeds or more,
    each entry's mean over seeds with its t interval, and the baseline beside it."""
    from diffusion_edu.intervals import interval_from, seed_spread

    d = smoke_results["seeds"]["data"]
    seeds = list(A.training_seeds("smoke"))
    assert d["training_seeds"] == seeds and len(seeds) == A.BUDGETS["smoke"].training_seeds >= 2
    den, sch = d["rankings"]["denoisers"], d["rankings"]["schedules"]
    assert den["runs"]["vae"] == ["vae", "vae_seed1"] and sch["runs"]["cosine"] == ["unet_cosine", "unet_cosine_seed1"]
    for name in ("unet", "autoencoder", "vae"):
        assert den["per_seed"]["0"]["fid"][name] == smoke_results["denoisers"]["data"]["fid"][name]
    for name in A.SCHEDULE_RUNS:
        assert sch["per_seed"]["0"]["fid"][name] == smoke_results["schedules"]["data"]["fid"][name]
    for rec in (den, sch):
        spread = rec["seeds"]
        for name, values in spread["fid_per_seed"].items():
            assert values == [rec["per_seed"][str(s)]["fid"][name] for s in seeds]
            iv = interval_from(spread["fid_interval"][name])
            assert iv.estimate == pytest.approx(seed_spread(values).estimate) and iv.low <= iv.estimate <= iv.high
        assert set(spread["fid_baseline"]["beats"]) == set(spread["fid"])
    assert den["per_seed"]["1"]["fid"]["unet"] != den["per_seed"]["0"]["fid"]["unet"]  # another network


def test_seed_runs_are_trained_at_the_tiers_that_measure_them():
    """The colab tier trains one seed (its half hour), the cpu and gpu tiers three; a seed run differs from its
    base run in the seed only, and names outside the table are refused."""
    assert A.training_seeds("colab") == (0,) and A.training_seeds("cpu") == A.training_seeds("gpu") == (0, 1, 2)
    assert not any("_seed" in r for r in A.runs_at("colab"))
    assert set(A.runs_at("cpu")) == set(A.RUNS) - {A.t_run(s, 1000) for s in A.SCHEDULE_RUNS}
    assert A.part_runs("seeds", "colab") == tuple(A.SEED_BASES) and len(A.part_runs("seeds", "cpu")) == 18
    a, b = A.config("unet_cosine", "cpu").to_dict(), A.config("unet_cosine_seed2", "cpu").to_dict()
    assert {k for k in a if a[k] != b[k]} == {"seed"} and b["seed"] == 2
    with pytest.raises(ValueError, match="base must be one of"):
        A.seed_run("unet_mu", 1)
    with pytest.raises(ValueError, match="seed must be one of"):
        A.seed_run("unet", 3)


def test_t_range_part_ranks_the_schedules_at_each_trained_t(smoke_results):
    """The part ``t_range``: the four schedules at T = 400 (the very draw of the part ``schedules``) and at each
    T of the tier's ``t_range``, each with FID intervals, the baseline and what x_T keeps of the digit."""
    d = smoke_results["t_range"]["data"]
    assert d["T"] == A.t_values("smoke") == [200, 400]
    assert d["by_T"]["400"]["fid"] == {s: smoke_results["schedules"]["data"]["fid"][s] for s in A.SCHEDULE_RUNS}
    for T in d["T"]:
        block = d["by_T"][str(T)]
        assert block["runs"] == {s: A.t_run(s, T) for s in A.SCHEDULE_RUNS}
        assert set(block["fid_interval"]) == set(A.SCHEDULE_RUNS) and set(block["fid_baseline"]["beats"]) == set(
            A.SCHEDULE_RUNS
        )
        for s, run in block["runs"].items():
            cfg = A.config(run, "smoke")
            assert block["alpha_bar_T"][s] == pytest.approx(float(make_schedule(cfg.schedule, T).alpha_bar[-1]))
    # T moves how much of the digit the linear schedule's x_T keeps: 0.132 of its power at T = 200, 0.017 at 400
    assert d["by_T"]["200"]["alpha_bar_T"]["linear"] > 5 * d["by_T"]["400"]["alpha_bar_T"]["linear"]
    assert {e.key for e in ENTRIES if e.results == "report_a/t_range.json"} == {
        ("by_T", str(T), "fid") for T in A.T_RANGE
    }


def test_t_runs_differ_from_their_schedule_run_in_t_only():
    """The cpu tier trains the schedules at T = 200 and 2000, the gpu tier at all three, colab at none."""
    for sched, base in A.SCHEDULE_RUNS.items():
        a = A.config(base, "cpu").to_dict()
        for T in A.T_RANGE:
            b = A.config(A.t_run(sched, T), "cpu").to_dict()
            assert {k for k in a if a[k] != b[k]} == {"T"} and b["T"] == T
    assert A.t_run("linear", 400) == "unet" and A.t_run("cosine", 2000) == "unet_cosine_T2000"
    assert A.t_values("cpu") == [200, 400, 2000] and A.t_values("gpu") == [200, 400, 1000, 2000]
    assert A.t_values("colab") == [400] and A.part_runs("t_range", "colab") == tuple(A.SCHEDULE_RUNS.values())
    with pytest.raises(ValueError, match="schedule must be one of"):
        A.t_run("exponential", 200)
    with pytest.raises(ValueError, match="T must be 400 or one of"):
        A.t_run("linear", 300)


def test_part_runs_cover_every_evaluation_part_and_run():
    assert set(A.PART_RUNS) == set(PARTS_AFTER_TRAINING)
    assert {r for runs in A.PART_RUNS.values() for r in runs} == set(A.RUNS)


def test_unfinished_runs_are_refused_and_named(smoke_results, tmp_path, monkeypatch):
    """With only some cpu-tier runs finished (the queue still training the others), the parts that need
    only finished runs can run; the others raise before measuring anything, naming the unfinished runs
    and the command that trains them; the training summary comes from the finished runs' logs."""
    import shutil

    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path / "results"))
    src = smoke_results["_root"] / "runs" / "smoke" / "report_a" / "unet"
    state = torch.load(src / "checkpoint.pt", weights_only=False)
    steps = A.config("unet", "cpu").steps
    for run, step in (("unet", steps), ("vae", 1)):
        dest = tmp_path / "runs" / "cpu" / "report_a" / run
        dest.mkdir(parents=True)
        torch.save({**state, "step": step}, dest / "checkpoint.pt")
        shutil.copy(src / "log.jsonl", dest / "log.jsonl")
    assert A.run_finished("unet", "cpu") and not A.run_finished("vae", "cpu") and not A.run_finished("unet_mu", "cpu")
    assert A.missing_runs("fast_sampling", "cpu") == {} and A.missing_runs("variance", "cpu") == {}
    assert A.missing_runs("denoisers", "cpu") == {"autoencoder": "no checkpoint", "vae": f"step 1 of {steps:,}"}
    with pytest.raises(RuntimeError, match=r"vae \(step 1 of .*--only training denoisers"):
        A.PARTS["denoisers"].run("cpu", False)
    with pytest.raises(RuntimeError, match=r"unet_quadratic \(no checkpoint\).*--only training schedules"):
        A.PARTS["schedules"].run("cpu", False)
    assert not (tmp_path / "results" / "report_a").exists()  # nothing measured, nothing written
    with pytest.raises(RuntimeError, match="unfinished"):
        A.load_run("vae", "cpu")
    summary = A.training_summary("cpu")
    assert list(summary["data"]) == ["unet"] and set(summary["missing"]) == set(A.runs_at("cpu")) - {"unet"}
    assert summary["data"]["unet"]["steps"] == steps and summary["tier"] == "cpu"
    assert summary["data"]["unet"]["curve"]["loss"] == A.training_curve(src)["loss"]


class _EpsNet(nn.Module):
    parameterization = "eps"

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, std=0.3, generator=torch.Generator().manual_seed(0))

    def forward(self, x, t, y=None):
        return self.conv(x) + t.view(-1, 1, 1, 1).to(x.dtype) / 400


class _MuNet(nn.Module):
    """The posterior mean (Ho et al. Eq. 11, full chain) that an eps network implies: a mu network."""

    parameterization = "mu"

    def __init__(self, eps_net, schedule):
        super().__init__()
        self.eps_net, self.schedule = eps_net, schedule

    def forward(self, x, t, y=None):
        from diffusion_edu import posterior_mean_from_eps

        step = int(t[0])
        assert bool((t == step).all())
        return posterior_mean_from_eps(x.double(), step, self.eps_net(x, t).double(), self.schedule).to(x.dtype)


def test_mu_network_is_sampled_through_the_full_chains_eps():
    """A mu network predicts one step of the full chain: a respaced sampling step of it must be the
    respaced step of the eps network it implies (the samplers convert with schedule.model_betas), so
    Report A's mu run is sampled without a wrapper."""
    from diffusion_edu import ddpm_step, respace

    full = make_schedule("linear", 400)
    eps_net = _EpsNet()
    mu_net = _MuNet(eps_net, full)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for steps in (400, 10):
            short = respace(full, steps)
            for k in (steps, steps // 2, 1):
                want = ddpm_step(eps_net, x, k, short, variance="beta_tilde", clip_x0=True, noise=noise).x_prev
                got = ddpm_step(mu_net, x, k, short, variance="beta_tilde", clip_x0=True, noise=noise).x_prev
                assert torch.allclose(got, want, atol=1e-3), (steps, k)


def test_deterministic_part_holds_what_the_chapter_reads(smoke_results):
    """The part on sigma_t = 0: every variance at every K with its intervals, the real digits' diversity,
    the grids; the network it measures is the shipped one, and its draws are not the chapter's runs'."""
    rec = smoke_results["deterministic"]
    d = rec["data"]
    assert d["K"] == list(A.BUDGETS["smoke"].deterministic_k) and d["full_K"] == max(d["K"])
    assert d["network"]["chapter"] == "report_a" and d["network"]["run"] == "unet"
    for K in map(str, d["K"]):
        b = d["by_K"][K]
        for metric in ("fid", "precision", "recall", "diversity", "diversity_ratio", "conditional_accuracy"):
            assert set(b[metric]) == set(A.DETERMINISTIC_VARIANCES), (K, metric)
        for metric in ("precision", "recall", "diversity"):
            for v, iv in b[f"{metric}_interval"].items():
                assert iv["low"] <= b[metric][v] <= iv["high"], (K, metric, v)
        assert b["diversity_ratio"]["zero"] == pytest.approx(b["diversity"]["zero"] / d["real"]["diversity"])
    real = d["real"]
    assert (
        real["n"] == 1005 and real["diversity_interval"]["low"] < real["diversity"] < real["diversity_interval"]["high"]
    )
    figures = smoke_results["_root"] / "runs" / "smoke" / "results" / "report_a"
    assert all((figures / path).read_bytes()[:4] == b"\x89PNG" for path in d["figures"].values())
    assert d["full"] == d["by_K"][str(d["full_K"])]


def test_diversity_record_is_zero_for_copies_and_grows_with_spread():
    """Within-class diversity: identical samples of each class score 0; spreading them scales it."""
    labels = torch.arange(10).repeat(4)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(10, 8, generator=g)[labels]  # four copies of one point per class
    assert A.diversity_record(base, labels, n_boot=20)["diversity"] == 0.0
    noise = torch.randn(40, 8, generator=g)
    one, two = (A.diversity_record(base + s * noise, labels, n_boot=20)["diversity"] for s in (1.0, 2.0))
    assert two == pytest.approx(2 * one)


def test_matched_start_is_q_of_the_asked_class_and_mean_start_its_average():
    """start_images("matched") is Ho et al. Eq. 4 at t = T of training digits of the asked classes (in
    class_labels' order); "mean" replaces every x0 by the mean digit; "noise" leaves x_T to the sampler."""
    from diffusion_edu import load_embedded_mnist

    sch = make_schedule("linear", 400)
    ab = sch.alpha_bar[-1]
    x_T = A.start_images("matched", sch, 30)
    eps = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(A.SEED + 1))
    x0 = (x_T - (1 - ab).sqrt() * eps) / ab.sqrt()
    train = load_embedded_mnist("train")
    images, labels = train.tensors()
    # each recovered x0 is a training digit, and of the class the sample is asked for
    d = torch.cdist(x0.flatten(1), images.flatten(1))
    nearest = d.argmin(1)
    assert (
        float(d.min(1).values.max()) < 0.1
    )  # float32 rounding over 1 / sqrt(alpha_bar_T) ~ 7; distinct digits lie > 1 apart
    assert torch.equal(labels[nearest], A.class_labels(30))
    mean = A.start_images("mean", sch, 10)
    eps10 = torch.randn(mean.shape, generator=torch.Generator().manual_seed(A.SEED + 1))
    expected = ab.sqrt() * images.mean(0) + (1 - ab).sqrt() * eps10
    assert torch.allclose(mean, expected, atol=1e-5)
    assert A.start_images("noise", sch, 10) is None
    with pytest.raises(ValueError, match="start must be"):
        A.start_images("data", sch, 10)
