"""Execute notebooks in place at a compute tier, storing their outputs and widget state (``make notebooks``).

The book renders stored outputs (``execute_notebooks: off``), so this is how a chapter's outputs are
made. nbclient saves the state of every live ipywidget into the notebook's metadata, which is what
lets the static page show a widget's first view. The smoke tier is refused: its numbers mean nothing
and must never be stored as a chapter's outputs.

    python tools/run_notebooks.py                     # every notebooks/*.ipynb at $DIFFUSION_EDU_TIER or cpu
    python tools/run_notebooks.py --tier gpu notebooks/03_report_c.ipynb
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sync_notebooks  # noqa: E402  (tools/ is not a package)

ROOT = sync_notebooks.ROOT
REAL_TIERS = ("cpu", "colab", "gpu")


def run_notebook(path: Path, tier: str, timeout: int = 1800) -> float:
    """Execute one notebook in its own folder with ``DIFFUSION_EDU_TIER=tier``; save it; return seconds."""
    if tier not in REAL_TIERS:
        raise ValueError(f"tier must be one of {list(REAL_TIERS)} (smoke outputs are never stored), got {tier!r}")
    nb = nbformat.read(path, as_version=4)
    sync_notebooks.sync_notebook(nb, path, sync_notebooks.expected_commit())
    env = {
        **os.environ,
        "DIFFUSION_EDU_TIER": tier,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        store_widget_state=True,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute(env=env)  # the kernel's environment
    nb.metadata["diffusion_edu"] = {"tier": tier}  # checked by tests/test_notebook_hygiene.py
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tier", default=os.environ.get("DIFFUSION_EDU_TIER", "cpu"), help="compute tier (default cpu)"
    )
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    args = parser.parse_args(argv)
    for path in args.paths or sync_notebooks.notebooks():
        seconds = run_notebook(path, args.tier, args.timeout)
        print(f"{path}: executed at tier {args.tier} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
