"""Checkpoints: safe loading (a pickle carrying code is refused and never runs), atomic writes,
plain-data contents, the data order, RNG state, and load_model."""

import json
import os
import sys

import pytest
import torch

from diffusion_edu import load_model, make_schedule, train
from diffusion_edu.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from diffusion_edu.seeding import EpochOrder, capture_rng_state, derived_seed, restore_rng_state

sys.path.insert(0, os.path.dirname(__file__))
from test_training import TinyNet, tiny_config, tiny_net  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short conditional run with EMA, mean-parameterised, on a cosine schedule."""
    out = tmp_path_factory.mktemp("trained")
    cfg = tiny_config(
        steps=4, ema_decay=0.5, parameterization="mu", schedule="cosine", model_kwargs={"num_classes": 10}
    )
    return train(cfg, out, model=tiny_net(num_classes=10), progress=False)


class _RunsCode:
    """Unpickling this calls exec(): what a malicious 'checkpoint' would do (e.g. with os.system)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_a_pickle_carrying_code_is_refused_and_never_runs(tmp_path):
    """torch.load(weights_only=True) refuses globals such as exec; we say why, and the code did not run."""
    marker, path = tmp_path / "marker", tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refused to load .*evil.pt.*can run arbitrary code.*weights_only=True"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(path, model=TinyNet())
    assert not marker.exists()
    with open(path, "rb") as f:  # guard: the file really does run code when unpickled unsafely
        torch.load(f, weights_only=False)
    assert marker.read_text() == "pwned"


def test_corrupt_truncated_and_foreign_files_are_refused(tmp_path, trained):
    data = trained.checkpoint.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save(TinyNet().state_dict(), tmp_path / "plain.pt")  # a bare state_dict, not ours
    with pytest.raises(CheckpointError, match="not a diffusion_edu checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_crash_during_a_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    """The file is written to a temporary name and renamed: a failure mid-write (here the disk flush
    raises, as a kill or a full disk would interrupt it) keeps the old file and leaves no debris."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "step": 1})

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "step": 2, "w": torch.zeros(1000)})
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_checkpoint_holds_plain_data(trained):
    """Everything resumption needs is in the file, and the file loads with plain
    torch.load(weights_only=True) (no diffusion_edu code involved); the config is JSON data."""
    state = torch.load(trained.checkpoint, weights_only=True)
    assert {"format", "step", "config", "model", "ema", "optimizer", "rng", "data_order", "image_shape"} <= set(state)
    assert state["step"] == 4 and state["image_shape"] == [1, 28, 28]
    assert json.loads(json.dumps(state["config"])) == state["config"] == trained.config.to_dict()
    assert {"torch", "generator"} <= set(state["rng"])
    assert state["data_order"]["epoch"] == 0 and state["data_order"]["position"] == 4


def test_load_model_returns_eval_network_schedule_and_config(trained):
    """load_model gives the EMA (or raw) weights, in eval mode, plus the schedule the network was trained
    on and its config; a network passed in that declares another output than the run's is refused."""
    net, schedule, config = load_model(
        trained.checkpoint, model=TinyNet(num_classes=10, parameterization="mu"), device="cpu"
    )
    assert not net.training and net.parameterization == "mu" and config.parameterization == "mu"
    with pytest.raises(ValueError, match="parameterization='mu' but the network declares 'eps'"):
        load_model(trained.checkpoint, model=TinyNet(num_classes=10, parameterization="eps"))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), trained.ema.state_dict().values()))
    assert torch.equal(schedule.alpha_bar, make_schedule("cosine", 50).alpha_bar)
    assert config == trained.config
    raw = load_model(trained.checkpoint, ema=False, model=TinyNet(num_classes=10)).model
    assert all(torch.equal(a, b) for a, b in zip(raw.state_dict().values(), trained.model.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(raw.state_dict().values(), net.state_dict().values()))


def test_load_model_errors_and_fallbacks(tmp_path, trained):
    with pytest.raises(CheckpointError, match="do not fit the network TinyNet"):
        load_model(trained.checkpoint, model=TinyNet(num_classes=10, hidden=4))
    result = train(tiny_config(steps=2, ema_decay=None), tmp_path, model=TinyNet(), progress=False)
    with pytest.warns(UserWarning, match="holds no EMA weights"):
        net = load_model(result.checkpoint, model=TinyNet()).model
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), result.model.state_dict().values()))


def test_epoch_order_visits_every_image_once_per_epoch_and_resumes():
    """Each epoch is a permutation fixed by (seed, epoch), cut into full batches; the state (epoch,
    position) restores the same future batches."""
    order = EpochOrder(n=10, batch_size=3, seed=5)
    batches = [order.next().tolist() for _ in range(7)]  # 3 batches per epoch (the 10th image waits)
    assert len({i for b in batches[:3] for i in b}) == 9 and batches[:3] != batches[3:6]
    assert sum(batches[:3], []) == order.permutation(0)[:9].tolist()
    state = order.state_dict()
    later = [order.next().tolist() for _ in range(4)]
    again = EpochOrder(n=10, batch_size=3, seed=5)
    again.load_state_dict(state)
    assert [again.next().tolist() for _ in range(4)] == later
    assert not torch.equal(EpochOrder(10, 3, seed=6).permutation(0), order.permutation(0))
    with pytest.raises(CheckpointError, match="data order was made for"):
        EpochOrder(n=11, batch_size=3, seed=5).load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size=20 is larger than the dataset \\(10 images\\)"):
        EpochOrder(n=10, batch_size=20, seed=0)


def test_rng_state_round_trip_and_derived_seeds():
    """Restoring the captured state replays the same draws from the global RNG and the generator;
    derived seeds differ between streams and are stable."""
    gen = torch.Generator().manual_seed(3)
    state = capture_rng_state(gen, torch.device("cpu"))
    first = (torch.rand(5), torch.rand(5, generator=gen))
    restore_rng_state(state, gen, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(first, (torch.rand(5), torch.rand(5, generator=gen))))
    seeds = {derived_seed(0, k) for k in ("init", "noise", "samples", "data")} | {derived_seed(1, "init")}
    assert len(seeds) == 5 and derived_seed(0, "noise") == derived_seed(0, "noise") < 2**63


def test_checkpoints_are_not_pickled_objects(trained):
    """Belt and braces: the raw pickle names no global outside torch's tensor rebuilding machinery."""
    import pickletools
    import zipfile

    with zipfile.ZipFile(trained.checkpoint) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data) if "GLOBAL" in op.name]
    assert ops and all(name == "GLOBAL" for name, _ in ops)  # protocol 2: every global is named
    assert all(arg.startswith(("torch ", "torch._utils ", "collections OrderedDict")) for _, arg in ops), ops
