"""Training on several processes: DistributedDataParallel on gloo (CPU), launched the two ways a reader
would, torch.multiprocessing (processes that join a process group and call train()) and torchrun.

What is pinned: two processes with the same global batch train the single-process run (same batches,
t, eps, flips and label drops; the gradient average is the global batch's gradient); every process
holds the same weights and EMA; process 0 alone writes files and runs callbacks; a resume with the
same process count is exact, dropout included; a two-process checkpoint resumed by one process
continues the same run; a NaN on one process stops all of them at its step; a global batch the
process count does not divide is refused before any process waits for another; the benchmark runs.
The networks are test_training.py's TinyNet (and a tiny Report E U-Net for torchrun), a few steps each.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from diffusion_edu import NonFiniteLossError, train
from diffusion_edu.checkpoint import load_checkpoint
from diffusion_edu.cli import main as cli_main
from diffusion_edu.distributed import DistributedLaunchError, check_global_batch, dropout_seed, launch
from diffusion_edu.losses import discriminator_term
from diffusion_edu.seeding import derived_seed

sys.path.insert(0, os.path.dirname(__file__))
from _torchrun import run_torchrun  # noqa: E402
from test_training import TinyNet, _NaNAfter, _weights, tiny_config, tiny_net  # noqa: E402

# Every random stream of the loop but dropout (flips, label drops, t, eps, the data order), warm-up,
# clipping, EMA, sample grids; 12 steps of a global batch of 8 cross an epoch boundary at step 8.
EXACT = dict(
    hflip=True,
    p_uncond=0.3,
    warmup_steps=5,
    grad_clip=0.5,
    ema_start=2,
    sample_every=6,
    sample_n=4,
    sample_steps=3,
    callback_every=4,
)
# Floating-point tolerance for one process vs two: the two differ only in how the batch mean of the
# gradient is summed (one mean of 8 vs the mean of two means of 4).
ATOL = 1e-6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jobs() -> list[tuple[str, dict, float, int | None]]:
    """(out_dir name, config changes, TinyNet dropout, steps of a first, interrupted call or None)."""
    return [
        ("two", dict(EXACT), 0.0, None),
        ("half", dict(EXACT, steps=8), 0.0, None),
        ("drop", dict(EXACT), 0.1, None),
        ("drop_cut", dict(EXACT), 0.1, 8),
    ]


class _Bar:
    """Stands in for tqdm in the worker: records whether each process's bar was enabled."""

    enabled: list[bool] = []

    def __init__(self, *args, disable=False, **kwargs):
        _Bar.enabled.append(not disable)

    def update(self, n=1):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


