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
from fxbench.leaderboard.tables import Ranking

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


LONG_NAME = "ResNet-10t, FGSM adversarial training with random start (L-inf 4/255)"  # a real baseline's name
HOSTILE = '<img src=x onerror="window.pwned=1">Evil & "quoted"'
V2_RANKING = Ranking(rank_by=("robust/linf-4/balanced_accuracy", "clean/balanced_accuracy"),
                     unranked_flags=frozenset(), min_n_for_ci=20, n=801, n_fracture=143)
PARAMS = {"erm-baseline": 850_000, "pgd-at": 4_900_000, "trades": 11_200_000, "fast-at": 23_500_000}


def _write(folder: Path, f: F.Fake, *, version: str, **submission) -> None:
    samples = F.make_samples(f)
    result = F.make_result(f, samples, version=version)
    result["submission"].update(submission)
    F.write_stored(folder / version, f, version=version, result=result, samples=samples)


@pytest.fixture
def site(tmp_path) -> Path:
    """v1: four full-preset results (one with a real baseline's long name; parameter counts whose labels sort
    differently as text: 850k, 4.9M, 11.2M, 23.5M). v2: quick-preset results only, one of them with hostile
    strings in every submitted text field."""
    from fxbench.leaderboard.generate import build_leaderboard, write_leaderboard

    out = tmp_path / "board"  # the repository's layout: the store beside site/, gallery images linked there
    results = out / "results"
    for f in F.DEFAULT_FAKES:
        extra = {"name": LONG_NAME} if f.id == "fast-at" else {}
        _write(results, f, version="v1", n_parameters=PARAMS[f.id], **extra)
    _write(results, F.Fake("quick-a", clean=30, robust={4: 20}, preset="quick"), version="v2")
    evil = F.Fake("quick-evil", clean=28, robust={4: 10}, preset="quick",
                  flags=[{"code": "odd-flag", "message": HOSTILE}])
    _write(results, evil, version="v2", name=HOSTILE, architecture=HOSTILE, authors=[HOSTILE],
           training={"adversarial": True, "method": HOSTILE, "eps": "4/255", "norm": "linf", "extra_data": HOSTILE})
    board = build_leaderboard(results_dir=results, spec_for=F.fake_spec, gallery_from="results",
                              ranking_for=lambda v: V2_RANKING if v == "v2" else None)
    write_leaderboard(board, out_dir=out)
    assert not list((out / "site").rglob("gallery")), "linked, not copied"
    return out / "site"


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def row_ids(b: Browser, table: str) -> list[str]:
    return b.js(f"Array.from(document.querySelectorAll('#{table} tbody tr')).filter(r => !r.hidden)"
                ".map(r => r.dataset.id).filter(Boolean)")


def col_index(b: Browser, table: str, key: str) -> int:
    i = b.js(f"Array.from(document.querySelectorAll('#{table} thead th')).findIndex(th => th.dataset.col === '{key}')")
    assert i >= 0, key
    return i


def column_values(b: Browser, table: str, key: str) -> list:
    """The numbers a column holds (data-value), in the rows' displayed order; None where missing."""
    i = col_index(b, table, key)
    return b.js(f"Array.from(document.querySelectorAll('#{table} tbody tr[data-id]')).filter(r => !r.hidden)"
                f".map(r => r.cells[{i}].dataset.value).map(v => v === '' ? null : parseFloat(v))")


def no_table_overflows(b: Browser) -> bool:
    """Every table ends inside the page's main column (main scrolls sideways rather than the page, so the
    page's own scroll width alone would not show a table cut off at the right)."""
    return b.js("(() => { const m = document.querySelector('main').getBoundingClientRect().right;"
                "return Array.from(document.querySelectorAll('table')).filter(t => t.getClientRects().length)"
                ".every(t => t.getBoundingClientRect().right <= m + 1); })()")


def visible(b: Browser, selector: str) -> bool:
    return b.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                "return !!e && !e.hidden && e.getClientRects().length > 0; })()")


