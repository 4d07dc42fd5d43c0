"""Faults and bad input through the command line, as a user meets them.

Each case asserts the exit code (2 bad input, 1 environment or failed run, 130 interrupted), a
fragment of the one-line message, that no traceback is printed, and, where a run existed before,
that it is intact. The runs are tiny (a 8-channel U-Net on 32 embedded digits) and run in-process;
only the cases that need a real process (a kill -9 in the middle of a write, a lock held by another
process) start one.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import warnings

import pytest
import torch

from diffusion_edu import TrainConfig, make_schedule, rundir, sample
from diffusion_edu.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from diffusion_edu.cli import main
from diffusion_edu.rundir import RunLock
from diffusion_edu.training import TrainingRun

KWARGS = {"in_channels": 1, "image_size": 28, "ch": 8, "depth": 1, "time_dim": 16, "num_classes": 10}
TRAIN = [
    "train",
    "--preset",
    "quick_mnist",
    "--device",
    "cpu",
    "--no-progress",
    "--threads",
    "1",
    "--set",
    "model=small_unet",
    "--set",
    f"model_kwargs={json.dumps(KWARGS)}",
    "--set",
    "subset=32",
    "--set",
    "batch_size=8",
    "--set",
    "T=20",
    "--set",
    "sample_every=0",
    "--set",
    "log_every=1",
    "--set",
    "checkpoint_every=2",
]


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_cli(capsys, *args: str) -> tuple[int, str]:
    """main(args) -> (exit code, stderr); argparse's own errors (SystemExit) count as their code."""
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def train_args(out, steps: int, *extra: str) -> list[str]:
    return [*TRAIN, "--out", str(out), "--steps", str(steps), *extra]


@pytest.fixture
def finished(tmp_path, capsys):
    """A finished 4-step run (checkpoints at steps 2 and 4) and its files' bytes, to check it stays intact."""
    out = tmp_path / "run"
    assert run_cli(capsys, *train_args(out, 4))[0] == 0
    return out, {p: (out / p).read_bytes() for p in ("checkpoint.pt", "log.jsonl", "config.json")}


def intact(run) -> bool:
    out, files = run
    return all((out / p).read_bytes() == data for p, data in files.items())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A conditional network's checkpoint (2 steps of training: the samples are noise, the path is real)."""
    from diffusion_edu.training import train

    cfg = TrainConfig(
        model="small_unet",
        model_kwargs=KWARGS,
        T=20,
        subset=32,
        batch_size=8,
        steps=2,
        log_every=1,
        checkpoint_every=0,
        callback_every=0,
        sample_every=0,
        device="cpu",
    )
    return train(cfg, tmp_path_factory.mktemp("ckpt") / "run", progress=False).checkpoint


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2 with the argument named, before any work.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--set", "batch_size=64"], "32 images, fewer than one batch (batch_size=64): set batch_size=32 or less"),
        (["--set", "model=nope"], "name must be one of the models"),
        (["--set", "model_kwargs.bogus=1"], "unknown argument(s) ['bogus'] for model 'small_unet'"),
        (["--set", "schedule_kwargs.bogus=1"], "TrainConfig.schedule_kwargs={'bogus': 1} do not fit the 'linear'"),
        (["--set", "lr=Infinity"], "TrainConfig.lr must be a finite number"),
        (["--threads", "-1"], "argument --threads: expected an integer >= 1, got -1"),
        (["--threads", "0"], "argument --threads: expected an integer >= 1, got 0"),
    ],
)
def test_bad_training_input_exits_2_and_writes_nothing(tmp_path, capsys, extra, fragment):
    out = tmp_path / "run"
    code, err = run_cli(capsys, *train_args(out, 2), *extra)
    assert code == 2 and fragment in err
    assert not out.exists()  # the folder made for the run is removed again when nothing was written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda(tmp_path, capsys):
    code, err = run_cli(capsys, *train_args(tmp_path / "run", 2), "--device", "cuda")
    assert code == 2 and "error: device='cuda' was asked for but CUDA is not available" in err
    assert not (tmp_path / "run").exists()


