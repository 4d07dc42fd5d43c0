"""Drive headless Chromium through the DevTools protocol over a pipe (standard library only).

The browser test (``tests/test_site.py``) needs more than ``--dump-dom``: it waits until MathJax
and the widget manager have finished (real conditions, not a virtual-time guess, so a busy CI
machine cannot make it flaky), moves the animation's slider like a reader, and takes screenshots
of chosen parts of a page. ``--remote-debugging-pipe`` makes Chromium read protocol messages
(JSON, each ended by a NUL byte) on file descriptor 3 and answer on 4: no port, no websocket.

    with Chromium() as browser:
        browser.open(Path("_build/html/index.html").as_uri())
        browser.wait_for("document.readyState === 'complete'")
        title = browser.evaluate("document.title")
        browser.screenshot("shot.png")
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    """The browser answered a command with an error, died, or a wait timed out."""


class Chromium:
    """One headless Chromium with one page, driven over the DevTools pipe."""

    def __init__(self, width: int = 1200, height: int = 1600, executable: str | None = None, timeout: float = 60.0):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError("chromium is not installed (Debian: apt-get install -y chromium)")
        self.width, self.height, self.timeout = width, height, timeout
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict] = []
        self._session: str | None = None

    # ---- process and pipe ----------------------------------------------------------------------

    def __enter__(self) -> Chromium:
        self._profile = tempfile.TemporaryDirectory()
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire_fds() -> None:  # in the child: the protocol pipe must be fds 3 (read) and 4 (write)
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self._proc = subprocess.Popen(
            [
                self.executable,
                *FLAGS,
                f"--user-data-dir={self._profile.name}",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_fds,
            pass_fds=(3, 4),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next((t for t in targets if t["type"] == "page"), None)
        target_id = page["targetId"] if page else self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target_id, "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Network.enable")  # so that requests and failed loads show up in events()
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._proc.poll() is None:
                self._session = None
                self.send("Browser.close", timeout=10)
        except (BrowserError, OSError):
            pass
        finally:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            for fd in (self._to_child, self._from_child):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._profile.cleanup()

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("timed out waiting for the browser")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise BrowserError("the browser closed the DevTools pipe (it died?)")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, timeout: float | None = None) -> dict:
        """Send one protocol command to the page (or the browser before attaching); return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self._session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self._session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    # ---- what the tests use ------------------------------------------------------------------------

    def open(self, url: str, timeout: float | None = None) -> None:
        """Navigate and wait for the page's load event."""
        self._events.clear()
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + (timeout or self.timeout)
        while not any(e["method"] == "Page.loadEventFired" for e in self._events):
            self._events.append(self._read_message(deadline))

    def events(self, method: str) -> list[dict]:
        """The protocol events of one kind received since the last :meth:`open`, e.g.
        ``"Network.requestWillBeSent"`` or ``"Network.loadingFailed"`` (their ``params``)."""
        return [e["params"] for e in self._events if e["method"] == method]

    def evaluate(self, expression: str, timeout: float | None = None) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, timeout=timeout
        )
        if "exceptionDetails" in result:
            raise BrowserError(
                f"{expression[:80]!r} raised: {result['exceptionDetails'].get('exception', {}).get('description')}"
            )
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None, interval: float = 0.2) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression!r}")
            time.sleep(interval)

    def screenshot(self, path: str | os.PathLike, top: float = 0, height: float | None = None) -> Path:
        """A PNG of the page from ``top`` (document pixels) down ``height`` pixels (default: the window)."""
        clip = {"x": 0, "y": top, "width": self.width, "height": height or self.height, "scale": 1}
        data = self.send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True})[
            "data"
        ]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