def _worker(rank: int, world: int, port: int, root: str) -> None:
    """One process of a 2-process group: the jobs above, with counters on every file writer."""
    import tqdm.auto

    from diffusion_edu import training

    torch.set_num_threads(1)
    counts = {"checkpoints": 0, "grids": 0, "callbacks": 0}
    save_checkpoint, save_samples = training.save_checkpoint, training._save_samples

    def counted_save(*args):
        counts["checkpoints"] += 1
        return save_checkpoint(*args)

    def counted_samples(*args):
        counts["grids"] += 1
        return save_samples(*args)

    def callback(step, model, ema):
        counts["callbacks"] += 1

    training.save_checkpoint, training._save_samples, tqdm.auto.tqdm = counted_save, counted_samples, _Bar
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for name, changes, dropout, first in _jobs():
            for k in counts:
                counts[k] = 0
            _Bar.enabled.clear()
            cfg = tiny_config(**changes)
            if first is not None:
                train(
                    cfg.replace(steps=first),
                    Path(root, name),
                    model=tiny_net(num_classes=10, dropout=dropout),
                    progress=False,
                    callbacks=callback,
                )
            net = tiny_net(num_classes=10, dropout=dropout)
            result = train(cfg, Path(root, name), model=net, progress=True, callbacks=callback)
            torch.save(
                {
                    "model": _weights(result.model),
                    "ema": _weights(result.ema),
                    "counts": dict(counts),
                    "bars": list(_Bar.enabled),
                    "step": result.step,
                    "labels": net.seen_labels,
                },
                Path(root, f"{name}.rank{rank}.pt"),
            )
        # A loss that turns NaN at step 6 on process 1 only (log_every=8: read back at step 8).
        net = _NaNAfter(bad_call=6) if rank == 1 else TinyNet()
        try:
            train(tiny_config(log_every=8, checkpoint_every=4), Path(root, "nan"), model=net, progress=False)
            message = "no error"
        except NonFiniteLossError as e:
            message = str(e)
        Path(root, f"nan.rank{rank}.txt").write_text(message)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The two-process runs (one spawn of two processes) and their single-process counterparts."""
    root = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, free_port(), str(root)), nprocs=2, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = tiny_net(num_classes=10, dropout=0.0)
        train(tiny_config(**EXACT), root / "one", model=net, progress=False)
        torch.save(net.seen_labels, root / "one.labels.pt")
        shutil.copytree(root / "half", root / "half_then_one")
        train(tiny_config(**EXACT), root / "half_then_one", model=tiny_net(num_classes=10, dropout=0.0), progress=False)
    finally:
        torch.set_num_threads(threads)
    return root


def _load(root: Path, name: str, rank: int = 0) -> dict:
    return torch.load(root / f"{name}.rank{rank}.pt", weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]


def test_two_processes_train_the_single_process_run(runs):
    """Same global batch, same data: the two-process weights, EMA and logged losses are the single
    process's within floating-point rounding, and the run's noise stream and data order are in the
    same state (every process drew the whole global batch's flips, label drops, t and eps)."""
    one = load_checkpoint(runs / "one" / "checkpoint.pt")
    two = load_checkpoint(runs / "two" / "checkpoint.pt")
    assert one["step"] == two["step"] == 12
    assert _max_diff(one["model"], two["model"]) < ATOL and _max_diff(one["ema"], two["ema"]) < ATOL
    assert _max_diff(tiny_net(num_classes=10).state_dict(), two["model"]) > 1000 * ATOL  # guard: it trained
    assert _losses(runs / "two") == pytest.approx(_losses(runs / "one"), rel=1e-5)
    assert torch.equal(one["rng"]["generator"], two["rng"]["generator"])
    assert one["data_order"] == two["data_order"]
    assert one["optimizer"]["state"].keys() == two["optimizer"]["state"].keys()


def test_each_process_trains_on_its_half_of_the_single_process_batch(runs):
    """The data order and the label drops are the global batch's: at every step process 0 sees the
    first half of the single-process batch's labels (dropped ones included) and process 1 the second."""
    one = torch.load(runs / "one.labels.pt", weights_only=True)
    r0, r1 = _load(runs, "two", 0)["labels"], _load(runs, "two", 1)["labels"]
    assert len(one) == len(r0) == len(r1) == 12
    assert all(a.shape == (4,) and b.shape == (4,) for a, b in zip(r0, r1))
    assert all(torch.equal(torch.cat([a, b]), c) for a, b, c in zip(r0, r1, one))
    assert any((c == 10).any() for c in one) and not all(torch.equal(one[0], c) for c in one[1:])  # guards


def test_every_process_holds_the_same_weights_and_ema(runs):
    """DDP averages the gradients, so every process takes the same step; the EMA follows those weights."""
    for name in ("two", "drop", "drop_cut"):
        r0, r1 = _load(runs, name, 0), _load(runs, name, 1)
        assert r0["step"] == r1["step"] == 12
        for key in ("model", "ema"):
            assert all(torch.equal(r0[key][k], r1[key][k]) for k in r0[key])


def test_process_0_alone_writes_files_shows_progress_and_runs_callbacks(runs):
    """Exactly one checkpoint (three saves, steps 4, 8, 12), one log, two sample grids and three callback
    calls, all from process 0; the other process writes nothing and shows no progress bar. The output
    folder holds the same files as a single-process run's."""
    r0, r1 = _load(runs, "two", 0), _load(runs, "two", 1)
    assert r0["counts"] == {"checkpoints": 3, "grids": 2, "callbacks": 3}
    assert r1["counts"] == {"checkpoints": 0, "grids": 0, "callbacks": 0}
    assert r0["bars"] == [True] and r1["bars"] == [False]
    for name in ("two", "one"):
        out = runs / name
        assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "log.jsonl", "samples"]
        assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_0000006.png", "step_0000012.png"]
        assert [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()] == [2, 4, 6, 8, 10, 12]