def test_site_in_headless_chromium(site, browser, tmp_path):
    b = browser
    b.open((site / "index.html").as_uri())
    assert b.js("document.title") == "fxbench leaderboard"
    assert row_ids(b, "board-v1-full") == ["pgd-at", "trades", "fast-at", "erm-baseline"]

    # The compact default fits a 1400 px window: nothing scrolls sideways, no model name wraps.
    assert b.js("document.documentElement.scrollWidth") <= b.js("window.innerWidth")
    assert no_table_overflows(b)
    heights = b.js("Array.from(document.querySelectorAll('#board-v1-full td.sub a'))"
                   ".map(a => a.getClientRects().length)")
    assert heights == [1, 1, 1, 1], heights  # one line box each, the long real name included
    assert not visible(b, f"#board-v1-full th:nth-child({col_index(b, 'board-v1-full', 'robust/linf-8/accuracy') + 1})")

    # Column chooser: show robust accuracy at 8/255 on every board; remembered across a reload; reset.
    b.click("#v1 details.columns summary")
    b.click("#v1 details.columns input[data-col='robust/linf-8/accuracy']")
    col = col_index(b, "board-v1-full", "robust/linf-8/accuracy")
    header = f"#board-v1-full thead th:nth-child({col + 1}) button"
    assert visible(b, header)
    b.open((site / "index.html").as_uri())
    assert visible(b, header), "the column choice is remembered"

    # Sorting by clicking a header cell sorts by the value, high-to-low first; a second click reverses.
    b.click(header)
    got = column_values(b, "board-v1-full", "robust/linf-8/accuracy")
    assert got == sorted(got, reverse=True) and row_ids(b, "board-v1-full") == ["trades", "pgd-at", "fast-at",
                                                                                 "erm-baseline"]
    assert b.js(f"document.querySelector('{header}').parentElement.getAttribute('aria-sort')") == "descending"
    b.click(header)
    assert row_ids(b, "board-v1-full") == ["erm-baseline", "fast-at", "pgd-at", "trades"]
    # Parameters: labels 850k, 4.9M, 11.2M, 23.5M sort wrongly as text; the values sort right.
    b.click("#v1 details.columns summary")  # closed again by the reload
    b.click("#v1 details.columns input[data-col='parameters']")
    b.click(f"#board-v1-full thead th:nth-child({col_index(b, 'board-v1-full', 'parameters') + 1}) button")
    assert column_values(b, "board-v1-full", "parameters") == sorted(PARAMS.values(), reverse=True)
    assert row_ids(b, "board-v1-full") == ["fast-at", "trades", "pgd-at", "erm-baseline"]
    # Ties keep the page's order (the ranking) whatever was sorted before: pgd-at and trades both keep 16 of 40.
    assert b.js("document.querySelector(\"#v1 details.columns input[data-col='robust/linf-4/accuracy']\").checked")
    b.click(f"#board-v1-full thead th:nth-child({col_index(b, 'board-v1-full', 'robust/linf-4/accuracy') + 1}) button")
    assert row_ids(b, "board-v1-full") == ["pgd-at", "trades", "fast-at", "erm-baseline"]
    b.click("#board-v1-full thead th:nth-child(2) button")  # text column: A-Z by name
    assert row_ids(b, "board-v1-full")[0] == "erm-baseline"
    b.click("#v1 details.columns button.reset")
    assert not visible(b, header)

    # Filter rows as a person types; a filter that matches nothing says so.
    b.type_into("#filter", "adversarial")
    assert sorted(row_ids(b, "board-v1-full")) == ["fast-at", "pgd-at", "trades"]
    assert not visible(b, "#board-v1-full + p.no-match")
    b.type_into("#filter", "gradient-masking")
    assert row_ids(b, "board-v1-full") == ["fast-at"]
    b.type_into("#filter", "no-such-model")
    assert row_ids(b, "board-v1-full") == []
    assert visible(b, "#board-v1-full + p.no-match")
    assert b.js("document.querySelector('#board-v1-full + p.no-match').textContent") == \
        "No submission matches \u201cno-such-model\u201d."
    # the three trivial classifiers and the best trivial map stay
    assert b.js("document.querySelectorAll('#board-v2-quick tbody tr.reference:not([hidden])').length") == 4
    b.type_into("#filter", "")
    b.js("document.querySelector('#filter').dispatchEvent(new Event('input'))")
    assert len(row_ids(b, "board-v1-full")) == 4 and not visible(b, "#board-v1-full + p.no-match")

    # v2 has quick results only: the full-preset table is there, empty, saying why; the quick one has no ranks.
    assert row_ids(b, "board-v2-full") == [] and visible(b, "#board-v2-full")
    assert "No full-preset results yet" in b.js("document.querySelector('#v2 p.empty-state').textContent")
    assert b.js("document.querySelector('#board-v2-full').previousElementSibling.previousElementSibling"
                ".classList.contains('empty-state')")
    assert sorted(row_ids(b, "board-v2-quick")) == ["quick-a", "quick-evil"]
    assert b.js("Array.from(document.querySelectorAll('#board-v2-quick th')).map(th => th.textContent)"
                ".includes('rank')") is False

    # Hostile submitted text stays text: no element it could create, no script it could run.
    assert b.js("document.querySelectorAll('[onerror]').length") == 0 and b.js("window.pwned") is None
    assert HOSTILE in b.js("document.querySelector('#board-v2-quick tr[data-id=quick-evil] td.sub a').textContent")

    # A table per threat model: L-inf with every budget.
    b.click("#v1 details.threats summary")
    heads = b.js("Array.from(document.querySelectorAll('#threat-v1-full-linf th')).map(th => th.textContent)")
    assert [h for h in heads if "/255" in h] == ["L∞ 1/255", "L∞ 2/255", "L∞ 4/255", "L∞ 8/255"]
    assert visible(b, "#threat-v1-full-l2-none")

    # The scatter plot switches between attribution methods.
    b.js("(() => { const s = document.querySelector('#v1 select.image-switch'); s.value = s.options[1].value;"
         "s.dispatchEvent(new Event('change')); })()")
    loaded = b.images_loaded()
    assert loaded and all(w > 0 for _, w in loaded), loaded
    assert any(src.endswith("scatter-full-gradcam.png") for src, _ in loaded)

    # Downloads in the header.
    assert b.js("Array.from(document.querySelectorAll('nav a[download]')).map(a => a.textContent)") == ["CSV", "JSON"]

    shot = tmp_path / "leaderboard-index.png"
    b.screenshot(shot)

    # Follow a submission's link: its page shows the curve and gallery, all loaded.
    b.click("#board-v1-full tr[data-id='pgd-at'] a")
    b.wait_for("Page.loadEventFired")
    assert b.js("location.pathname").endswith("/v1/pgd-at.html")
    loaded = b.images_loaded()
    assert len(loaded) == 1 + 4, loaded  # robustness curve + 2 images x 2 methods
    assert all(w > 0 for _, w in loaded), loaded
    assert "--preset full" in b.js("document.querySelector('pre.command').textContent")
    b.type_into("#filter", "linf-8")
    assert b.js("Array.from(document.querySelectorAll('#metrics tbody tr')).filter(r => !r.hidden).length") == 2
    b.type_into("#filter", "nothing-like-this")
    assert b.js("document.querySelector('#metrics + p.no-match').textContent").startswith("No metric matches")
    page_shot = tmp_path / "leaderboard-submission.png"
    b.screenshot(page_shot)
    # Gallery images open at full size.
    b.click(".gallery figure a img")
    b.wait_for("Page.loadEventFired")
    assert b.js("location.pathname").endswith(".png") and "/results/v1/pgd-at/gallery/" in b.js("location.pathname")

    b.open((site / "v1" / "methods.html").as_uri())
    assert b.js("document.querySelectorAll('#methods-pooled-localisation tbody tr.reference').length") == 3

    b.open((site / "v2" / "quick-evil.html").as_uri())
    assert b.js("document.querySelectorAll('[onerror]').length") == 0 and b.js("window.pwned") is None
    assert b.js("document.querySelector('h1').textContent") == HOSTILE

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


