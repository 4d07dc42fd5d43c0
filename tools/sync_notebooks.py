"""Write every notebook's Colab badge and install cell from ``_config.yml`` and the package's commit.

The repository URL lives in one place, ``_config.yml`` (``repository.url`` and ``repository.branch``);
the launch buttons read it there, and this script derives two cells of each notebook from it:

- cell 0, the install cell: installs the package only when the notebook runs in Colab, and only the
  package (its dependencies in ``pyproject.toml`` are loose, so pip keeps Colab's own torch), pinned
  to a commit; plus one commented-out line that keeps the chapter's runs and results on Google Drive.
  The site hides it (tag ``remove-cell``).
- cell 1, the badge cell: an "Open in Colab" badge for the notebook on the configured branch (hidden
  on the site, which has its own launch button and loads no image from elsewhere).

Which commit the install cell pins. A notebook cannot name the commit that holds it (the hash depends
on the content). It pins instead **the last commit that changed the package** (``diffusion_edu/``,
``pyproject.toml``, ``results/``: everything the wheel ships) before the notebook's own commit: the
package code the notebook was committed with, which is the code its stored outputs were made with
when the notebook is re-executed (``tools/run_notebooks.py``) after the package change was committed.
The badge opens the branch's newest notebook, and that notebook installs its own pinned package, so
what a reader runs in Colab matches the page they opened.

``--check`` verifies exactly that, per notebook and from history only up to the notebook's own last
commit (its working-tree state when uncommitted), so a later commit elsewhere never breaks it: the
pinned commit is the last package commit reachable from the notebook's commit (so a notebook
committed together with a package change, without re-running this script, fails). Without git history (an archive, a shallow clone) only the cells' form is checked.

    python tools/sync_notebooks.py            # rewrite cells that differ (inserting missing ones)
    python tools/sync_notebooks.py --check    # exit 1 and name the notebooks whose cells differ
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
MARKER = "# Colab only: install the book's package"
CELL_ID = "colab-install"
BADGE_ID = "colab-badge"
BADGE_MARKER = "<!-- Open in Colab: written by tools/sync_notebooks.py -->"
TAGS = ["remove-cell"]  # the static site does not show them (myst-nb drops cells with this tag)
PACKAGE_PATHS = ("diffusion_edu", "pyproject.toml", "results")  # what the wheel is built from
COLAB = "https://colab.research.google.com"
DRIVE_LINE = (
    '    # import os; from google.colab import drive; drive.mount("/content/drive"); '
    'os.makedirs(d := "/content/drive/MyDrive/diffusion-edu", exist_ok=True); os.chdir(d)  '
    "# keep runs/ and results/ on Drive"
)


def repository(config: Path = ROOT / "_config.yml") -> tuple[str, str]:
    """(url, branch) from the book's configuration."""
    repo = (yaml.safe_load(config.read_text()) or {}).get("repository") or {}
    url = str(repo.get("url", "")).rstrip("/")
    if not url.startswith("https://"):
        raise ValueError(f"{config}: repository.url must be an https URL, got {url!r}")
    return url, str(repo.get("branch") or "main")


def install_source(commit: str, config: Path = ROOT / "_config.yml") -> str:
    """The install cell's source: the repository from ``_config.yml``, pinned to ``commit``."""
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise ValueError(f"commit must be a full 40-digit git hash, got {commit!r}")
    url, _ = repository(config)
    return (
        f"{MARKER} (keeps Colab's torch).\n"
        "# Written by tools/sync_notebooks.py from _config.yml and the package's commit; do not edit by hand.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install --quiet "diffusion-edu @ git+{url}.git@{commit}"\n'
        "    # To keep this chapter's training runs and results across runtime resets, uncomment:\n"
        f"{DRIVE_LINE}"
    )


def badge_source(path: Path, config: Path = ROOT / "_config.yml") -> str:
    """The badge cell: "Open in Colab" for ``notebooks/<name>`` on the configured branch."""
    url, branch = repository(config)
    slug = url.split("://", 1)[1].split("/", 1)[1]  # owner/name
    return (
        f"{BADGE_MARKER}\n[![Open In Colab]({COLAB}/assets/colab-badge.svg)]"
        f"({COLAB}/github/{slug}/blob/{branch}/notebooks/{path.name})"
    )


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def has_history() -> bool:
    """True in a full git checkout (not an archive, not a shallow clone)."""
    return _git("rev-parse", "--is-shallow-repository") == "false"