def test_a_non_finite_loss_on_one_process_stops_every_process_at_that_step(runs):
    """The loss became NaN on process 1 at step 6 (process 0's own loss only at step 7, after the NaN
    gradient was averaged in): both processes stop with step 6, and the checkpoint of step 4 stays."""
    for rank in (0, 1):
        assert (runs / f"nan.rank{rank}.txt").read_text() == (
            f"the loss became nan at step 6: training stopped; the last good checkpoint (step 4) is kept at "
            f"{runs / 'nan' / 'checkpoint.pt'}"
        )
    state = load_checkpoint(runs / "nan" / "checkpoint.pt")
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_resume_with_the_same_process_count_is_exact_dropout_included(runs):
    """A two-process run stopped at step 8 and resumed by two processes ends bit for bit where the
    uninterrupted run ends: each process continues its own dropout stream (saved per process in the
    checkpoint), and the streams of the two processes differ."""
    cut, full = load_checkpoint(runs / "drop_cut" / "checkpoint.pt"), load_checkpoint(runs / "drop" / "checkpoint.pt")
    assert cut["step"] == full["step"] == 12 and cut["world_size"] == 2
    for key in ("model", "ema"):
        assert all(torch.equal(cut[key][k], full[key][k]) for k in full[key])
    opt_a, opt_b = cut["optimizer"]["state"], full["optimizer"]["state"]
    assert all(torch.equal(opt_a[i][k], opt_b[i][k]) for i in opt_a for k in opt_a[i])
    assert _losses(runs / "drop_cut") == _losses(runs / "drop")
    streams = full["rng_per_process"]
    assert len(streams) == 2 and not torch.equal(streams[0]["torch"], streams[1]["torch"])
    assert torch.equal(streams[0]["torch"], full["rng"]["torch"])  # process 0's is the checkpoint's own
    assert _max_diff(full["model"], load_checkpoint(runs / "two" / "checkpoint.pt")["model"]) > 1000 * ATOL


def test_a_two_process_checkpoint_resumed_by_one_process_continues_the_run(runs):
    """The rule for another process count: weights, optimizer, step, data order and noise stream carry
    over, the new process count only re-slices the global batch. Without dropout, 8 steps on two
    processes then 4 on one end where 12 on one (or two) processes end; the log continues at step 10
    and the checkpoint is a single-process one again."""
    half = load_checkpoint(runs / "half" / "checkpoint.pt")
    assert half["step"] == 8 and half["world_size"] == 2
    resumed = load_checkpoint(runs / "half_then_one" / "checkpoint.pt")
    one = load_checkpoint(runs / "one" / "checkpoint.pt")
    assert resumed["step"] == 12 and "rng_per_process" not in resumed and "world_size" not in resumed
    assert _max_diff(resumed["model"], one["model"]) < ATOL and _max_diff(resumed["ema"], one["ema"]) < ATOL
    assert [json.loads(ln)["step"] for ln in (runs / "half_then_one" / "log.jsonl").read_text().splitlines()] == [
        2,
        4,
        6,
        8,
        10,
        12,
    ]
    assert _losses(runs / "half_then_one") == pytest.approx(_losses(runs / "one"), rel=1e-5)