def test_out_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("keep me")
    code, err = run_cli(capsys, *train_args(tmp_path / "file", 2))
    assert code == 2 and "--out" in err and "is a file; expected a folder" in err
    assert (tmp_path / "file").read_text() == "keep me"


def test_non_finite_config_values_are_refused():
    for value in (float("inf"), float("-inf")):
        with pytest.raises(ValueError, match="TrainConfig.lr must be a finite number"):
            TrainConfig(lr=value)
    with pytest.raises(ValueError, match="TrainConfig.grad_clip must be a finite number"):
        TrainConfig(grad_clip=float("inf"))


@pytest.mark.parametrize(
    "args, env, fragment",
    [
        (["experiment", "nope"], None, "unknown chapter 'nope'; valid chapters are"),
        (["experiment", "report_d", "--only", "nope"], None, "unknown part(s) ['nope'] of report_d; valid:"),
        (
            ["experiment", "report_d"],
            "bogus",
            "DIFFUSION_EDU_TIER must be one of ['smoke', 'cpu', 'colab', 'gpu'], "
            "got 'bogus': set it to one of them, or unset it",
        ),
        (["experiment", "report_d", "--threads", "-2"], None, "argument --threads: expected an integer >= 1"),
    ],
)
def test_experiment_typos(capsys, monkeypatch, args, env, fragment):
    if env is not None:
        monkeypatch.setenv("DIFFUSION_EDU_TIER", env)
    code, err = run_cli(capsys, *args)
    assert code == 2 and fragment in err


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--out", "grid"], "--out grid: expected a file name ending in .png, .jpg"),
        (["--out", "grid.gif"], "--out grid.gif: expected a file name ending in .png"),
        (["--nrow", "-1"], "argument --nrow: expected an integer >= 0, got -1"),
        (["--n", "0"], "argument --n: expected an integer >= 1, got 0"),
    ],
)
def test_sample_output_checked_before_any_work(tmp_path, capsys, monkeypatch, args, fragment):
    """The checkpoint does not even exist: the output is refused before anything is loaded or sampled."""
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, "sample", "--checkpoint", "missing.pt", "--no-progress", *args)
    assert code == 2 and fragment in err
    assert list(tmp_path.iterdir()) == []


