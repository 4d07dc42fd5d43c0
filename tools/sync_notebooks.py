"""Write every notebook's Colab install cell from the repository URL in ``_config.yml``.

The repository URL lives in one place, ``_config.yml`` (``repository.url`` and ``repository.branch``);
the launch buttons read it there, and this script derives each notebook's first cell from it. The cell
installs the package only when the notebook runs in Colab, and only the package: its dependencies in
``pyproject.toml`` are loose, so pip keeps Colab's own torch.

    python tools/sync_notebooks.py            # rewrite install cells that differ (inserting missing ones)
    python tools/sync_notebooks.py --check    # exit 1 and name the notebooks whose cell differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
MARKER = "# Colab only: install the book's package"
CELL_ID = "colab-install"
TAGS = ["remove-cell"]  # the static site does not show it (myst-nb drops cells with this tag)


def repository(config: Path = ROOT / "_config.yml") -> tuple[str, str]:
    """(url, branch) from the book's configuration."""
    repo = (yaml.safe_load(config.read_text()) or {}).get("repository") or {}
    url = str(repo.get("url", "")).rstrip("/")
    if not url.startswith("https://"):
        raise ValueError(f"{config}: repository.url must be an https URL, got {url!r}")
    return url, str(repo.get("branch") or "main")


def install_source(config: Path = ROOT / "_config.yml") -> str:
    """The install cell's source, derived from ``_config.yml``."""
    url, branch = repository(config)
    return (
        f"{MARKER} (keeps Colab's torch).\n"
        "# Written by tools/sync_notebooks.py from the repository URL in _config.yml; do not edit by hand.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install --quiet "diffusion-edu @ git+{url}.git@{branch}"'
    )


def notebooks(root: Path = ROOT) -> list[Path]:
    """Every chapter notebook: ``notebooks/*.ipynb``."""
    return sorted((root / "notebooks").glob("*.ipynb"))


def check_notebook(nb: nbformat.NotebookNode, expected: str) -> str | None:
    """What is wrong with the notebook's install cell, or None when it is the expected first cell."""
    if not nb.cells:
        return "the notebook has no cells"
    first = nb.cells[0]
    if first.cell_type != "code" or not first.source.startswith(MARKER):
        return "its first cell is not the Colab install cell"
    if first.source != expected:
        return "its install cell differs from the one _config.yml gives"
    if not set(TAGS) <= set(first.metadata.get("tags", [])):
        return f"its install cell lacks the tags {TAGS}"
    return None


def sync_notebook(nb: nbformat.NotebookNode, expected: str) -> bool:
    """Make the first cell the expected install cell; returns True when the notebook changed."""
    problem = check_notebook(nb, expected)
    if problem is None:
        return False
    if nb.cells and nb.cells[0].cell_type == "code" and nb.cells[0].source.startswith(MARKER):
        cell = nb.cells[0]
        cell.source = expected
    else:
        cell = nbformat.v4.new_code_cell(expected)
        cell.id = CELL_ID
        nb.cells.insert(0, cell)
    cell.metadata["tags"] = sorted(set(cell.metadata.get("tags", [])) | set(TAGS))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a notebook differs")
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    args = parser.parse_args(argv)
    expected = install_source()
    bad = 0
    for path in args.paths or notebooks():
        nb = nbformat.read(path, as_version=4)
        if args.check:
            problem = check_notebook(nb, expected)
            if problem:
                print(f"{path}: {problem}; run `python tools/sync_notebooks.py`")
                bad += 1
        elif sync_notebook(nb, expected):
            nbformat.write(nb, path)
            print(f"updated {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