# -- issue 24: the site read as a researcher, on the committed leaderboard and on the fixture ----------------

COMMITTED = Path(__file__).resolve().parents[1] / "leaderboard" / "site"


def first_board(b: Browser) -> dict:
    return b.js("(() => { const t = document.querySelector('table.board');"
                "const rows = Array.from(t.querySelectorAll('tbody tr[data-id]'));"
                "return {id: t.id, rows: rows.length, top: rows.length ? rows[0].getBoundingClientRect().top : null,"
                "title: t.previousElementSibling.previousElementSibling.textContent}; })()")


@pytest.mark.skipif(not (COMMITTED / "index.html").is_file(), reason="no committed leaderboard")
def test_the_committed_site_opens_on_results_with_references_and_fits_1400_px(browser):
    b = browser
    b.open((COMMITTED / "index.html").as_uri())
    # The first table on the page holds results, and its first result row is on the first screen.
    first = first_board(b)
    assert first["rows"] > 0 and first["top"] < b.js("window.innerHeight"), first
    if first["id"].endswith("-quick"):  # no full-preset result yet: the quick results, marked unranked
        assert "not ranked" in first["title"]
        assert b.js(f"Array.from(document.querySelectorAll('#{first['id']} th')).map(t => t.textContent)"
                    ".includes('rank')") is False
    assert b.js("document.documentElement.scrollWidth") <= b.js("window.innerWidth") and no_table_overflows(b)
    # Paper and extra data are shown without opening the column chooser.
    assert visible(b, f"#{first['id']} th[data-col='paper']") and visible(b, f"#{first['id']} th[data-col='extra_data']")

    # The explanation column shown by default is the version's headline (v2: relevance mass; v3: its primary
    # endpoint, shuffled AUC), and its reference row holds the best trivial map's value, the same number as
    # in the result files (the edge map on both).
    version = first["id"].split("-")[1]
    stored = json.loads((COMMITTED.parent / "results" / version / "fxb-resnet10t-pgdat-v2.json").read_text())
    metric = stored["benchmark"]["config"]["batteries"]["explanations"].get("primary_endpoint",
                                                                           "relevance_mass_accuracy")
    key = f"xai/saliency/{metric}"
    assert visible(b, f"#{first['id']} th[data-col='{key}']")
    col = col_index(b, first["id"], key)
    cell = b.js(f"(() => {{ const c = document.querySelector('#{first['id']} tr.trivial-map').cells[{col}];"
                "return [c.dataset.value, c.textContent]; })()")
    edge = stored["metrics"][f"xai/ref_edge/{metric}"]["value"]
    assert stored["components"]["explanations"]["best_reference"][metric] == "ref_edge"
    assert float(cell[0]) == pytest.approx(edge) and "edge map" in cell[1] and f"{edge:.3f}" in cell[1]

    # The training filter keeps standard-trained models (and every reference row).
    b.js("(() => { const s = document.querySelector('#filter-training'); s.value = 'standard';"
         "s.dispatchEvent(new Event('change')); })()")
    shown = row_ids(b, first["id"])
    assert shown and all("erm" in i or "reference" in i for i in shown), shown
    assert b.js(f"document.querySelectorAll('#{first['id']} tr.reference:not([hidden])').length") == 4

    # The methods view: one table per kind of score, none wider than the window, losses to the centre prior
    # marked.
    b.open((COMMITTED / "v2" / "methods.html").as_uri())
    assert b.js("document.documentElement.scrollWidth") <= b.js("window.innerWidth")
    assert no_table_overflows(b)
    marked = b.js("Array.from(document.querySelectorAll('#methods-pooled-localisation td.below-centre'))"
                  ".map(td => td.title)")
    assert marked and all(t.startswith("below the centre prior") for t in marked)
    assert b.js("document.querySelectorAll('#methods-pooled-localisation tr.reference td.below-centre').length") == 0

    # A submission's page opens on its headline; the constant reference's says what it is.
    b.open((COMMITTED / "v2" / "fxb-reference-no-fracture.html").as_uri())
    assert b.js("document.querySelector('h1').nextElementSibling.id") == "headline"
    assert "constant classifier" in b.js("document.querySelector('#headline p.warning').textContent")
    # The gallery: methods by name, reference maps apart.
    b.open((COMMITTED / "v2" / "fxb-resnet10t-pgdat-v2.html").as_uri())
    captions = b.js("Array.from(document.querySelectorAll('.gallery:not(.references) figcaption')).map(f => f.textContent)")
    refs = b.js("Array.from(document.querySelectorAll('.gallery.references figcaption')).map(f => f.textContent)")
    assert "Saliency" in captions and "Grad-CAM" in captions and not any("/" in c or ".png" in c for c in captions)
    assert "edge map (Sobel)" in refs and not set(refs) & set(captions)
    assert all(w > 0 for _, w in b.images_loaded())
    assert b.errors() == []


def test_filters_by_training_size_and_architecture(site, browser):
    b = browser
    b.open((site / "index.html").as_uri())

    def choose(sel: str, value: str) -> None:
        b.js(f"(() => {{ const s = document.querySelector('{sel}'); s.value = {json.dumps(value)};"
             "s.dispatchEvent(new Event('change')); })()")

    choose("#filter-size", "0-5000000")
    assert sorted(row_ids(b, "board-v1-full")) == ["erm-baseline", "pgd-at"]  # 850k and 4.9M parameters
    choose("#filter-training", "adversarial")
    assert row_ids(b, "board-v1-full") == ["pgd-at"]
    b.type_into("#filter", "trades")
    assert row_ids(b, "board-v1-full") == []
    assert "under 5M parameters" in b.js("document.querySelector('#board-v1-full + p.no-match').textContent")
    b.type_into("#filter", "")
    b.js("document.querySelector('#filter').dispatchEvent(new Event('input'))")
    choose("#filter-size", "")
    choose("#filter-training", "")
    assert len(row_ids(b, "board-v1-full")) == 4
    assert b.errors() == []
