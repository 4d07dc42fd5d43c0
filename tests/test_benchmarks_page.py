"""The book's Performance page (notebooks/08_benchmarks.ipynb): it renders every benchmark's results file.

The page only reads ``results/benchmarks/*.json``; its rendering logic lives in the notebook. These tests
check that it covers every script in ``benchmarks/`` and, by executing it against a results folder that
holds one synthetic peer-benchmark file (built by the benchmark's own summary code) and nothing else,
that a missing file is shown as "not measured yet" with its command, never as an error, and that the
issue-9 verdicts and margins on the page are the ones computed from the file. Nothing here times
anything.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from diffusion_edu.results import write_results

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "notebooks" / "08_benchmarks.ipynb"
SCRIPTS = sorted(p.stem.removeprefix("bench_") for p in (ROOT / "benchmarks").glob("bench_*.py"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/ is a folder of scripts, not an installed package
bench_peers = importlib.import_module("bench_peers")
configs = importlib.import_module("peers.configs")


def page_source() -> str:
    nb = nbformat.read(PAGE, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_scripts_found():
    """The coverage test below is only meaningful if it sees the scripts the page must render."""
    assert {"peers", "ddp", "models", "training", "samplers", "metrics"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_page_renders_every_benchmark_script(name):
    """Each bench_<name>.py writes results/benchmarks/<name>_<device>.json: the page loads it for the CPU
    and the GPU and knows the command that writes each (shown when the file is missing)."""
    src = page_source()
    assert f'load_bench(f"{name}_{{dev}}")' in src, f"the page never loads {name}_<device>.json"
    for dev in ("cpu", "cuda"):
        assert re.search(rf'"{name}_{dev}": "[^"]*bench', src), f"no command for {name}_{dev}"
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    assert f"`bench_{name}.py`" in readme, f"benchmarks/README.md does not list bench_{name}.py"


def test_page_sits_under_going_further_before_multi_gpu():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    part = next(p for p in toc["parts"] if p["caption"] == "Going further")
    files = [c["file"] for c in part["chapters"]]
    assert files.index("notebooks/08_benchmarks") < files.index("book/multi_gpu")


def synthetic_peers_data() -> dict:
    """A peers results file's data, assembled by bench_peers' own summary code from chosen rates:
    training at 0.8x the faster peer (a miss of 20%), sampling 3 points under the overhead limit and
    1.25x the faster peer loop."""

    def row(lib, img_s):
        return {
            "library": lib,
            "network": lib,
            "params": 1000,
            "train_flops_per_image": 2e6,
            "batch": 8,
            "warmup_steps": 1,
            "img_s": img_s,
            "img_s_windows": [img_s] * 3,
            "img_per_cpu_s": img_s,
            "peak_memory_mib": 10.0,
            "peak_memory_kind": "cpu_maxrss_growth",
            "load_average_1min": 0.5,
            "threads": 2,
        }

    training = {
        "unet_mnist": bench_peers.training_summary(
            {
                "diffusion_edu": row("diffusion_edu", 40.0),
                "diffusers": row("diffusers", 50.0),
                "lucidrains": row("lucidrains", 30.0),
            }
        )
    }
    bare = 2.0
    loops = {
        lib: {
            "seconds": s,
            "seconds_repeats": [s],
            "img_s": 32 / s,
            "overhead": configs.overhead(s, bare),
            "overhead_repeats": [configs.overhead(s, bare)],
        }
        for lib, s in (("diffusion_edu", 2.04), ("diffusers", 2.55), ("lucidrains", 3.0))
    }
    rates = {k: v["img_s"] for k, v in loops.items()}
    peer, best = configs.faster_peer(rates)
    sampling = {
        "unet_mnist": {
            "n": 32,
            "steps": 50,
            "network": {"kwargs": {}, "weights": "freshly initialised", "params": 1000},
            "bare_network_s": bare,
            "bare_network_repeats": [bare],
            "loops": loops,
            "ratios": {p: configs.ratio(rates["diffusion_edu"], rates[p]) for p in configs.PEERS},
            "faster_peer": peer,
            "ratio_vs_faster_peer": configs.ratio(rates["diffusion_edu"], best),
            "skipped": {},
            "repeats": 1,
        }
    }
    data = {
        "device": "cpu",
        "device_name": None,
        "mode": configs.resolve_mode("cpu"),
        "versions": {"torch": "x", "diffusers": "y"},
        "training": training,
        "sampling": sampling,
        "mfu": bench_peers.mfu_rows(training, None),
        "diagnostics": {
            "package_attention": {
                "channels": 32,
                "size": 16,
                "batch": 4,
                "kernels": {"as_is": ["aten::_sdpa_math"], "contiguous_qkv": []},
                "fwd_bwd_s": {"as_is": 0.003, "contiguous_qkv": 0.002},
            }
        },
        "load_average_before": [0.5, 0.5, 0.5],
        "load_average_after": [0.6, 0.6, 0.6],
    }
    data["targets"] = configs.evaluate_targets(data)
    return data


def synthetic_ddp_data() -> dict:
    """A ddp results file's data as bench_ddp.py writes it: one preset measured (strong scaling at 80%
    efficiency, weak scaling failed in its worker), with the one-process-two-threads reference."""

    def run(n, img_s, batch):
        return {
            "img_per_s": img_s,
            "s_per_step": batch / img_s,
            "window_s_per_step": [batch / img_s],
            "global_batch": batch,
            "per_process_batch": batch // n,
            "processes": n,
            "threads_per_process": 1,
            "backend": "gloo" if n > 1 else None,
            "device": "cpu",
            "network": "cnn_mnist",
            "params": 1000,
            "precision": "float32",
            "load_average_1min": 0.5,
            "note": "",
        }

    one = run(1, 100.0, 128)
    return {
        "presets": {
            "d_cnn": {
                "strong": {"n_1": one, "n_2": run(2, 160.0, 128)},
                "strong_efficiency": {"n_1": 1.0, "n_2": 0.8},
                "weak": {"n_1": one, "n_2": {"error": "RuntimeError: synthetic failure"}},
                "weak_efficiency": {"n_1": 1.0},
                "one_process_more_threads": {"threads_2": run(1, 200.0, 128)},
            }
        }
    }


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> str:
    """The page executed against a results folder holding only a synthetic peers_cpu.json and ddp_cpu.json;
    all its text."""
    results = tmp_path_factory.mktemp("results")
    write_results(
        results / "benchmarks" / "peers_cpu.json",
        "benchmarks/peers_cpu",
        synthetic_peers_data(),
        {"threads": 2, "note": "synthetic"},
        "cpu",
        1.0,
        "cpu",
    )
    write_results(
        results / "benchmarks" / "ddp_cpu.json",
        "benchmarks/ddp_cpu",
        synthetic_ddp_data(),
        {"threads_per_process": 1},
        "cpu",
        1.0,
        "cpu",
    )
    nb = nbformat.read(PAGE, as_version=4)
    env = {
        **os.environ,
        "DIFFUSION_EDU_RESULTS": str(results),
        "DIFFUSION_EDU_TIER": "smoke",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(PAGE.parent)}}).execute(
        env=env
    )
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, "\n".join(e["ename"] + ": " + e["evalue"] for e in errors)
    texts = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            texts.append(o.get("text", ""))
            texts += [v for k, v in o.get("data", {}).items() if k in ("text/markdown", "text/plain")]
    return "\n".join(texts)


PRESENT = ("peers_cpu", "ddp_cpu")


@pytest.mark.parametrize("stem", [f"{n}_{d}" for n in SCRIPTS for d in ("cpu", "cuda") if f"{n}_{d}" not in PRESENT])
def test_missing_file_is_shown_as_not_measured_with_its_command(executed, stem):
    assert f"`results/benchmarks/{stem}.json`: not measured yet." in executed
    script = "bench-peers" if stem.startswith("peers") else f"bench_{stem.rsplit('_', 1)[0]}.py"
    block = executed.split(f"`results/benchmarks/{stem}.json`: not measured yet.", 1)[1][:300]
    assert script in block, f"the note for {stem} does not give the command"


def test_present_file_is_rendered_with_its_provenance(executed):
    assert "`results/benchmarks/peers_cpu.json`: not measured yet" not in executed
    assert "Source: `results/benchmarks/peers_cpu.json`; tier **cpu**" in executed
    assert "Note in the file: *synthetic*" in executed
    assert "No GPU run exists yet" in executed


def test_targets_and_margins_come_from_the_file(executed):
    """0.8x the faster peer (diffusers) is a 20% miss; a 2% overhead is 3 points under the 5% limit;
    1.25x the faster peer loop is met by 25%; MFU is not measured on a CPU."""
    assert "missed by 20.0%" in executed
    assert "met (3.0 percentage points under the limit)" in executed
    assert "met (+25.0%)" in executed
    assert "cpu: 2 met, 1 missed, 1 not measured" in executed
    # every window / repeat of the synthetic file gives the same ratio: the verdicts are clear of the noise
    assert "clear of the noise (window ratios 0.800 to 0.800)" in executed
    assert "clear of the noise (repeats +2.0% to +2.0%)" in executed
    assert "clear of the noise (repeat ratios 1.25 to 1.25)" in executed
    assert "images/s ratio 0.800" in executed  # package / diffusers in the limits section
    assert "(as written / contiguous: 1.50)" in executed


def test_scaling_table_reads_efficiency_and_failures_from_the_file(executed):
    """Strong scaling: 160 images/s on 2 processes over 2 x 100 on one is 80%, and 160 / 200 against one
    process with two threads; the failed weak-scaling run is shown with its error, not as a crash."""
    assert "| d_cnn (cnn_mnist) | strong | 2 | 128 (64 per process) | 100 | 160 | 80.0% | 200 | 0.800 |" in executed
    assert "error: RuntimeError: synthetic failure" in executed
    assert "Source: `results/benchmarks/ddp_cpu.json`; tier **cpu**" in executed
    assert "threads per process 1" in executed
