"""The book's build tools and configuration: one repository URL, synced install cells, pinned offline
assets, and a table of contents that covers every chapter.

These are the pieces that silently rot: a notebook whose Colab cell installs from an old URL, an npm
range that drifts, a chapter left out of ``_toc.yml`` (``only_build_toc_files`` drops it without a
word). Each is pinned here, and the tools' own logic is tested on small fake inputs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))  # the tools are scripts, not a package

import offline_assets  # noqa: E402
import run_notebooks  # noqa: E402
import sync_notebooks  # noqa: E402

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
NOTEBOOKS = sync_notebooks.notebooks()


# ---- the repository URL and the Colab install cell ------------------------------------------------


HISTORY = sync_notebooks.has_history()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_notebook_starts_with_the_install_and_badge_cells(path: Path):
    """Cells 0 and 1 are exactly what _config.yml and the package's commit give (run
    tools/sync_notebooks.py): the install cell pins the package as committed with the notebook."""
    nb = nbformat.read(path, as_version=4)
    commit = sync_notebooks.expected_commit(path) if HISTORY else None
    assert sync_notebooks.check_notebook(nb, path, commit) is None


def test_install_cell_installs_only_in_colab_pinned_and_keeps_colabs_torch():
    """Locally the cell does nothing; in Colab it pip-installs the package from the configured
    repository at one commit, and nothing else (the package's loose dependencies keep Colab's torch);
    the Drive line is a comment until the reader uncomments it."""
    url = CONFIG["repository"]["url"]
    commit = "0123456789abcdef0123456789abcdef01234567"
    src = sync_notebooks.install_source(commit)
    assert 'if "google.colab" in sys.modules:' in src
    pip_lines = [line for line in src.splitlines() if "pip install" in line]
    assert pip_lines == [f'    %pip install --quiet "diffusion-edu @ git+{url}.git@{commit}"']
    assert "torch" not in pip_lines[0].replace("diffusion-edu", "")
    drive = [line for line in src.splitlines() if "drive.mount" in line]
    assert len(drive) == 1 and drive[0].lstrip().startswith("#") and "os.chdir" in drive[0]
    assert sync_notebooks.pinned_commit(src) == commit
    with pytest.raises(ValueError, match="40-digit"):
        sync_notebooks.install_source("main")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"torch>=[\d.]+"', pyproject), "the package must not pin torch exactly"


def test_badge_opens_the_notebook_on_the_configured_branch():
    url, branch = CONFIG["repository"]["url"], CONFIG["repository"]["branch"]
    badge = sync_notebooks.badge_source(Path("notebooks/05_report_e.ipynb"))
    slug = url.removeprefix("https://github.com/")
    assert f"https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/05_report_e.ipynb" in badge
    assert "colab-badge.svg" in badge


@pytest.mark.skipif(not HISTORY, reason="needs the full git history")
def test_pinned_commit_is_the_last_package_commit_up_to_the_notebook():
    """The pin is derived from history up to the notebook's own commit, so later commits never change
    what a committed notebook must pin."""
    path = NOTEBOOKS[0]
    at = sync_notebooks.notebook_commit(path)
    pin = sync_notebooks.expected_commit(path)
    assert pin == sync_notebooks._git("log", "-1", "--format=%H", at, "--", *sync_notebooks.PACKAGE_PATHS)
    assert sync_notebooks._git("merge-base", "--is-ancestor", pin, at) == ""


def test_repository_url_lives_in_one_place():
    """Only _config.yml names the repository; notebooks carry it only in their generated cells."""
    url = CONFIG["repository"]["url"]
    assert (ROOT / "_config.yml").read_text().count(url) == 1
    files = [
        ROOT / "README.md",
        ROOT / "pyproject.toml",
        ROOT / "_toc.yml",
        *sorted((ROOT / "book").glob("*.md")),
        *sorted((ROOT / "tools").glob("*.py")),
        *sorted((ROOT / "diffusion_edu").rglob("*.py")),
    ]
    assert not [f.name for f in files if url in f.read_text()]
    slug = url.removeprefix("https://github.com/")
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert not [i for i, c in enumerate(nb.cells) if i > 1 and (url in c.source or slug in c.source)], path.name


def test_sync_repairs_or_inserts_the_install_and_badge_cells():
    commit, other = "1" * 40, "2" * 40
    path = Path("notebooks/09_new.ipynb")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A chapter")])
    assert sync_notebooks.check_notebook(nb, path, commit) == "the notebook lacks its install and badge cells"
    assert sync_notebooks.sync_notebook(nb, path, commit) is True
    assert nb.cells[0].source == sync_notebooks.install_source(commit) and len(nb.cells) == 3
    assert nb.cells[1].source == sync_notebooks.badge_source(path) and nb.cells[2].source == "# A chapter"
    assert all(c.metadata["tags"] == ["remove-cell"] for c in nb.cells[:2])
    assert sync_notebooks.check_notebook(nb, path, commit) is None
    nb.cells[0].source = sync_notebooks.install_source(other)
    assert "pins 222222222222" in sync_notebooks.check_notebook(nb, path, commit)
    assert sync_notebooks.check_notebook(nb, path, None) is None  # without history: the form only
    nb.cells[1].source = nb.cells[1].source.replace("/main/", "/old-branch/")
    assert "badge" in sync_notebooks.check_notebook(nb, path, None)
    assert sync_notebooks.sync_notebook(nb, path, commit) is True and len(nb.cells) == 3
    assert sync_notebooks.check_notebook(nb, path, commit) is None
    assert sync_notebooks.sync_notebook(nb, path, commit) is False


def test_repository_must_be_https(tmp_path: Path):
    cfg = tmp_path / "_config.yml"
    cfg.write_text("repository:\n  url: git@example.org:x/y.git\n")
    with pytest.raises(ValueError, match="repository.url must be an https URL"):
        sync_notebooks.repository(cfg)


# ---- table of contents and configuration -----------------------------------------------------------


def _toc_files(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["file"]] if "file" in node else []) + [f for v in node.values() for f in _toc_files(v)]
    if isinstance(node, list):
        return [f for v in node for f in _toc_files(v)]
    return []


def test_toc_lists_every_notebook_and_only_existing_files():
    """only_build_toc_files drops unlisted pages silently, so every notebook must be in _toc.yml."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"], *_toc_files(toc)]
    for f in files:
        assert (ROOT / f"{f}.md").is_file() or (ROOT / f"{f}.ipynb").is_file(), f
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.stem}" in files, f"{nb.name} is not in _toc.yml"


