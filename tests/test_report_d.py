"""Report D's experiments: the parts run at the smoke tier and write what the chapter and the ledger read;
the helpers they add (epoch scaling, step changes, linear probes, the matched x_T prior) and the cold-
diffusion property the chapter derives (Algorithm 2 stays consistent with its observation) are pinned."""

from __future__ import annotations

import os

import pytest
import torch

from diffusion_edu import RowColumnAveraging, cold_sample, make_schedule
from diffusion_edu.data import load_embedded_mnist
from diffusion_edu.experiments import evaluation, report_d
from diffusion_edu.experiments.common import result_path, tier_results_dir
from diffusion_edu.ledger import ENTRIES, _lookup
from diffusion_edu.pretrained import PRETRAINED_DIR
from diffusion_edu.results import read_results

PARTS = ("curves", "samples", "cold", "comparison", "pretrained")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Every Report D part at the smoke tier, once, in a throwaway checkout (training first)."""
    root = tmp_path_factory.mktemp("report_d")
    old = os.environ.get("DIFFUSION_EDU_RESULTS")
    os.environ["DIFFUSION_EDU_RESULTS"] = str(root / "results")
    shipped = {p.name: p.stat().st_mtime_ns for p in PRETRAINED_DIR.glob("*.pt")}
    try:
        torch.manual_seed(0)
        for part in ("training", *PARTS):
            report_d.PARTS[part].run("smoke", False)
        records = {part: read_results(result_path("report_d", part, "smoke")) for part in ("training", *PARTS)}
        records["shipped_before"] = shipped
        yield records
    finally:
        if old is None:
            del os.environ["DIFFUSION_EDU_RESULTS"]
        else:
            os.environ["DIFFUSION_EDU_RESULTS"] = old


def test_parts_write_smoke_results_outside_results(smoke):
    """Smoke numbers mean nothing: the files are smoke-tier and live under runs/smoke/results, never results/."""
    for part in ("training", *PARTS):
        record = smoke[part]
        assert record["tier"] == "smoke" and record["name"] == f"report_d/{part}"
        assert "runs/smoke/results" in str(result_path("report_d", part, "smoke"))


def test_ledger_keys_exist_in_the_results(smoke):
    """Every Report D ledger row names a file and key that the parts really write (a renamed key fails here,
    not at the book's build)."""
    rows = [e for e in ENTRIES if e.report == "D"]
    assert len(rows) >= 10
    for e in rows:
        part = e.results.split("/")[1].removesuffix(".json")
        value = _lookup(smoke[part]["data"], e.key)
        if e.judge.__class__.__name__ == "SameOrder":
            names = [n.strip() for n in str(e.report_value).replace(">", "<").split("<")]
            assert set(names) <= set(value), (e.quantity, names, list(value))
        else:
            assert isinstance(value, (float, dict)), (e.quantity, value)


def test_trained_epochs_count_full_passes_from_the_record(smoke):
    """The page's epoch count comes from training.json: steps over batches per epoch (smoke: 6 steps of 16 of
    256 digits = 0.375 epochs; the cpu tier's config: 4,200 steps of 70 batches = DDPM_CPU_EPOCHS = 60)."""
    assert report_d.trained_epochs(smoke["training"], "cnn") == 0.375
    cpu = report_d.config("cnn", "cpu")
    record = {"config": {"runs": {"cnn": cpu.to_dict()}}, "data": {"cnn": {"steps": cpu.steps}}}
    assert report_d.trained_epochs(record, "cnn") == report_d.run_epochs("cnn", "cpu") == report_d.DDPM_CPU_EPOCHS == 60


def test_curves_hold_one_point_per_snapshot_and_the_final_numbers(smoke):
    data = smoke["curves"]["data"]
    assert set(data["runs"]) == set(report_d.CURVE_RUNS)
    for run, rec in data["runs"].items():
        n_snap = len(report_d.store("smoke").snapshots(run))
        assert n_snap >= 2 and rec["step"] == sorted(rec["step"])
        assert len(rec["fid"]) == len(rec["is"]) == len(rec["epoch"]) == n_snap
        assert all(1.0 - 1e-6 <= v <= 10.0 + 1e-6 for v in rec["is"])
        assert len(rec["loss"]["epoch_mean_loss"]) == len(rec["loss"]["epoch_index"]) >= 1
        final = data["final"][run]
        assert final["n_samples"] == report_d.BUDGETS["smoke"].eval_n
        assert abs(sum(final["class_fractions"]) - 1) < 1e-9
        assert (tier_results_dir("smoke") / final["figure"]).is_file()
        assert final["beats_baseline"] in (True, False) and "fid_interval" in final
        assert "fid_interval" not in rec  # the per-epoch points are a trend; only the final numbers carry intervals
    base = data["final_fid_baseline"]
    assert base["n"] == report_d.BUDGETS["smoke"].eval_n and "fitted to the training digits" in base["what"]
    assert set(base["beats"]) == set(report_d.CURVE_RUNS) and "fid_interval" in base


def test_samples_follow_the_reports_epochs(smoke):
    data = smoke["samples"]["data"]
    for rec in data["runs"].values():
        assert len(rec["figures"]) == len(rec["epochs"]) == len(rec["predicted_classes"])
        assert rec["epochs"] == sorted(rec["epochs"]) and rec["epochs"][-1] == rec["n_epochs"]
        assert all((tier_results_dir("smoke") / f).is_file() for f in rec["figures"])


def test_cold_part_covers_every_restorer_both_algorithms(smoke):
    data = smoke["cold"]["data"]
    assert set(data["runs"]) == set(report_d.COLD_RUNS)
    assert {"pixels", "columns/g1", "columns/g4", "rows/g1"} <= set(data["probe"])
    for rec in data["runs"].values():
        assert set(rec["restoration"]) == {"direct", "alg1", "alg2"}
        assert set(rec["generation"]) == {"alg1", "alg2"}
        assert len(rec["step_change"]) == rec["T"]
        # the chapter's derivation, on the trained network: Algorithm 2 keeps D(x_0, T) = x_T
        assert rec["restoration"]["alg2"]["consistency_error"] < 1e-4
        assert rec["generation"]["alg2"]["consistency_error"] < 1e-4
        for key in ("restore_figure", "generate_figure"):
            assert (tier_results_dir("smoke") / rec[key]).is_file()
        # every restoration error carries its interval; the differences between ways are paired intervals
        for way in rec["restoration"].values():
            iv = way["mse_interval"]
            assert iv["low"] <= way["mse"] <= iv["high"] and "fid_interval" in way
        diff = rec["restoration_mse_difference"]
        a1, a2 = rec["restoration"]["alg1"]["mse"], rec["restoration"]["alg2"]["mse"]
        assert diff["alg2_minus_alg1"]["estimate"] == pytest.approx(a2 - a1, abs=1e-6)
        assert set(rec["generation_fid_baseline"]["beats"]) == {"alg1", "alg2"}
    assert set(data["fid_alg2_baseline"]["beats"]) == set(report_d.COLD_RUNS)


def test_comparison_measures_every_model_the_same_way(smoke):
    data = smoke["comparison"]["data"]
    assert "cold_columns_random_alg2" in data["rows"] and data["ddpm_row"] in data["rows"]
    assert any(k.endswith("_matched") for k in data["rows"])
    for row in data["rows"].values():
        assert row["n_samples"] == report_d.BUDGETS["smoke"].eval_n
        assert row["nn_distance_mean"] > 0 and row["nfe"] >= 1
    assert set(data["fid_ddpm_vs_cold"]) == {"gaussian_ddpm", "cold_diffusion"}
    assert set(data["fid_ddpm_vs_cold_interval"]) == set(data["fid_ddpm_vs_cold_baseline"]["beats"])
    assert all("beats_baseline" in row for row in data["rows"].values())


def test_pretrained_export_is_the_trained_cnn_and_never_touches_the_shipped_file(smoke):
    """The smoke tier exports to runs/smoke/pretrained (the package's shipped networks stay as they were); the
    exported file holds exactly the final weights of the GELU CNN run, and loads as a T=1000 DDPM that samples."""
    from diffusion_edu.checkpoint import load_model
    from diffusion_edu.experiments.common import runs_root
    from diffusion_edu.samplers import sample

    assert {p.name: p.stat().st_mtime_ns for p in PRETRAINED_DIR.glob("*.pt")} == smoke["shipped_before"]
    data = smoke["pretrained"]["data"]
    assert data["source"]["run"] == report_d.pretrained_run("smoke") == "cnn" and data["source"]["tier"] == "smoke"
    path = runs_root("smoke") / "pretrained" / "report_d.pt"
    assert path.is_file() and data["bytes"] == path.stat().st_size
    shipped_net, schedule, cfg = load_model(path, ema=False, device="cpu")
    trained_net, _, _ = report_d.load_run("cnn", "smoke")
    assert (
        schedule.T == 1000
        and cfg.model == "cnn_mnist"
        and data["params"] == sum(p.numel() for p in shipped_net.parameters())
    )
    for (k, a), (_, b) in zip(shipped_net.state_dict().items(), trained_net.state_dict().items()):
        assert torch.equal(a, b), k
    out = sample(shipped_net, schedule, 2, steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 28, 28) and torch.isfinite(out).all()


def test_pretrained_part_measures_what_the_sample_command_draws(smoke):
    """The evaluation of the shipped network: samples drawn with the run's sample_defaults (what `sample` uses),
    metrics with intervals next to the baseline and real digits, and the FID trend over the snapshots."""
    from diffusion_edu.generate import sampler_defaults

    ev = smoke["pretrained"]["data"]["evaluation"]
    cfg = report_d.config("cnn", "smoke")
    assert ev["run"] == "cnn" and ev["shipped"]["settings"] == sampler_defaults(cfg)
    assert ev["shipped"]["n_samples"] == ev["real_digits"]["n_samples"] == ev["n"] == report_d.BUDGETS["smoke"].eval_n
    for rec in (ev["shipped"], ev["real_digits"]):
        assert "fid_interval" in rec and "precision_interval" in rec
    assert ev["real_digits"]["fid"] < ev["shipped"]["fid"]  # a smoke network draws noise
    assert isinstance(ev["shipped"]["beats_baseline"], bool)
    # the report's sampler beside it: all T steps, the same seed, the same n, measured the same way
    every = ev["all_steps"]
    assert every["steps"] == cfg.T != ev["shipped"]["settings"]["steps"] and every["seed"] == ev["shipped"]["seed"]
    assert every["n_samples"] == ev["n"] and "fid_interval" in every
    epochs = ev["trend"]["epoch"]
    last = report_d._snapshots("cnn", "smoke")[-1][0]
    assert epochs == sorted(epochs) and epochs[-1] == last and len(epochs) == len(ev["trend"]["fid"])


def test_the_longer_gelu_runs_differ_from_cnn_only_in_length():
    for tier in ("smoke", "colab", "gpu"):
        assert not set(report_d.CPU_ONLY_RUNS) & set(report_d.runs_at(tier)) and report_d.pretrained_run(tier) == "cnn"
    a = report_d.config("cnn", "cpu").to_dict()
    for run in ("cnn_long", "cnn_report"):
        assert run in report_d.runs_at("cpu")
        b = report_d.config(run, "cpu").to_dict()
        assert {k for k in a if a[k] != b[k]} == {"steps"}, run
    assert (
        report_d.config("cnn_long", "cpu").steps == report_d.LONG_CPU_EPOCHS * report_d.EPOCH_STEPS["cpu"] > a["steps"]
    )
    # the report-scale run takes the report's own steps (100 epochs of 60,000 digits at batch 128), the gpu tier's
    assert report_d.config("cnn_report", "cpu").steps == report_d.REPORT_STEPS == report_d.config("cnn", "gpu").steps
    assert report_d.REPORT_STEPS == 100 * (60_000 // 128)
    # the FID trend keeps its 10-epoch spacing for cnn_long and spaces the report-scale run's 668 epochs wider
    assert report_d.trend_every("cnn_long", "cpu") == report_d.TREND_EVERY
    long_every = report_d.trend_every("cnn_report", "cpu")
    assert (
        long_every > report_d.TREND_EVERY
        and report_d.run_epochs("cnn_report", "cpu") / long_every <= report_d.TREND_POINTS
    )
    # the shipped cpu network trains longer than the colab tier's cnn
    assert report_d.LONG_CPU_EPOCHS > report_d.COLAB_EPOCHS


def test_the_cpu_tier_ships_its_longest_finished_gelu_run(tmp_path, monkeypatch):
    """cnn_report once finished, cnn_long until then (an unfinished checkpoint does not count), else cnn."""
    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path / "results"))
    assert report_d.pretrained_run("cpu") == "cnn"
    _stop_at("cnn_long", report_d.config("cnn_long", "cpu").steps)
    _stop_at("cnn_report", report_d.REPORT_STEPS - 1)
    assert report_d.pretrained_run("cpu") == "cnn_long"
    _stop_at("cnn_report", report_d.REPORT_STEPS)
    assert report_d.pretrained_run("cpu") == "cnn_report"