def test_a_plain_run_has_no_process_group(tmp_path, monkeypatch):
    """Without torchrun's environment variables nothing distributed happens: no group, no extra keys."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    with launch("cpu", 7) as (ctx, device):  # an odd batch is fine for one process
        assert ctx is None and device == torch.device("cpu") and not dist.is_initialized()
    assert dropout_seed(5) == derived_seed(5, "dropout")  # process 0 at step 0: the single-process stream
    assert len({dropout_seed(5, 0), dropout_seed(5, 1), dropout_seed(5, 1, 8)}) == 3


def test_bad_launches_fail_before_joining_the_group(monkeypatch):
    """A global batch the process count does not divide, one GPU named for several processes, or MPS:
    each is refused with the reason, before the process waits for the others."""
    assert check_global_batch(8, 2) == 4
    with pytest.raises(
        DistributedLaunchError,
        match=r"batch_size=7 is the global batch .* divisible by the "
        r"number of processes \(2\); use batch_size=6 or 8",
    ):
        check_global_batch(7, 2)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    for device, batch, message in [
        ("cpu", 7, "batch_size=7"),
        ("cuda:1", 8, "names one GPU"),
        ("mps", 8, "MPS has no multi-process backend"),
    ]:
        with pytest.raises(DistributedLaunchError, match=message):
            with launch(device, batch):
                pass
        assert not dist.is_initialized()


def test_the_discriminator_term_of_slices_averages_to_the_global_batch_term():
    """Report A's term averages over the images whose label was kept; each process passes the global
    count / N, so the mean of the processes' terms is the global batch's term."""
    gen = torch.Generator().manual_seed(0)
    d = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = torch.randn(8, 1, 4, 4, generator=gen)
    y = torch.tensor([0, 3, 1, 3, 3, 2, 0, 1])  # 3 is the null label: five labels kept, 1 + 4 per half
    whole = discriminator_term(d, x, y, 3)
    kept = (y != 3).sum() / 2
    halves = [discriminator_term(d, x[s], y[s], 3, kept) for s in (slice(0, 4), slice(4, 8))]
    assert torch.allclose((halves[0] + halves[1]) / 2, whole)
    plain = [discriminator_term(d, x[s], y[s], 3) for s in (slice(0, 4), slice(4, 8))]
    assert not torch.allclose((plain[0] + plain[1]) / 2, whole)  # guard: per-slice means would be wrong


def _torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return run_torchrun(args, tmp_path, env)


# The preset's own network (Report E's small U-Net) made tiny: no dropout, so one process = two.
TINY_CLI = [
    "--preset",
    "quick_mnist",
    "--device",
    "cpu",
    "--steps",
    "4",
    "--threads",
    "1",
    "--no-progress",
    "--set",
    "subset=64",
    "--set",
    "batch_size=8",
    "--set",
    "sample_every=0",
    "--set",
    "log_every=2",
    "--set",
    "model_kwargs.ch=4",
    "--set",
    "model_kwargs.time_dim=8",
]


def test_torchrun_runs_the_train_command_on_two_processes(tmp_path, capsys):
    """`torchrun --nproc_per_node 2 -m diffusion_edu train --preset ...` trains the run that the plain
    command trains, and only process 0 prints."""
    proc = _torchrun(["train", *TINY_CLI, "--out", "two"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("training preset 'quick_mnist'") == 1
    assert [json.loads(ln)["step"] for ln in proc.stdout.splitlines() if ln.startswith("{")] == [4]
    threads = torch.get_num_threads()
    try:
        assert cli_main(["train", *TINY_CLI, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    one, two = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("one", "two"))
    assert _max_diff(one["model"], two["model"]) < ATOL and two["world_size"] == 2
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-5)


def test_a_torchrun_launch_past_its_time_limit_fails_with_the_reason_and_leaves_no_process(tmp_path):
    """The launcher the torchrun tests share: a launch that is still running at its limit fails the test
    (it does not hang CI), and every process it started, workers included, is gone afterwards."""
    tag = f"late-{os.getpid()}-{tmp_path.name}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with pytest.raises(pytest.fail.Exception, match="torchrun did not finish in 1 s"):
        run_torchrun(["train", *TINY_CLI, "--steps", "100000", "--out", tag], tmp_path, env, timeout=1)
    alive = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and tag in (proc / "cmdline").read_bytes().decode(errors="replace"):
                alive.append(proc.name)
        except OSError:
            continue
    assert alive == []


def test_torchrun_with_a_global_batch_it_cannot_split_exits_with_the_reason(tmp_path):
    proc = _torchrun(["train", *TINY_CLI, "--set", "batch_size=7", "--out", "bad"], tmp_path)
    assert proc.returncode != 0
    assert "error: TrainConfig.batch_size=7 is the global batch" in proc.stderr
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()


def test_the_ddp_benchmark_writes_a_results_file(tmp_path, monkeypatch):
    """benchmarks/bench_ddp.py is where the scaling is measured: at toy size it still launches one plain
    process and a two-process gloo group and writes the efficiency img/s(2) / (2 img/s(1))."""
    from diffusion_edu.results import read_results

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_ddp

    out = tmp_path / "ddp.json"
    assert (
        bench_ddp.main(
            [
                "--presets",
                "d_cnn",
                "--device",
                "cpu",
                "--nprocs",
                "2",
                "--modes",
                "strong",
                "--batch",
                "8",
                "--steps",
                "1",
                "--windows",
                "1",
                "--warmup",
                "0",
                "--no-threads-reference",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    record = read_results(out)
    assert record["name"] == "benchmarks/ddp_cpu" and record["config"]["nprocs"] == [1, 2]
    d_cnn = record["data"]["presets"]["d_cnn"]
    one, two = d_cnn["strong"]["n_1"], d_cnn["strong"]["n_2"]
    assert (one["backend"], one["per_process_batch"], two["backend"], two["per_process_batch"]) == (None, 8, "gloo", 4)
    assert one["global_batch"] == two["global_batch"] == 8
    assert d_cnn["strong_efficiency"]["n_2"] == round(two["img_per_s"] / (2 * one["img_per_s"]), 3)
