"""The generated site in a real headless Chromium, driven over the DevTools protocol: sort, filter, follow a
link, every image loaded, no console errors, and a screenshot kept as a test artefact."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import leaderboard_fixtures as F
import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (/usr/bin/chromium): apt-get install -y chromium",
                allow_module_level=True)
websocket = pytest.importorskip("websocket", reason="websocket-client (the dev extra) is not installed")


class Browser:
    """Just enough of the Chrome DevTools Protocol: one page, commands, and the events that arrive."""

    def __init__(self, profile: Path):
        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1400,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        url = self._devtools_url()
        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _devtools_url(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if "DevTools listening on " in line:
                return line.split("DevTools listening on ", 1)[1].strip()
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError("chromium did not start its DevTools endpoint")

    def call(self, method: str, params: dict | None = None, *, session: bool = False) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 30) -> None:
        start = len(self.events)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.get("method") == event for e in self.events[start:]):
                return
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(event)

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                      session=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def open(self, url: str) -> None:
        mark = len(self.events)
        self.call("Page.navigate", {"url": url}, session=True)
        if not any(e.get("method") == "Page.loadEventFired" for e in self.events[mark:]):
            self.wait_for("Page.loadEventFired")
        self.js("new Promise(r => setTimeout(r, 50))")  # let DOMContentLoaded handlers finish

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView();"
                      "const b = e.getBoundingClientRect(); return [b.x + b.width / 2, b.y + b.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1}, session=True)

    def type_into(self, selector: str, text: str) -> None:
        self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.focus(); e.select(); }})()")
        self.call("Input.insertText", {"text": text}, session=True)

    def images_loaded(self) -> list[tuple[str, int]]:
        """[(src, naturalWidth)] once every image has finished loading or failed."""
        return self.js("Promise.all(Array.from(document.images).map(i => i.complete ? null : "
                       "new Promise(r => { i.onload = i.onerror = r; }))).then(() => "
                       "Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth]))")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                out.append(str(p["exceptionDetails"]))
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(str(p.get("args")))
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"{p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError, websocket.WebSocketException):
            pass  # already gone: the process is reaped below either way
        self.ws.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def site(tmp_path) -> Path:
    from fxbench.leaderboard.generate import build_leaderboard, write_leaderboard

    out = tmp_path / "board"  # the repository's layout: the store beside site/, gallery images linked there
    results = F.make_store(out / "results")
    write_leaderboard(build_leaderboard(results_dir=results, spec_for=F.fake_spec, gallery_from="results"),
                      out_dir=out)
    assert not list((out / "site").rglob("gallery")), "linked, not copied"
    return out / "site"


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def row_ids(b: Browser, table: str) -> list[str]:
    return b.js(f"Array.from(document.querySelectorAll('#{table} tbody tr')).filter(r => !r.hidden)"
                ".map(r => r.dataset.id)")


def test_site_in_headless_chromium(site, browser, tmp_path):
    b = browser
    b.open((site / "index.html").as_uri())
    assert b.js("document.title") == "fxbench leaderboard"
    assert row_ids(b, "board-v1-full") == ["pgd-at", "trades", "fast-at", "erm-baseline"]

    # Sort by robust accuracy at 8/255: scores first high-to-low, a second click reverses.
    col = b.js("Array.from(document.querySelectorAll('#board-v1-full thead th'))"
               ".findIndex(th => th.textContent.includes('8/255'))")
    header = f"#board-v1-full thead th:nth-child({col + 1}) button"
    b.click(header)
    assert row_ids(b, "board-v1-full") == ["trades", "pgd-at", "fast-at", "erm-baseline"]
    assert b.js(f"document.querySelector('{header}').parentElement.getAttribute('aria-sort')") == "descending"
    b.click(header)
    assert row_ids(b, "board-v1-full") == ["erm-baseline", "fast-at", "pgd-at", "trades"]
    b.click("#board-v1-full thead th:nth-child(2) button")  # text column: A-Z by name
    assert row_ids(b, "board-v1-full") == ["erm-baseline", "fast-at", "pgd-at", "trades"]

    # Filter rows as a person types.
    b.type_into("#filter", "adversarial")
    assert row_ids(b, "board-v1-full") == ["fast-at", "pgd-at", "trades"]
    b.type_into("#filter", "gradient-masking")
    assert row_ids(b, "board-v1-full") == ["fast-at"]
    b.type_into("#filter", "")
    b.js("document.querySelector('#filter').dispatchEvent(new Event('input'))")
    assert len(row_ids(b, "board-v1-full")) == 4

    # The scatter plot switches between attribution methods.
    b.js("(() => { const s = document.querySelector('select.image-switch'); s.value = s.options[1].value;"
         "s.dispatchEvent(new Event('change')); })()")
    loaded = b.images_loaded()
    assert loaded and all(w > 0 for _, w in loaded), loaded
    assert any(src.endswith("scatter-full-gradcam.png") for src, _ in loaded)

    shot = tmp_path / "leaderboard-index.png"
    b.screenshot(shot)

    # Follow a submission's link: its page shows the curve and gallery, all loaded.
    b.click("#board-v1-full tr[data-id='pgd-at'] a")
    b.wait_for("Page.loadEventFired")
    assert b.js("location.pathname").endswith("/v1/pgd-at.html")
    loaded = b.images_loaded()
    assert len(loaded) == 1 + 4, loaded  # robustness curve + 2 images x 2 methods
    assert all(w > 0 for _, w in loaded), loaded
    b.type_into("#filter", "linf-8")
    assert b.js("Array.from(document.querySelectorAll('#metrics tbody tr')).filter(r => !r.hidden).length") == 2
    page_shot = tmp_path / "leaderboard-submission.png"
    b.screenshot(page_shot)

    b.open((site / "v1" / "methods.html").as_uri())
    assert b.js("document.querySelectorAll('#methods-pooled tbody tr.reference').length") == 3

    assert b.errors() == []
    for p in (shot, page_shot):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
        if os.environ.get("FXBENCH_ARTIFACTS"):
            dest = Path(os.environ["FXBENCH_ARTIFACTS"])
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dest / p.name)


def test_a_broken_image_is_caught(site, browser):
    """The checks above can fail: a missing file shows up as naturalWidth 0 and a console error."""
    (site / "v1" / "pgd-at" / "robustness.png").unlink()
    browser.open((site / "v1" / "pgd-at.html").as_uri())
    loaded = dict(browser.images_loaded())
    assert loaded["pgd-at/robustness.png"] == 0
    assert any("robustness.png" in e for e in browser.errors())