def test_config_renders_stored_outputs_offline():
    """The build never executes notebooks, and the JavaScript it loads is the copy in book/_offline."""
    assert CONFIG["execute"]["execute_notebooks"] == "off"
    assert CONFIG["only_build_toc_files"] is True and str(CONFIG["copyright"]).strip()
    assert CONFIG["author"] == "the diffusion-edu authors"
    assert {"dollarmath", "amsmath"} <= set(CONFIG["parse"]["myst_enable_extensions"])
    assert CONFIG["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")
    sphinx = CONFIG["sphinx"]["config"]
    assert sphinx["html_static_path"] == [str(offline_assets.STATIC)]
    assert not any(Path(p).name == "_static" for p in sphinx["html_static_path"])
    loaded = {sphinx["mathjax_path"], *sphinx["nb_ipywidgets_js"]}
    assert loaded == set(offline_assets.ENTRY_POINTS), "the pages load exactly what the tool installs"
    assert CONFIG["sphinx"]["local_extensions"] == {"book_build": "tools/"}


def test_bibliography_has_the_papers_the_reports_cite():
    bib = (ROOT / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    assert len(keys) == bib.count("\n@") + bib.startswith("@")  # no duplicate keys
    for key in (
        "ho2020ddpm",
        "song2021ddim",
        "nichol2021improved",
        "dhariwal2021beat",
        "ho2022cfg",
        "bansal2022cold",
        "sohldickstein2015deep",
        "ronneberger2015unet",
        "heusel2017fid",
        "salimans2016improved",
        "binkowski2018kid",
        "zhang2018lpips",
        "kingma2013vae",
        "kingma2021vdm",
        "prince2023udl",
        "hendrycks2016gelu",
        "klambauer2017selu",
        "lecun1998gradient",
        "krizhevsky2009cifar",
    ):
        assert key in keys, key


# ---- offline assets ------------------------------------------------------------------------------


def test_npm_versions_are_exact_and_locked():
    """package.json pins exact versions and package-lock.json resolves each to that version."""
    deps = json.loads((ROOT / "package.json").read_text())["dependencies"]
    lock = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    assert set(deps) == {"mathjax", "requirejs", "@jupyter-widgets/html-manager"}
    for name, version in deps.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name}: {version} is not an exact version"
        assert lock[f"node_modules/{name}"]["version"] == version
    assert deps["mathjax"].startswith("3.")


def _fake_node_modules(root: Path) -> None:
    (root / "package.json").write_text(
        json.dumps(
            {"dependencies": {"mathjax": "3.2.2", "requirejs": "2.3.8", "@jupyter-widgets/html-manager": "1.0.15"}}
        )
    )
    (root / "package-lock.json").write_text("{}")
    files = [
        "mathjax/es5/tex-mml-chtml.js",
        "mathjax/es5/input/tex/extensions/boldsymbol.js",
        "mathjax/es5/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff",
        "mathjax/es5/ui/menu.js",
        "mathjax/es5/a11y/explorer.js",
        "mathjax/LICENSE",
        "requirejs/require.js",
        "@jupyter-widgets/html-manager/dist/embed-amd.js",
        "@jupyter-widgets/html-manager/dist/abc.woff2",
        "@jupyter-widgets/html-manager/dist/abc.woff",
        "@jupyter-widgets/html-manager/dist/embed.js.map",
    ]
    for f in files:
        (root / "node_modules" / f).parent.mkdir(parents=True, exist_ok=True)
        (root / "node_modules" / f).write_text(f)
    for pkg, version in (("mathjax", "3.2.2"), ("requirejs", "2.3.8"), ("@jupyter-widgets/html-manager", "1.0.15")):
        (root / "node_modules" / pkg / "package.json").write_text(json.dumps({"version": version, "license": "MIT"}))


