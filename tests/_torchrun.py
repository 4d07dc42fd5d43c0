"""Launch ``torchrun --standalone --nproc_per_node 2 -m diffusion_edu ...`` for the tests, without hanging CI.

``--standalone`` lets torchrun bind its own rendezvous port on localhost, instead of a port that the test
found free a moment earlier (another test launching processes at the same time could take it in between).
A run that outlives its time limit is not simply killed: every process of the launch gets SIGABRT first, so
that Python's faulthandler prints where each one waits, and the test fails with those stacks and torchrun's
own log (``LOGLEVEL=INFO``: rendezvous, worker exit codes, the exit barrier). Nothing is left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# Generous: a tiny run takes about 5 s (10 s on a loaded machine). torchrun's own exit barrier waits up to
# 300 s for other agents; a limit above that lets such a wait finish rather than fail the test.
TIMEOUT_S = 420


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def run_torchrun(
    args: list[str], cwd: Path, env: dict[str, str], nprocs: int = 2, timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node nprocs -m diffusion_edu *args`` in ``cwd``; the completed process."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nprocs),
        "-m",
        "diffusion_edu",
        *args,
    ]
    env = {**env, "LOGLEVEL": "INFO", "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGABRT)  # faulthandler: each process prints its threads' stacks
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(
            f"torchrun did not finish in {timeout:.0f} s: {' '.join(args)}\n"
            f"--- stdout (end) ---\n{out[-2000:]}\n--- stderr with the processes' stacks (end) ---\n{err[-12000:]}"
        )
    finally:
        _kill_group(proc.pid, signal.SIGKILL)  # no worker outlives the test, whatever happened
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