def test_sample_into_a_file_as_folder_and_a_folder_as_file(tmp_path, capsys, checkpoint):
    (tmp_path / "f").write_text("")
    code, err = run_cli(capsys, "sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "f" / "x.png"))
    assert code == 2 and "is a file, not a folder" in err
    code, err = run_cli(
        capsys, "sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path) + "/a.png", "--tensor", str(tmp_path)
    )
    assert code == 2 and "--tensor" in err and "is a folder; expected a file name" in err
    assert not (tmp_path / "a.png").exists()


def test_sample_tensor_into_a_missing_folder_and_labels_in_range(tmp_path, capsys, checkpoint):
    base = ["sample", "--checkpoint", str(checkpoint), "--n", "2", "--steps", "2", "--no-progress", "--threads", "1"]
    code, err = run_cli(capsys, *base, "--label", "10", "--out", str(tmp_path / "x.png"))
    assert code == 2 and "labels must be classes 0..9 (the network has 10 classes), got 10" in err
    assert not (tmp_path / "x.png").exists()
    code, _ = run_cli(
        capsys,
        *base,
        "--label",
        "9",
        "--out",
        str(tmp_path / "x.png"),
        "--tensor",
        str(tmp_path / "new" / "deeper" / "x.pt"),
    )
    assert code == 0
    saved = torch.load(tmp_path / "new" / "deeper" / "x.pt", weights_only=True)
    assert saved["images"].shape == (2, 1, 28, 28) and saved["labels"].tolist() == [9, 9]


def test_a_schedule_of_another_length_is_not_silent(checkpoint):
    model, schedule, config = load_model(checkpoint, device="cpu")
    assert model.trained_T == config.T == 20
    with pytest.warns(UserWarning, match="trained with T=20 steps but the schedule has T=10: its samples"):
        sample(model, make_schedule("linear", 10), 1)
    assert sample(model, schedule, 1, steps=2).shape == (1, 1, 28, 28)  # respacing keeps the original T


# ---------------------------------------------------------------------------------------------
# Damaged and foreign checkpoints: exit 2 in every command.
# ---------------------------------------------------------------------------------------------


def _flip_bits_in_tensor_data(path) -> None:
    """Flip one byte in the middle of the largest tensor record of a torch.save zip archive."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    with open(path, "rb") as f:  # the local header's own name and extra-field lengths
        f.seek(info.header_offset + 26)
        n, m = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    start = info.header_offset + 30 + n + m
    data[start + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage(kind: str, path) -> None:
    if kind == "random bytes":
        path.write_bytes(random.Random(1).randbytes(4096))
    elif kind == "flipped bits":
        _flip_bits_in_tensor_data(path)
    elif kind == "NaN weights":
        state = load_checkpoint(path)
        next(iter(state["model"].values())).fill_(float("nan"))
        if state.get("ema"):
            next(iter(state["ema"].values())).fill_(float("nan"))
        save_checkpoint(path, state)
    elif kind == "no data_order":
        state = load_checkpoint(path)
        del state["data_order"]
        save_checkpoint(path, state)


_DAMAGE = {
    "random bytes": "is not a checkpoint",
    "flipped bits": "is damaged: the checksum of its tensors",
    "NaN weights": "holds non-finite weights",
    "no data_order": "lacks ['data_order']",
}


@pytest.mark.parametrize("kind", list(_DAMAGE))
def test_damaged_checkpoints_are_refused_the_same_way_by_train_and_sample(tmp_path, capsys, finished, kind):
    out, _ = finished
    _damage(kind, out / "checkpoint.pt")
    damaged = (out / "checkpoint.pt").read_bytes()
    code, err = run_cli(capsys, *train_args(out, 6))
    assert code == 2 and _DAMAGE[kind] in err
    assert "last good" not in err and "pickled" not in err
    if kind != "no data_order":  # sampling needs no data order
        code, err = run_cli(
            capsys,
            "sample",
            "--checkpoint",
            str(out / "checkpoint.pt"),
            "--out",
            str(tmp_path / "x.png"),
            "--no-progress",
        )
        assert code == 2 and _DAMAGE[kind] in err and not (tmp_path / "x.png").exists()
    assert (out / "checkpoint.pt").read_bytes() == damaged  # refused, not replaced


# ---------------------------------------------------------------------------------------------
# Runs are never lost or mixed.
# ---------------------------------------------------------------------------------------------


def test_no_resume_refuses_to_replace_a_run_and_overwrite_killed_early_loses_nothing(capsys, monkeypatch, finished):
    out, _ = finished
    code, err = run_cli(capsys, *train_args(out, 2), "--no-resume")
    assert code == 2 and "already holds a run" in err and "--overwrite" in err and intact(finished)

    real_step = TrainingRun.train_step

    def interrupted(self):  # Ctrl-C on the new run's first step, before its first checkpoint
        raise KeyboardInterrupt

    monkeypatch.setattr(TrainingRun, "train_step", interrupted)
    code, err = run_cli(capsys, *train_args(out, 2, "--set", "lr=0.01"), "--overwrite")
    assert code == 130 and "stopped at step 0; no checkpoint had been written yet" in err
    assert not (out / "checkpoint.pt").exists() and load_checkpoint(out / ".previous" / "checkpoint.pt")["step"] == 4
    monkeypatch.setattr(TrainingRun, "train_step", real_step)
    code, err = run_cli(capsys, *train_args(out, 4))  # the old command: the old run is back, unchanged
    assert code == 0 and "has been restored" in err and intact(finished) and not (out / ".previous").exists()


RUN = ["checkpoint.pt", "config.json", "log.jsonl", "samples/step_1.png"]


def _make_run(out, tag="old"):
    (out / "samples").mkdir(parents=True, exist_ok=True)
    for name in RUN:
        (out / name).write_text(f"{tag} {name}")


def _contents(folder):
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _killed_after(monkeypatch, cut, call):
    """Run ``call()`` with the ``cut``-th file-system rename or deletion raising (a kill there)."""
    count = []
    real_replace, real_rmtree = os.replace, rundir.shutil.rmtree

    def counted(real):
        def wrapper(*args, **kwargs):
            if len(count) == cut:
                raise KeyboardInterrupt
            count.append(1)
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(os, "replace", counted(real_replace))
    monkeypatch.setattr(rundir.shutil, "rmtree", counted(real_rmtree))
    try:
        call()
    except KeyboardInterrupt:
        pass
    finally:
        monkeypatch.setattr(os, "replace", real_replace)
        monkeypatch.setattr(rundir.shutil, "rmtree", real_rmtree)
    return len(count) < cut  # True: the call finished before the cut


def test_setting_a_run_aside_and_back_survives_a_kill_at_any_point(tmp_path, monkeypatch):
    """set_aside, restore_aside and drop_aside each rename or delete a few entries; cut off after any
    of them, the next start still finds the old run whole (restored, or kept aside) and never mixes
    it with what the new run wrote."""
    old = {name: f"old {name}" for name in RUN}
    for cut in range(8):
        out = tmp_path / f"aside{cut}"  # a kill while setting the old run aside, then a resume
        _make_run(out)
        _killed_after(monkeypatch, cut, lambda out=out: rundir.set_aside(out))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rundir.restore_aside(out)
        assert _contents(out) == old, cut
        out = tmp_path / f"again{cut}"  # ... then another fresh start: the old run waits aside
        _make_run(out)
        _killed_after(monkeypatch, cut, lambda out=out: rundir.set_aside(out))
        assert rundir.set_aside(out) == out / ".previous" and _contents(out) == {
            f".previous/{k}": v for k, v in old.items()
        }
        out = tmp_path / f"restore{cut}"  # a kill while restoring (the new run wrote a log and a config)
        _make_run(out)
        rundir.set_aside(out)
        (out / "log.jsonl").write_text("new")
        (out / "config.json").write_text("new")
        with warnings.catch_warnings():  # "restored" is said by whichever call completes the restore
            warnings.simplefilter("ignore")
            _killed_after(monkeypatch, cut, lambda out=out: rundir.restore_aside(out))
            rundir.restore_aside(out)
        assert _contents(out) == old, cut
        out = tmp_path / f"drop{cut}"  # a kill while deleting the old run after the new one's checkpoint
        _make_run(out)
        rundir.set_aside(out)
        _make_run(out, "new")
        _killed_after(monkeypatch, cut, lambda out=out: rundir.drop_aside(out))
        assert rundir.set_aside(out) == out / ".previous"  # the next fresh start keeps the *new* run aside
        assert _contents(out) == {f".previous/{k}": f"new {k}" for k in RUN}


def test_a_locked_folder_is_refused_at_once_and_a_killed_holder_does_not_block(tmp_path, capsys, finished):
    out, _ = finished
    with RunLock(out):  # this process holds it: the message names our PID
        code, err = run_cli(capsys, *train_args(out, 6))
        assert code == 1 and f"is being written by another training run (PID {os.getpid()})" in err
        assert intact(finished)
        assert run_cli(capsys, *train_args(out, 4))[0] == 0  # the finished run itself is only loaded: no conflict
        assert intact(finished)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import fcntl, os, time  # RunLock's protocol (flock + PID) without importing torch: fast
        fd = os.open({str(out / ".lock")!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{{os.getpid()}}\\n".encode())
        print("locked", flush=True)
        time.sleep(120)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = run_cli(capsys, *train_args(out, 6))
        assert code == 1 and f"(PID {holder.pid})" in err and intact(finished)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / ".lock").exists()  # left behind by kill -9 ...
    assert run_cli(capsys, *train_args(out, 6))[0] == 0  # ... and no obstacle: the kernel dropped the lock
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 6


def test_a_kill_during_the_checkpoint_write_leaves_the_previous_one_and_resume_cleans_up(tmp_path, capsys):
    """A real process is killed with SIGKILL after writing the temporary file of its second checkpoint
    (and half a log line): the first checkpoint is intact, and resuming removes the debris, repairs the
    log and finishes exactly at the same weights as an uninterrupted run."""
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import os, signal, sys
        import diffusion_edu.results as results
        real = results.atomic_write_bytes
        def write(path, data):
            if str(path).endswith("checkpoint.pt") and os.path.exists(path):  # the second checkpoint
                with open(os.path.join(os.path.dirname(path), "log.jsonl"), "a") as f:
                    f.write('{{"step": 5, "lo')
                fd, tmp = results.tempfile.mkstemp(dir=os.path.dirname(path), prefix=".checkpoint.pt.",
                                                   suffix=".tmp")
                os.write(fd, data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, data)
        results.atomic_write_bytes = write
        import diffusion_edu.checkpoint as ckpt
        ckpt.atomic_write_bytes = write
        from diffusion_edu.cli import main
        sys.exit(main({train_args(out, 6)!r}))
        """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert len(list(out.glob(".checkpoint.pt.*.tmp"))) == 1
    code, err = run_cli(capsys, *train_args(out, 6))
    assert code == 0 and "dropped 1 damaged line(s)" in err
    assert list(out.glob(".*.tmp")) == [] and not (out / ".lock").exists()
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    reference = tmp_path / "reference"
    assert run_cli(capsys, *train_args(reference, 6))[0] == 0
    a, b = load_checkpoint(out / "checkpoint.pt")["model"], load_checkpoint(reference / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_checks_the_dataset_and_the_thread_count(capsys, monkeypatch, finished):
    out, _ = finished
    import diffusion_edu.training as training

    real = training.load_dataset

    def other_digits(*args, **kwargs):  # the same name and size, other pixels
        ds = real(*args, **kwargs)
        ds.images = 255 - ds.images
        return ds

    monkeypatch.setattr(training, "load_dataset", other_digits)
    code, err = run_cli(capsys, *train_args(out, 6))
    assert code == 2 and "the checkpoint was trained on 'mnist-embedded/train[:32]' (32 images" in err
    assert "resume with the same data" in err and intact(finished)
    monkeypatch.setattr(training, "load_dataset", real)
    code, err = run_cli(capsys, *train_args(out, 6), "--threads", "2")  # the last --threads wins
    assert code == 0 and "warning: resuming with 2 CPU threads, but the checkpoint was written with 1" in err


def test_a_damaged_log_line_is_repaired_and_stale_temp_files_removed(capsys, finished):
    out, _ = finished
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 0.')  # a kill during an append
    (out / ".checkpoint.pt.abc123.tmp").write_bytes(b"x" * 1000)
    (out / "samples").mkdir()
    (out / "samples" / ".step_0000002.png.xyz.tmp").write_bytes(b"x")
    code, err = run_cli(capsys, *train_args(out, 6))
    assert code == 0 and "dropped 1 damaged line(s)" in err
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    assert list(out.glob(".*.tmp")) == [] and list((out / "samples").glob(".*.tmp")) == []


# ---------------------------------------------------------------------------------------------
# The environment fails, or the run does: exit 1, and the last checkpoint stays.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault, fragment",
    [
        (errno.ENOSPC, "No space left on device; the disk is full: free some space"),
        (errno.EROFS, "Read-only file system; the file system is read-only: choose a folder on a writable disk"),
    ],
)
def test_disk_full_and_read_only(capsys, monkeypatch, finished, fault, fragment):
    """Simulated: the root user of the test machine can write anywhere, so the OS errors are injected
    where a real disk would raise them (the flush of a write; the creation of a file)."""
    out, _ = finished

    def fail(*args, **kwargs):
        raise OSError(fault, os.strerror(fault))

    monkeypatch.setattr(os, "fsync", fail) if fault == errno.ENOSPC else monkeypatch.setattr(tempfile, "mkstemp", fail)
    code, err = run_cli(capsys, *train_args(out, 6))
    assert code == 1 and fragment in err and f"error: {out}" in err  # the file that could not be written
    assert "run the same command again to resume" in err
    monkeypatch.undo()
    assert intact(finished) and list(out.glob(".*.tmp")) == []


def test_ctrl_c_says_where_the_run_stopped_and_how_to_resume(capsys, monkeypatch, finished):
    out, _ = finished
    real_step = TrainingRun.train_step

    def step(self):
        if self.step == 5:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(TrainingRun, "train_step", step)
    code, err = run_cli(capsys, *train_args(out, 8))
    assert code == 130
    assert f"interrupted: training stopped at step 5; the last good checkpoint (step 4) is kept at {out}" in err
    assert "run the same command again" in err and load_checkpoint(out / "checkpoint.pt")["step"] == 4


@pytest.mark.parametrize("factor, fragment", [(1e27, "the loss diverged"), (float("nan"), "the loss became nan")])
def test_divergence_and_nan_stop_the_run_and_keep_the_last_good_checkpoint(
    tmp_path, capsys, monkeypatch, factor, fragment
):
    """From step 5 on the loss is multiplied by 1e27 (finite) or is NaN: the run stops with exit 1, and
    the checkpoint on disk is step 4's (the one of step 6 is not written while the loss is out of range)."""
    real_step = TrainingRun.train_step

    def step(self):
        loss = real_step(self)
        return loss * factor if self.step >= 5 else loss

    monkeypatch.setattr(TrainingRun, "train_step", step)
    out = tmp_path / "run"
    code, err = run_cli(capsys, *train_args(out, 10))
    assert code == 1 and fragment in err
    assert "the last good checkpoint (step 4) is kept" in err
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4


def test_non_finite_weights_are_never_saved(tmp_path, capsys, monkeypatch):
    real_step = TrainingRun.train_step

    def step(self):
        real_step(self)
        if self.step == 3:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("inf"))
        return torch.zeros(())  # a finite loss that hides the broken weights

    monkeypatch.setattr(TrainingRun, "train_step", step)
    code, err = run_cli(capsys, *train_args(tmp_path / "run", 6))
    assert code == 1 and "the weights became non-finite (NaN or inf) by step 4" in err
    assert (
        "the last good checkpoint (step 2)" in err and load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2
    )


