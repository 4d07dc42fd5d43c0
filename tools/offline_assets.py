"""Install the JavaScript the static book serves itself, so that the site works offline.

By default Jupyter Book pages load MathJax, require.js and the ipywidgets embed manager from CDNs;
offline, math shows as raw TeX and widgets render blank. This script installs the exact versions
pinned in ``package.json`` / ``package-lock.json`` with ``npm ci`` into ``node_modules/`` (ignored by
git) and copies the files the pages load into ``book/_offline/`` (ignored by git), the folder that
``_config.yml`` names in ``html_static_path`` (Sphinx copies it to ``_build/html/_static/``). It is
not called ``_static`` because Jupyter Book 1 injects every .js/.css under ``<book>/_static`` into
every page.

Run by ``make book`` and by the Sphinx extension in ``tools/book_build.py`` (so a plain
``jupyter-book build .`` installs them too)::

    python tools/offline_assets.py          # npm ci when needed, then copy
    python tools/offline_assets.py --check  # exit 1 and list what is missing
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATIC = Path("book") / "_offline"
STAMP = ".installed-from"  # holds the hash of package-lock.json the copy was made from

# (package, glob inside the package, destination folder inside book/_offline)
COPIES: list[tuple[str, str, str]] = [
    # MathJax 3: the combined TeX+MathML -> CommonHTML component, the fonts it loads, and the
    # pieces it may load lazily (TeX extensions through autoload, the menu, accessibility).
    ("mathjax", "es5/tex-mml-chtml.js", "mathjax"),
    ("mathjax", "es5/input/**/*.js", "mathjax/input"),
    ("mathjax", "es5/output/chtml/**/*", "mathjax/output/chtml"),
    ("mathjax", "es5/ui/**/*.js", "mathjax/ui"),
    ("mathjax", "es5/a11y/**/*.js", "mathjax/a11y"),
    ("mathjax", "LICENSE", "mathjax"),
    # require.js: the AMD loader the widget manager needs.
    ("requirejs", "require.js", "."),
    # The ipywidgets HTML manager (renders the widget state embedded in a page) and its icon fonts,
    # which it loads relative to its own URL.
    ("@jupyter-widgets/html-manager", "dist/embed-amd.js", "html-manager"),
    ("@jupyter-widgets/html-manager", "dist/*.woff2", "html-manager"),
    ("@jupyter-widgets/html-manager", "dist/*.woff", "html-manager"),
]

# The book's own shim, copied from tools/: tells require.js where the widget manager's module lives.
REQUIRE_CONFIG = "require-config.js"

# The files the pages reference directly (checked after copying, and by the build).
ENTRY_POINTS: tuple[str, ...] = ("mathjax/tex-mml-chtml.js", "require.js", REQUIRE_CONFIG, "html-manager/embed-amd.js")


def lock_hash(root: Path = ROOT) -> str:
    """SHA-256 of package-lock.json and the require.js shim: the copy is redone when either changes."""
    lock = root / "package-lock.json"
    if not lock.is_file():
        raise FileNotFoundError(
            f"{lock} is missing: the offline assets are pinned there (run `npm install --package-lock-only`)"
        )
    shim = Path(__file__).resolve().parent / REQUIRE_CONFIG
    return hashlib.sha256(lock.read_bytes() + shim.read_bytes()).hexdigest()


def npm_ci(root: Path = ROOT, npm: str = "npm") -> None:
    """``npm ci``: install exactly what package-lock.json pins into root/node_modules."""
    exe = shutil.which(npm)
    if exe is None:
        raise RuntimeError(
            f"`{npm}` was not found: the book's offline JavaScript (MathJax, require.js, the widget "
            "manager) is installed from the npm registry. Install Node.js and npm (Debian: apt-get install -y npm)."
        )
    cmd = [exe, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed in {root}:\n{proc.stdout}\n{proc.stderr}")


def _installed_version(root: Path, package: str) -> str | None:
    meta = root / "node_modules" / package / "package.json"
    return json.loads(meta.read_text())["version"] if meta.is_file() else None


def _pinned_versions(root: Path) -> dict[str, str]:
    return dict(json.loads((root / "package.json").read_text())["dependencies"])


def copy_assets(root: Path = ROOT) -> list[Path]:
    """Copy the files in :data:`COPIES` from node_modules into book/_offline; returns the copied paths."""
    static = root / STATIC
    if static.exists():
        shutil.rmtree(static)
    copied: list[Path] = []
    for package, pattern, dest in COPIES:
        base = root / "node_modules" / package
        src_root = base / pattern.split("/**")[0] if "/**" in pattern else base
        matches = [p for p in sorted(base.glob(pattern)) if p.is_file()]
        if not matches:
            raise FileNotFoundError(f"no file matches {package}/{pattern} under {root / 'node_modules'}: run `npm ci`")
        for src in matches:
            rel = src.relative_to(src_root) if "/**" in pattern else Path(src.name)
            target = static / dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            copied.append(target)
    shutil.copy2(Path(__file__).resolve().parent / REQUIRE_CONFIG, static / REQUIRE_CONFIG)
    copied.append(static / REQUIRE_CONFIG)
    notice = ["Copied by tools/offline_assets.py from the npm packages pinned in package-lock.json:"]
    for package in _pinned_versions(root):
        meta = json.loads((root / "node_modules" / package / "package.json").read_text())
        notice.append(f"- {package} {meta['version']} ({meta.get('license', 'see package')})")
    (static / "NOTICE.md").write_text("\n".join(notice) + "\n")
    (static / STAMP).write_text(lock_hash(root) + "\n")
    return copied


def missing_assets(root: Path = ROOT) -> list[str]:
    """What a build would lack: entry points not present, or a copy made from another package-lock.json."""
    static = root / STATIC
    missing = [f for f in ENTRY_POINTS if not (static / f).is_file()]
    stamp = static / STAMP
    if not missing and (not stamp.is_file() or stamp.read_text().strip() != lock_hash(root)):
        missing.append(f"{STAMP} (the copy is older than package-lock.json)")
    return missing


def ensure_assets(root: Path = ROOT, npm: str = "npm") -> Path:
    """Install and copy the offline assets unless an up-to-date copy is already there; returns book/_offline."""
    root = Path(root)
    if missing_assets(root):
        pinned = _pinned_versions(root)
        if any(_installed_version(root, p) != v for p, v in pinned.items()):
            npm_ci(root, npm)
        copy_assets(root)
        still = missing_assets(root)
        if still:
            raise RuntimeError(f"offline assets still missing after copying: {still}")
    return root / STATIC


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when something is missing")
    parser.add_argument("--root", type=Path, default=ROOT, help="the book's root (holds package.json)")
    args = parser.parse_args(argv)
    if args.check:
        missing = missing_assets(args.root)
        for m in missing:
            print(f"missing: {args.root / STATIC / m}")
        return 1 if missing else 0
    static = ensure_assets(args.root)
    n = sum(1 for p in static.rglob("*") if p.is_file())
    print(f"offline assets ready: {n} files in {static}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
