"""Run every chapter as a Colab reader does: alone, in an empty folder, from the package's wheel.

Part of ``make test`` (the notebooks' run in CI). For each chapter this

1. builds the package's wheel from the checkout's files (tracked and untracked-but-not-ignored, copied
   to a temporary folder first, so no stale ``build/`` output can slip in);
2. installs it into a fresh virtual environment, with nothing else from the checkout: the wheel, the
   notebook test tools (ipykernel, nbval, pytest, pytest-xdist) and their dependencies, every version
   held by ``constraints.txt`` and by the pins of ``requirements.txt`` (so pip takes the local CPU
   torch and never a CUDA build);
3. copies each notebook alone into its own empty folder under the temporary folder (outside the
   checkout, so the package cannot find the book's ``results/`` by walking up) and runs it there at
   the smoke tier with ``pytest --nbval-lax``: every cell runs, and cells marked ``# NBVAL_CHECK_OUTPUT``
   must reproduce their stored output.

    python tools/colab_check.py                    # every notebooks/*.ipynb, 2 workers
    python tools/colab_check.py --jobs 1 notebooks/03_report_a.ipynb
    python tools/colab_check.py --keep             # keep the temporary folder (its path is printed)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ["ipykernel", "nbval", "pytest", "pytest-xdist"]  # what runs a notebook under nbval
# the environment a reader's kernel has: nothing pointing back at the checkout
DROP_ENV = ("PYTHONPATH", "DIFFUSION_EDU_RESULTS", "VIRTUAL_ENV", "PYTHONHOME")


NOISE = "is ignored: it is neither a file nor a directory"  # pip on this machine's local index folders


def run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    out = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    print("".join(ln for ln in out.stdout.splitlines(keepends=True) if NOISE not in ln), end="", flush=True)
    if out.returncode:
        raise subprocess.CalledProcessError(out.returncode, cmd)


def source_files(root: Path = ROOT) -> list[str]:
    """The checkout's files as git sees them: tracked, plus untracked ones that are not ignored."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout
    return [p for p in out.decode().split("\0") if p and (root / p).is_file()]


def build_wheel(work: Path, python: str = sys.executable) -> Path:
    """The package's wheel, built from a clean copy of the checkout's files."""
    src = work / "src"
    for rel in source_files():
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    run([python, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", work / "wheel", src])
    (wheel,) = (work / "wheel").glob("diffusion_edu-*.whl")
    return wheel


def pins(work: Path) -> Path:
    """requirements.txt's pins without its editable install of the checkout, as a constraints file."""
    lines = [
        ln
        for ln in (ROOT / "requirements.txt").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith(("#", "-e"))
    ]
    path = work / "pins.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def fresh_env(work: Path, wheel: Path) -> Path:
    """A new virtual environment holding the wheel and the notebook test tools; returns its python."""
    venv = work / "venv"
    run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    run([py, "-m", "pip", "install", "--quiet", "-c", ROOT / "constraints.txt", "-c", pins(work), wheel, *TOOLS])
    where = subprocess.run(
        [py, "-c", "import diffusion_edu; print(diffusion_edu.__file__)"],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(venv.resolve()):
        raise RuntimeError(f"the fresh environment imports diffusion_edu from {where}, not from its own wheel")
    return py


def stage_notebooks(work: Path, notebooks: list[Path]) -> list[Path]:
    """Each notebook copied alone into its own empty folder."""
    staged = []
    for nb in notebooks:
        folder = work / "chapters" / nb.stem
        folder.mkdir(parents=True)
        staged.append(Path(shutil.copy2(nb, folder / nb.name)))
    return staged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="notebooks run at once (pytest-xdist workers)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell (default 900)")
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    args = parser.parse_args(argv)
    notebooks = [p.resolve() for p in args.paths] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    work = Path(tempfile.mkdtemp(prefix="diffusion-edu-colab-"))
    t0 = time.perf_counter()
    try:
        wheel = build_wheel(work)
        py = fresh_env(work, wheel)
        t_env = time.perf_counter() - t0
        staged = stage_notebooks(work, notebooks)
        env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
        env.update(DIFFUSION_EDU_TIER="smoke", PATH=f"{py.parent}{os.pathsep}{env.get('PATH', '')}")
        # one kernel per worker: each gets its share of the cores (two kernels with two OpenMP threads each
        # on two cores spin against each other, and a 70-second chapter took 425 seconds)
        workers = max(1, min(args.jobs, len(staged)))
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
        cmd = [
            py,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--nbval-lax",
            "--nbval-current-env",
            f"--nbval-cell-timeout={args.timeout}",
            "--durations=20",
            "--rootdir",
            work / "chapters",
        ]
        if args.jobs > 1:
            cmd += ["-n", str(min(args.jobs, len(staged))), "--dist", "loadfile"]
        code = subprocess.run([str(c) for c in cmd + staged], cwd=work / "chapters", env=env).returncode
        print(
            f"colab check: wheel + fresh environment {t_env:.0f} s, notebooks {time.perf_counter() - t0 - t_env:.0f} s"
            f" ({len(staged)} chapters, each alone in an empty folder, tier smoke): "
            f"{'passed' if code == 0 else 'FAILED'}",
            flush=True,
        )
        return code
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
