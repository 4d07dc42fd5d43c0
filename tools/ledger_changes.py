"""List the ledger rows whose verdict differs between a git revision's ledger code and the working tree's,
both judged against the working tree's results folder.

    .venv/bin/python tools/ledger_changes.py [BASE]    # BASE: a git revision, default HEAD
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DUMP = (
    "import json, sys; from diffusion_edu.ledger import ledger_rows; "
    "print(json.dumps([[r.entry.report, r.entry.quantity, r.verdict] for r in ledger_rows(results=sys.argv[1])]))"
)


def verdicts(package_parent: Path | None) -> list[list[str]]:
    env = None
    if package_parent is not None:
        import os

        env = {**os.environ, "PYTHONPATH": str(package_parent)}
    out = subprocess.run(
        [sys.executable, "-c", DUMP, str(ROOT / "results")],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=package_parent or ROOT,
    )
    return json.loads(out.stdout)


def main(base: str = "HEAD") -> int:
    archive = subprocess.run(
        ["git", "archive", base, "diffusion_edu"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        tarfile.open(fileobj=BytesIO(archive)).extractall(tmp)
        old = {(r, q): v for r, q, v in verdicts(Path(tmp))}
    new = verdicts(None)
    changed = [(r, q, old.get((r, q), "(no row)"), v) for r, q, v in new if old.get((r, q)) != v]
    for r, q, o, v in changed:
        print(f"Report {r} | {q} | {o} -> {v}")
    print(f"{len(changed)} of {len(new)} verdicts changed against {base}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
