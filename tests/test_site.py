"""The built site, opened in a real browser: what a reader of the static book actually gets.

Builds the book exactly as ``make book`` does (``jupyter-book build -W -n --keep-going .``: any
warning fails), then opens chapter 1 from disk in headless Chromium, driven over the DevTools
protocol (``tools/browser.py``), and checks that the page loads nothing from the network, that
MathJax typeset every equation (no raw TeX left), that the scrubbable animation's slider is there
and moves frames, and that the widget rendered its first view from the embedded state. Screenshots
are saved under ``_build/screenshots/`` as CI artifacts. Select these tests with
``pytest -m browser``; ``make test`` installs Debian's ``chromium`` when it is missing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))  # the tools are scripts, not a package

from browser import Chromium, find_chromium  # noqa: E402

pytestmark = pytest.mark.browser

HTML_DIR = ROOT / "_build" / "html"
CHAPTER = HTML_DIR / "notebooks" / "01_forward_process.html"
SHOTS = ROOT / "_build" / "screenshots"


@pytest.fixture(scope="module")
def site() -> Path:
    """Build the book from the repository root, warnings as errors (also installs the offline assets)."""
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", "-W", "-n", "--keep-going", str(ROOT)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"jupyter-book build failed:\n{log[-5000:]}"
    assert "WARNING" not in log, log[-5000:]
    assert CHAPTER.is_file()
    return HTML_DIR


@pytest.fixture(scope="module")
def browser(site: Path):
    """Chapter 1 open in headless Chromium, after MathJax finished and the widget manager rendered."""
    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make test` installs it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (`make test` installs it: apt-get install -y chromium)")
    with Chromium(width=1200, height=1600) as b:
        b.open(CHAPTER.as_uri())
        b.wait_for("window.MathJax && MathJax.startup && MathJax.startup.promise.then(() => true)")
        b.wait_for("document.querySelector('.widget-slider') !== null")
        b.wait_for("document.querySelector('input.anim-slider') !== null && window.document.readyState === 'complete'")
        yield b


def test_pages_load_no_script_or_style_from_another_host(site: Path):
    """Every page's scripts and stylesheets are local, and the local MathJax, require.js and widget
    manager that chapter 1 loads exist."""
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 5
    for page in pages:
        text = page.read_text()
        remote = re.findall(r'<script[^>]+src="(?:https?:)?//[^"]+"', text) + re.findall(
            r'<link[^>]+rel="stylesheet"[^>]+href="(?:https?:)?//[^"]+"', text
        )
        assert not remote, f"{page.relative_to(site)} loads {remote}"
    chapter = CHAPTER.read_text()
    for src in ("_static/mathjax/tex-mml-chtml.js", "_static/require.js", "_static/html-manager/embed-amd.js"):
        assert f'src="../{src}' in chapter, src
        assert (site / src).is_file(), src
    assert 'type="application/vnd.jupyter.widget-state+json"' in chapter


def test_reports_page_includes_the_generated_ledger(site: Path):
    """The ledger on the reports page is the one diffusion_edu.ledger renders, not typed text."""
    from diffusion_edu.ledger import ENTRIES

    page = (site / "book" / "reports.html").read_text()
    assert "numbers re-run so far" in page
    assert len(re.findall(r"<td><p>[A-E]</p></td>", page)) == len(ENTRIES)


def test_chapter_requests_nothing_from_the_network_and_nothing_fails(browser: Chromium):
    """Offline means offline: every request the page made (scripts, fonts, frames) was to a local
    file, data or blob URL, and none failed."""
    urls = [e["request"]["url"] for e in browser.events("Network.requestWillBeSent")]
    assert any(u.endswith("tex-mml-chtml.js") or "tex-mml-chtml.js?" in u for u in urls)
    remote = [u for u in urls if not u.startswith(("file:", "data:", "blob:"))]
    assert not remote, remote
    failed = [(e.get("errorText"), e.get("requestId")) for e in browser.events("Network.loadingFailed")]
    assert not failed, failed


def test_mathjax_typeset_every_equation(browser: Chromium):
    """Every math element of chapter 1 holds MathJax output, with no raw TeX and no TeX error left."""
    n_source = len(re.findall(r'class="math[ "]', CHAPTER.read_text()))
    assert n_source > 30
    report = browser.evaluate("""(() => {
        const els = Array.from(document.querySelectorAll('span.math, div.math'));
        const raw = [], untyped = [];
        for (const el of els) {
            if (!el.querySelector('mjx-container')) untyped.push(el.textContent.slice(0, 80));
            const copy = el.cloneNode(true);
            copy.querySelectorAll('mjx-container').forEach(m => m.remove());
            if (/\\\\\\(|\\\\\\[|\\$\\$|\\\\begin|\\\\frac/.test(copy.textContent)) raw.push(copy.textContent.slice(0, 80));
        }
        return {n: els.length, raw, untyped, errors: document.querySelectorAll('mjx-merror').length};
    })()""")
    assert report["n"] == n_source
    assert not report["untyped"], f"{len(report['untyped'])} equations not typeset, e.g. {report['untyped'][:3]}"
    assert not report["raw"], f"raw TeX left: {report['raw'][:3]}"
    assert report["errors"] == 0


def test_widget_rendered_its_first_view(browser: Chromium):
    """From the embedded widget state alone: the slider at t = 100, the frame image (decoded), and
    the read-out table rendered as HTML."""
    view = browser.evaluate("""(() => {
        const img = document.querySelector('img.widget-image');
        const html = document.querySelector('.widget-html-content');
        return {
            readout: document.querySelector('.widget-slider .widget-readout').textContent.trim(),
            img: img ? img.src.slice(0, 5) : null,
            decoded: img ? img.naturalWidth : 0,
            table: html ? html.querySelectorAll('table.noising-readout tr').length : 0,
            text: html ? html.textContent : '',
        };
    })()""")
    assert view["readout"] == "100"
    assert view["img"] == "blob:" and view["decoded"] > 50
    assert view["table"] == 5  # a header and one row per schedule
    assert "t = 100" in view["text"] and "linear" in view["text"]


def test_animation_slider_moves_frames(browser: Chromium):
    """The scrubbable animation works without a kernel: its slider spans every frame, and dragging
    it (set the value, fire "input", as a reader's drag does) shows a different decoded frame at the
    start, middle and end."""
    out = browser.evaluate("""(async () => {
        const slider = document.querySelector('input.anim-slider');
        const img = document.querySelector("img[id^='_anim_img']");
        const hash = s => { let h = 0; for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0; return h; };
        const max = parseInt(slider.max), seen = [];
        for (const v of [0, Math.floor(max / 2), max]) {
            slider.value = String(v);
            slider.dispatchEvent(new Event('input', {bubbles: true}));
            await img.decode();
            seen.push([parseInt(slider.value), hash(img.src), img.src.slice(0, 11), img.naturalWidth]);
        }
        return {max, seen};
    })()""")
    assert out["max"] >= 4, out  # the stored notebook ran at a real tier: many frames
    assert [s[0] for s in out["seen"]] == [0, out["max"] // 2, out["max"]]
    assert len({s[1] for s in out["seen"]}) == 3, "the frame did not change with the slider"
    assert all(s[2] == "data:image/" and s[3] > 100 for s in out["seen"]), out


def test_screenshots_for_ci(browser: Chromium):
    """Pictures for people: the chapter's top (typeset math) and the widget with the animation."""
    top = browser.screenshot(SHOTS / "01_forward_process_top.png")
    y = browser.evaluate(
        "Math.round(document.querySelector('.widget-slider').getBoundingClientRect().top + window.scrollY)"
    )
    widget = browser.screenshot(SHOTS / "01_forward_process_widget.png", top=max(0, y - 150), height=1300)
    for shot in (top, widget):
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