def _stop_at(run: str, step: int) -> None:
    """A cpu-tier checkpoint of ``run`` at ``step`` (what :meth:`RunStore.status` reads), no weights."""
    from diffusion_edu.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

    runs = report_d.store("cpu")
    runs.folder(run).mkdir(parents=True, exist_ok=True)
    save_checkpoint(runs.checkpoint(run), {"format": CHECKPOINT_FORMAT, "step": step})


def test_real_tiers_never_train_as_a_side_effect(tmp_path, monkeypatch):
    """A cpu-tier evaluation part must stop with the training command, not start a 70-minute run."""
    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path / "results"))
    for part in PARTS:
        with pytest.raises(RuntimeError, match="--only training"):
            report_d.PARTS[part].run("cpu", False)
    assert not (tmp_path / "runs" / "cpu").exists()


def test_a_part_needs_only_its_own_runs_finished(smoke, tmp_path, monkeypatch):
    """Without training.json a real-tier part reads the finished runs it evaluates from their logs, with the
    same loss numbers the training part records; an unfinished run stops it with the training command."""
    import shutil

    from diffusion_edu.experiments.common import runs_root
    from diffusion_edu.experiments.store import RunStore
    from diffusion_edu.experiments.training_runs import make_config

    class SmokeSized(RunStore):  # cpu-tier folders, smoke-tier configs: the copied smoke runs are finished
        def config(self, run):
            return make_config(self.runs[run], "smoke", {})

    smoke_runs = runs_root("smoke") / "report_d"
    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(report_d, "store", lambda tier: SmokeSized("report_d", report_d.RUNS, {}, tier))
    for run in ("cnn", "cnn_selu"):
        shutil.copytree(smoke_runs / run, runs_root("cpu") / "report_d" / run)
    assert report_d.run_finished("cnn", "cpu") and not report_d.run_finished("cold_columns_random", "cpu")
    got = report_d._summaries("cpu", ("cnn", "cnn_selu"))
    for run in ("cnn", "cnn_selu"):
        assert got[run]["final_loss"] == pytest.approx(smoke["training"]["data"][run]["final_loss"], rel=1e-12)
        assert got[run]["curve"]["step"] == smoke["training"]["data"][run]["curve"]["step"]
    with pytest.raises(RuntimeError, match=r"cold_columns_random \(no checkpoint\).*--only training curves"):
        report_d.PARTS["curves"].run("cpu", False)


