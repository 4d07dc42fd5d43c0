"""The built site, opened in a real browser: what a reader of the static book actually gets.

Builds the book exactly as ``make book`` does (``jupyter-book build -W -n --keep-going .``: any
warning fails), then opens chapter 1 from disk in headless Chromium with no network, and checks that
MathJax typeset every equation (no raw TeX left), that the scrubbable animation's slider is there and
moves frames, and that the widget rendered its first view from the embedded state. Screenshots are
saved under ``_build/screenshots/`` as CI artifacts. Select these tests with ``pytest -m browser``;
``make test`` installs Debian's ``chromium`` when it is missing.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
HTML_DIR = ROOT / "_build" / "html"
CHAPTER = HTML_DIR / "notebooks" / "01_forward_process.html"
SHOTS = ROOT / "_build" / "screenshots"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("chromium is missing: `make test` installs it (apt-get install -y chromium)")
    pytest.skip("chromium is not installed (`make test` installs it: apt-get install -y chromium)")


def _run_chromium(*args: str, timeout: int = 120) -> str:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([_chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


WIDTH = 1200  # window width for every run, so that page layout (and so the probe's y) is the same


def dump_dom(page: Path) -> str:
    """The page's DOM after its scripts ran (10 s of virtual time: MathJax, the widget manager)."""
    return _run_chromium("--virtual-time-budget=10000", f"--window-size={WIDTH},1600", "--dump-dom", page.as_uri())


def screenshot(page: Path, out: Path, top: int = 0, height: int = 1600) -> Path:
    """A PNG of the page from y = top (document pixels) down ``height`` pixels."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _run_chromium("--virtual-time-budget=10000", f"--window-size={WIDTH},{top + height}",
                  f"--screenshot={out}", page.as_uri())
    if top:
        from PIL import Image

        with Image.open(out) as im:
            im.crop((0, top, WIDTH, top + height)).save(out)
    assert out.is_file() and out.stat().st_size > 10_000
    return out


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


# A probe appended to a copy of the chapter page: it drags the animation's slider the way a reader
# does (set the value, fire "input") and writes what it saw into the page for --dump-dom to read.
PROBE = """
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    function hash(s) { var h = 0; for (var i = 0; i < s.length; i++) { h = (h * 31 + s.charCodeAt(i)) | 0; } return h; }
    var out = {};
    var slider = document.querySelector("input.anim-slider");
    var img = document.querySelector("img[id^='_anim_img']");
    out.slider = !!slider; out.img = !!img;
    if (slider && img) {
      out.max = parseInt(slider.max);
      out.frames = [];
      [0, Math.floor(out.max / 2), out.max].forEach(function (v) {
        slider.value = String(v);
        slider.dispatchEvent(new Event("input", {bubbles: true}));
        out.frames.push([parseInt(slider.value), hash(img.src), img.src.slice(0, 22)]);
      });
    }
    var w = document.querySelector(".widget-slider");
    out.widget_top = w ? Math.round(w.getBoundingClientRect().top + window.scrollY) : null;
    var pre = document.createElement("pre"); pre.id = "probe-result";
    pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
  }, 1000);
});
</script>
"""


@pytest.fixture(scope="module")
def probe(site: Path) -> dict:
    """What the probe saw, from a copy of the chapter page with the probe appended."""
    page = CHAPTER.with_name("_probe_01_forward_process.html")
    page.write_text(CHAPTER.read_text().replace("</body>", PROBE + "</body>"))
    try:
        dom = dump_dom(page)
    finally:
        page.unlink()
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', dom, flags=re.S)
    assert match, "the probe did not run"
    return json.loads(html.unescape(match.group(1)))


@pytest.fixture(scope="module")
def chapter_dom(site: Path) -> str:
    return dump_dom(CHAPTER)


class _MathScan(HTMLParser):
    """Collects, for each Sphinx math element (class "math"), its own text outside MathJax's output
    and whether MathJax put a typeset container in it."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, is_math, inside_mjx)
        self.math: list[dict] = []

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        inside_mjx = bool(self.stack) and self.stack[-1][2]
        is_math = tag in ("span", "div") and "math" in classes and not inside_mjx
        if is_math:
            self.math.append({"text": "", "typeset": False})
        if tag.startswith("mjx-") and self.math and not inside_mjx:
            self.math[-1]["typeset"] = True
        self.stack.append((tag, is_math, inside_mjx or tag.startswith("mjx-")))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self.stack and not self.stack[-1][2] and any(m for _, m, _ in self.stack):
            self.math[-1]["text"] += data


def test_pages_load_nothing_from_the_network(site: Path):
    """Offline means offline: no page loads a script or stylesheet from another host, and the local
    MathJax, require.js and widget manager they load exist."""
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 5
    for page in pages:
        text = page.read_text()
        remote = re.findall(r'<script[^>]+src="(https?:)?//[^"]+"', text) + re.findall(
            r'<link[^>]+rel="stylesheet"[^>]+href="(?:https?:)?//[^"]+"', text)
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
    assert len(re.findall(r"<td><p>Report [A-E]</p></td>", page)) == len(ENTRIES)


def test_mathjax_typeset_every_equation(site: Path, chapter_dom: str):
    """Every math element of chapter 1 holds MathJax output, with no raw TeX and no TeX errors left."""
    n_source = len(re.findall(r'class="math[ "]', CHAPTER.read_text()))
    assert n_source > 30
    scan = _MathScan()
    scan.feed(chapter_dom)
    assert len(scan.math) == n_source
    untyped = [m["text"][:80] for m in scan.math if not m["typeset"]]
    assert not untyped, f"{len(untyped)} equations not typeset, e.g. {untyped[:3]}"
    raw = [m["text"][:80] for m in scan.math if re.search(r"\\\(|\\\[|\$\$|\\begin|\\frac", m["text"])]
    assert not raw, f"raw TeX left: {raw[:3]}"
    assert "<mjx-merror" not in chapter_dom and "data-mjx-error" not in chapter_dom


def test_widget_rendered_its_first_view(chapter_dom: str):
    """From the embedded widget state alone: a slider at t = 100, the frame image, the read-out table."""
    assert re.search(r'class="[^"]*widget-slider[^"]*"', chapter_dom)
    assert re.search(r'<div class="widget-readout"[^>]*>100</div>', chapter_dom)  # the slider's value
    assert re.search(r'<img class="[^"]*widget-image[^"]*" src="blob:', chapter_dom)
    # rendered HTML (double quotes), not the JSON state string (single quotes)
    assert '<table class="noising-readout">' in chapter_dom and "<b>t = 100</b>" in chapter_dom


def test_animation_slider_moves_frames(probe: dict):
    """The scrubbable animation works without a kernel: its slider spans every frame and dragging it
    shows a different embedded frame at the start, middle and end."""
    out = probe
    assert out["slider"] and out["img"], out
    assert out["max"] >= 4, out  # the stored notebook is executed at a real tier: many frames
    values = [f[0] for f in out["frames"]]
    assert values == [0, out["max"] // 2, out["max"]], out
    assert len({f[1] for f in out["frames"]}) == 3, "the frame did not change with the slider"
    assert all(f[2].startswith("data:image/") for f in out["frames"]), out


def test_screenshots_for_ci(site: Path, probe: dict):
    """Pictures of the chapter's top (typeset math) and of the widget with the animation, for people."""
    assert probe["widget_top"], probe
    top = screenshot(CHAPTER, SHOTS / "01_forward_process_top.png")
    widget = screenshot(CHAPTER, SHOTS / "01_forward_process_widget.png", top=max(0, probe["widget_top"] - 150), height=1300)
    assert top.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and widget.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