def test_copy_assets_lays_out_what_the_pages_load(tmp_path: Path):
    """Entry points land where _config.yml points, MathJax keeps its folder layout (it loads fonts and
    extensions relative to itself), and the copy is stamped with the lock file it came from."""
    _fake_node_modules(tmp_path)
    offline_assets.copy_assets(tmp_path)
    static = tmp_path / offline_assets.STATIC
    for f in (
        *offline_assets.ENTRY_POINTS,
        "mathjax/input/tex/extensions/boldsymbol.js",
        "mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff",
        "html-manager/abc.woff2",
    ):
        assert (static / f).is_file(), f
    assert not (static / "html-manager" / "embed.js.map").exists()
    assert "mathjax 3.2.2 (MIT)" in (static / "NOTICE.md").read_text()
    assert offline_assets.missing_assets(tmp_path) == []
    (tmp_path / "package-lock.json").write_text('{"changed": true}')
    assert offline_assets.missing_assets(tmp_path) == [
        f"{offline_assets.STAMP} (the copy is older than package-lock.json)"
    ]
    (static / "require.js").unlink()
    assert "require.js" in offline_assets.missing_assets(tmp_path)


def test_ensure_assets_skips_npm_when_installed(tmp_path: Path, monkeypatch):
    """With node_modules at the pinned versions, ensure_assets only copies (no network)."""
    _fake_node_modules(tmp_path)
    monkeypatch.setattr(offline_assets, "npm_ci", lambda *a, **k: pytest.fail("npm ci should not run"))
    assert offline_assets.ensure_assets(tmp_path) == tmp_path / offline_assets.STATIC
    assert offline_assets.missing_assets(tmp_path) == []


def test_copy_assets_and_npm_fail_clearly(tmp_path: Path, monkeypatch):
    (tmp_path / "package-lock.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="run `npm ci`"):
        offline_assets.copy_assets(tmp_path)
    monkeypatch.setattr(offline_assets.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="`npm` was not found"):
        offline_assets.npm_ci(tmp_path)
    with pytest.raises(FileNotFoundError, match="package-lock.json is missing"):
        offline_assets.lock_hash(tmp_path / "nowhere")


# ---- running notebooks, the Makefile and CI ---------------------------------------------------------


def test_run_notebooks_refuses_the_smoke_tier(tmp_path: Path):
    """Smoke outputs mean nothing and must never be stored as a chapter's outputs."""
    with pytest.raises(ValueError, match="smoke outputs are never stored"):
        run_notebooks.run_notebook(tmp_path / "x.ipynb", "smoke")


def test_ci_runs_exactly_make_test():
    commands = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))
    ]
    assert commands == ["make test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("book:", "test:", "notebooks:"):
        assert re.search(rf"^{target}", makefile, flags=re.M), target
    test_recipe = makefile.split("\ntest:")[1].split("\n\n")[0]
    assert "DIFFUSION_EDU_TIER=smoke" in test_recipe and "tools/colab_check.py" in test_recipe
    check = (ROOT / "tools" / "colab_check.py").read_text()
    assert '"--nbval-lax"' in check and 'DIFFUSION_EDU_TIER="smoke"' in check


def test_colab_check_installs_nothing_from_the_checkout(tmp_path: Path):
    """The Colab simulation's environment: requirements.txt's pins as constraints without the editable
    install; each notebook alone in its own empty folder; no variable pointing back at the checkout."""
    import colab_check

    pins = colab_check.pins(tmp_path).read_text().splitlines()
    assert "torch==2.13.0" in pins and not [p for p in pins if p.startswith("-e") or p.startswith("#")]
    staged = colab_check.stage_notebooks(tmp_path, NOTEBOOKS[:2])
    assert [p.name for p in staged] == [p.name for p in NOTEBOOKS[:2]]
    assert all(sorted(x.name for x in p.parent.iterdir()) == [p.name] for p in staged)
    assert ROOT.resolve() not in staged[0].resolve().parents
    assert {"PYTHONPATH", "DIFFUSION_EDU_RESULTS"} <= set(colab_check.DROP_ENV)
    files = colab_check.source_files()
    assert "pyproject.toml" in files and "results/metrics/floors.json" in files
    assert not [f for f in files if f.startswith((".venv/", "runs/", "build/"))]


def test_requirements_are_exact_pins():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and line != "-e .":
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.+]+", line), line