def test_short_tiers_change_only_the_named_training_settings_of_the_ddpms():
    """Below the gpu tier the two DDPMs keep the report's network, T, loss, optimiser and batch (the gpu tier's
    config, which is the report's) and change only the data, the length, the learning-rate schedule and the
    sampler the `sample` command recommends; the cold restorers keep the report's constant rate."""
    from diffusion_edu.generate import check_sample_defaults

    named = {
        "dataset",
        "steps",
        "callback_every",
        "checkpoint_every",
        "log_every",
        "lr",
        "warmup_steps",
        "lr_schedule",
        "sample_defaults",
    }
    for run in ("cnn", "cnn_selu"):
        report = report_d.config(run, "gpu").to_dict()
        assert report["lr_schedule"] == "constant" and report["ema_decay"] is None
        for tier in ("cpu", "colab"):
            here = report_d.config(run, tier).to_dict()
            changed = {k for k in report if report[k] != here[k]}
            assert changed <= named, (run, tier, changed - named)
            assert here["lr_schedule"] == "cosine" and here["lr"] > report["lr"] and here["ema_decay"] is None
            check_sample_defaults(here["sample_defaults"])
    cpu = report_d.config("cnn", "cpu")
    assert cpu.steps == report_d.DDPM_CPU_EPOCHS * (len(load_embedded_mnist("train")) // cpu.batch_size)
    for run in report_d.COLD_RUNS:
        cfg = report_d.config(run, "cpu")
        assert cfg.lr_schedule == "constant" and cfg.lr == report_d.config(run, "gpu").lr


def test_report_epochs_scale_the_reports_epochs():
    """The report shows epochs 1, 20, 40, 60 and 100 of 100; a 25-epoch run shows 1, 5, 10, 15, 25."""
    assert report_d.report_epochs(100) == [1, 20, 40, 60, 100]
    assert report_d.report_epochs(25) == [1, 5, 10, 15, 25]
    assert report_d.report_epochs(2) == [1, 2]
    assert report_d.report_epochs(1) == [1]
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_epochs"):
            report_d.report_epochs(bad)


@pytest.mark.parametrize(
    "axis,order,group", [("columns", "random", 1), ("rows", "inside-out", 1), ("columns", "outside-in", 4)]
)
def test_step_changes_add_up_to_the_total_loss_of_information(axis, order, group):
    """The D(., t) are nested orthogonal projections, so by Pythagoras the per-step changes sum to
    ||x - D(x, t)||^2 for every t."""
    D = RowColumnAveraging(axis, order, group)
    x, _ = load_embedded_mnist("heldout").batch(range(0, 1000, 50))
    steps = torch.tensor(report_d.step_change(D, x), dtype=torch.float64)
    for t in range(1, D.T + 1):
        total = (x - D.degrade(x, t)).double().square().mean()
        assert torch.allclose(steps[:t].sum(), total, rtol=1e-4, atol=1e-7)


def test_outside_in_starts_with_empty_columns():
    """MNIST's outermost columns are blank, so the first outside-in steps change nothing, while the first
    inside-out step (the middle column) removes the most."""
    x, _ = load_embedded_mnist("heldout").tensors()
    out_in = report_d.step_change(RowColumnAveraging("columns", "outside-in"), x)
    in_out = report_d.step_change(RowColumnAveraging("columns", "inside-out"), x)
    assert out_in[0] + out_in[1] < 0.01 * in_out[0] and in_out[0] > 0.01


def test_probe_accuracy_reads_out_what_features_hold():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 4
    centres = 5 * torch.randn(4, 6, generator=g)
    f = centres[y] + 0.1 * torch.randn(400, 6, generator=g)
    assert report_d.probe_accuracy(f[:300], y[:300], f[300:], y[300:]) == 1.0
    noise = torch.randn(400, 6, generator=g)  # features unrelated to the labels
    assert report_d.probe_accuracy(noise[:300], y[:300], noise[300:], y[300:]) < 0.45
    with pytest.raises(ValueError, match="same d"):
        report_d.probe_accuracy(f[:300], y[:300], f[300:, :3], y[300:])
    with pytest.raises(ValueError, match="train_features"):
        report_d.probe_accuracy(f[:300, :, None], y[:300], f[300:], y[300:])


def test_gaussian_data_prior_matches_the_chains_end():
    """x_T drawn with the data's mean and covariance pushed through q(x_T | x_0): mean sqrt(alpha_bar_T) mu,
    per-pixel variance alpha_bar_T var + 1 - alpha_bar_T (T=100 linear: far from N(0, I))."""
    g = torch.Generator().manual_seed(1)
    images = torch.rand(300, 1, 4, 4, generator=g) * 2 - 1 + torch.linspace(-0.5, 0.5, 16).reshape(1, 1, 4, 4)
    schedule = make_schedule("linear", 100)
    ab = float(schedule.alpha_bar[100])
    xT = report_d.gaussian_data_prior(schedule, images, 40_000, generator=g).double()
    assert xT.shape == (40_000, 1, 4, 4)
    mu, var = images.double().mean(0), images.double().var(0, correction=0)
    assert torch.allclose(xT.mean(0), ab**0.5 * mu, atol=0.02)
    assert torch.allclose(xT.var(0), ab * var + 1 - ab, rtol=0.05)
    with pytest.raises(ValueError, match="n"):
        report_d.gaussian_data_prior(schedule, images, 0)


def test_fitted_gaussian_has_the_images_mean_and_covariance():
    """The baseline's draws have the images' empirical mean and (biased) covariance, pixel pairs included;
    it is a yardstick and beats_baseline compares intervals, not point values."""
    g = torch.Generator().manual_seed(2)
    base = torch.rand(200, 1, 2, 2, generator=g)
    images = torch.cat([base[:, :, :1] * 2, base[:, :, :1] + 0.1 * base[:, :, 1:]], dim=2) - 0.5  # correlated
    draws = evaluation.fitted_gaussian(images, 60_000, generator=g)
    X, Y = images.flatten(1).double(), draws.flatten(1)
    assert draws.shape == (60_000, 1, 2, 2) and draws.dtype == torch.float64
    assert torch.allclose(Y.mean(0), X.mean(0), atol=0.01)
    cov_x = torch.cov(X.T, correction=0)
    assert torch.allclose(torch.cov(Y.T, correction=0), cov_x, atol=0.01)
    assert cov_x[0, 2] > 0.1  # the test would not see a diagonal-only fit otherwise
    with pytest.raises(ValueError, match="n"):
        evaluation.fitted_gaussian(images, 0)
    iv = {"estimate": 1.0, "level": 0.95, "method": "m", "n_boot": 10, "n": 5}
    base_rec = {"fid_interval": {**iv, "low": 10.0, "high": 12.0}}
    assert evaluation.beats_baseline({"fid_interval": {**iv, "low": 5.0, "high": 9.9}}, base_rec) is True
    assert evaluation.beats_baseline({"fid_interval": {**iv, "low": 5.0, "high": 10.0}}, base_rec) is False
    assert evaluation.beats_baseline({"fid": 1.0}, base_rec) is None


def test_reads_as_digits_claims_digits_only_when_the_whole_interval_is_under_the_line():
    """The digits verdict of chapter 4 comes from the FID interval against DIGITS_WITHIN times the floor: a
    point estimate under the line with an interval across it is "undecided", not "digits"."""
    from _records import interval

    floor = 4.0  # the line is at 80
    verdict = evaluation.reads_as_digits
    assert verdict({"fid_interval": interval(70.0, 60.0, 80.0, n=500)}, floor) == "digits"
    assert verdict({"fid_interval": interval(78.0, 70.0, 86.0, n=500)}, floor) == "undecided"
    assert verdict({"fid_interval": interval(90.0, 80.5, 99.0, n=500)}, floor) == "strokes"
    assert verdict({"fid_interval": interval(90.0, 80.5, 99.0, n=500)}, floor, within=30) == "digits"
    assert verdict({"fid": 70.0}, floor) is None
    for bad in (0.0, -1.0, float("nan"), None):
        with pytest.raises(ValueError, match="floor_fid"):
            verdict({"fid_interval": interval(70.0, 60.0, 80.0)}, bad)
    with pytest.raises(ValueError, match="within"):
        verdict({"fid_interval": interval(70.0, 60.0, 80.0)}, floor, within=0)


class _RandomRestorer(torch.nn.Module):
    """A restorer that is wrong in an arbitrary, input-dependent way (a random convolution)."""

    parameterization = "x0"

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(1, 1, 5, padding=2)

    def forward(self, x, t):
        return torch.tanh(self.conv(x) + 0.01 * t.float().reshape(-1, 1, 1, 1))


@pytest.mark.parametrize("axis,group", [("columns", 1), ("rows", 4)])
def test_algorithm_2_stays_consistent_with_the_observation(axis, group):
    """The chapter's derivation: for any restorer, every Algorithm 2 iterate satisfies D(x_s, T) = x_T and a
    step changes only the line (block) it restores; Algorithm 1 gives no such guarantee."""
    D = RowColumnAveraging(axis, "random", group)
    x0, _ = load_embedded_mnist("heldout").batch(range(0, 1000, 100))
    x_T = D.degrade(x0, D.T)
    R = _RandomRestorer()
    out2, traj = cold_sample(R, D, x_T, algorithm=2, trajectory_every=1)
    for xs in traj.xt:
        assert (D.degrade(xs, D.T) - x_T).abs().max() < 1e-5
    for k, s in enumerate(traj.t[:-1]):  # step s: x_s -> x_{s-1}
        changed = (traj.xt[k + 1] - traj.xt[k]).abs().amax(dim=(0, 1))  # (H, W)
        line = D.order[s - 1] - 1  # 0-based block restored at step s
        lines = (
            changed.reshape(D.n_lines, group, 28).amax((1, 2))
            if axis == "rows"
            else changed.reshape(28, D.n_lines, group).amax((0, 2))
        )
        assert lines[line] > 1e-3 and all(lines[b] < 1e-5 for b in range(D.n_lines) if b != line)
    out1 = cold_sample(R, D, x_T, algorithm=1)
    assert (D.degrade(out1, D.T) - x_T).abs().max() > 1e-2
    assert (D.degrade(out2, D.T) - x_T).abs().max() < 1e-5


def test_generate_clamps_and_uses_the_right_sampler():
    g = torch.Generator().manual_seed(0)
    D = RowColumnAveraging("columns", "random", 4)
    x_T = D.degrade(load_embedded_mnist("heldout").batch(range(3))[0], D.T)
    out = report_d.generate(_RandomRestorer(), D, 3, generator=g, x_T=x_T, algorithm=2)
    assert torch.allclose(out, cold_sample(_RandomRestorer(), D, x_T, algorithm=2).clamp(-1, 1))


def test_the_colab_tier_keeps_the_shipped_network_trained_longer(tmp_path, monkeypatch):
    """At the colab tier the pretrained part measures the colab run but does not replace the package's network
    (the cpu tier's cnn_long trained more steps); the cpu and gpu tiers ship theirs."""
    from diffusion_edu.experiments.store import Cache

    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path / "results"))
    asked = {}

    def fake_ship(store, run, cache=None, keep_shipped=False, **source):
        asked[store.tier] = (run, keep_shipped)
        return {"source": {"run": run}}, report_d.config(run, store.tier)

    monkeypatch.setattr(report_d, "ship_pretrained", fake_ship)
    monkeypatch.setattr(report_d, "_shipped_evaluation", lambda run, tier, progress, cache: {"run": run})
    _stop_at("cnn_long", report_d.config("cnn_long", "cpu").steps)  # the cpu tier ships its longest finished run
    for tier in ("colab", "cpu", "gpu"):
        report_d._pretrained(tier, False, Cache())
    assert asked == {"colab": ("cnn", True), "cpu": ("cnn_long", False), "gpu": ("cnn", False)}
    assert report_d.config("cnn", "colab").steps < report_d.config("cnn_long", "cpu").steps