def notebook_commit(path: Path) -> str | None:
    """The commit that holds the notebook as it is on disk: its last commit, or HEAD when it has
    uncommitted changes (or is new)."""
    rel = str(path.resolve().relative_to(ROOT))
    if _git("status", "--porcelain", "--", rel):
        return _git("rev-parse", "HEAD")
    return _git("log", "-1", "--format=%H", "--", rel) or _git("rev-parse", "HEAD")


def package_commit(at: str) -> str | None:
    """The last commit up to ``at`` that changed what the wheel ships."""
    return _git("log", "-1", "--format=%H", at, "--", *PACKAGE_PATHS)


def pinned_commit(source: str) -> str | None:
    """The commit an install cell pins, or None."""
    m = re.search(r"\.git@([0-9a-f]{40})\"", source)
    return m.group(1) if m else None


def expected_commit(path: Path | None = None) -> str:
    """The commit the notebook's install cell must pin (see the module docstring): the last package
    commit up to the notebook's own commit; with ``path=None`` up to HEAD (what a notebook written now,
    and committed next, must pin)."""
    at = notebook_commit(path) if path is not None else _git("rev-parse", "HEAD")
    commit = package_commit(at) if at else None
    if commit is None:
        raise RuntimeError("no git history: the pinned commit cannot be derived (run in a full clone)")
    return commit


def notebooks(root: Path = ROOT) -> list[Path]:
    """Every chapter notebook: ``notebooks/*.ipynb``."""
    return sorted((root / "notebooks").glob("*.ipynb"))


def _is_install(cell) -> bool:
    return cell.cell_type == "code" and cell.source.startswith(MARKER)


def _is_badge(cell) -> bool:
    return cell.cell_type == "markdown" and cell.source.startswith(BADGE_MARKER)


def check_notebook(nb: nbformat.NotebookNode, path: Path, commit: str | None) -> str | None:
    """What is wrong with the notebook's first two cells, or None. ``commit``: the commit the install
    cell must pin (None: only check the form, for clones without history)."""
    if len(nb.cells) < 2:
        return "the notebook lacks its install and badge cells"
    first, second = nb.cells[0], nb.cells[1]
    if not _is_install(first):
        return "its first cell is not the Colab install cell"
    pin = pinned_commit(first.source)
    if pin is None:
        return "its install cell does not pin a commit"
    if first.source != install_source(commit or pin):
        if commit is not None and pin != commit:
            return f"its install cell pins {pin[:12]}, but the package as committed with this notebook is {commit[:12]}"
        return "its install cell differs from the one _config.yml gives"
    if not _is_badge(second) or second.source != badge_source(path):
        return "its second cell is not the Open-in-Colab badge from _config.yml"
    for cell in (first, second):
        if not set(TAGS) <= set(cell.metadata.get("tags", [])):
            return f"its install or badge cell lacks the tags {TAGS}"
    return None


def sync_notebook(nb: nbformat.NotebookNode, path: Path, commit: str) -> bool:
    """Make the first two cells the install cell (pinned to ``commit``) and the badge; True if changed."""
    if check_notebook(nb, path, commit) is None:
        return False
    install, badge = install_source(commit), badge_source(path)
    if nb.cells and _is_install(nb.cells[0]):
        nb.cells[0].source = install
    else:
        cell = nbformat.v4.new_code_cell(install)
        cell.id = CELL_ID
        nb.cells.insert(0, cell)
    if len(nb.cells) > 1 and _is_badge(nb.cells[1]):
        nb.cells[1].source = badge
    else:
        cell = nbformat.v4.new_markdown_cell(badge)
        cell.id = BADGE_ID
        nb.cells.insert(1, cell)
    for cell in nb.cells[:2]:
        cell.metadata["tags"] = sorted(set(cell.metadata.get("tags", [])) | set(TAGS))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a notebook differs")
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    args = parser.parse_args(argv)
    history = has_history()
    if args.check and not history:
        print("no full git history here: checking the cells' form only, not which commit they pin")
    bad = 0
    for path in args.paths or notebooks():
        nb = nbformat.read(path, as_version=4)
        if args.check:
            problem = check_notebook(nb, path, expected_commit(path) if history else None)
            if problem:
                print(f"{path}: {problem}; run `python tools/sync_notebooks.py`")
                bad += 1
        elif sync_notebook(nb, path, expected_commit()):
            nbformat.write(nb, path)
            print(f"updated {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