def test_unexpected_errors_have_no_traceback_unless_debug(tmp_path, capsys, monkeypatch):
    def bug(self):
        raise KeyError("oops")

    monkeypatch.setattr(TrainingRun, "train_step", bug)
    code, err = run_cli(capsys, *train_args(tmp_path / "run", 2))
    assert code == 1 and "error: unexpected KeyError" in err and "--debug" in err
    with pytest.raises(KeyError):
        main([*train_args(tmp_path / "run2", 2), "--debug"])


def test_random_bytes_are_not_called_pickled_code(tmp_path):
    """Random bytes (seeded: a rare draw can parse as a pickle naming a global) after the start of a zip
    archive, of a pickle, and of nothing in particular."""
    noise = random.Random(0)
    for head in (b"", b"\x80", b"\x80\x02", b"PK") * 25:
        (tmp_path / "x.pt").write_bytes(head + noise.randbytes(2000))
        with pytest.raises(CheckpointError, match="is not a (readable )?checkpoint") as e:
            load_checkpoint(tmp_path / "x.pt")
        assert "pickled" not in str(e.value)


def test_ctrl_c_while_sampling_writes_nothing(tmp_path, capsys, monkeypatch, checkpoint):
    import diffusion_edu.generate as gen

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "generate", interrupted)
    code, err = run_cli(capsys, "sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.png"))
    assert code == 130 and f"interrupted: nothing was written to {tmp_path / 'x.png'}" in err
    assert not (tmp_path / "x.png").exists()
