"""The static site without a browser (issue 13): links in the repository's layout, escaping of submitted
text, the unranked quick table, the scatter's x-axis and the curve's title. The browser test
(test_site_browser.py) drives the same pages in Chromium."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import leaderboard_fixtures as F
import pytest
from fxbench.leaderboard import plots
from fxbench.leaderboard import store as store_mod
from fxbench.leaderboard.generate import build_leaderboard
from fxbench.leaderboard.pages import reproduce_command
from fxbench.leaderboard.store import StoredResult

BASELINE_YAML = Path(__file__).resolve().parents[1] / "submissions" / "fxb-resnet10t-erm" / "model.yaml"
HOSTILE = '<img src=x onerror="alert(1)">&<script>alert(2)</script>'


@pytest.fixture
def spec(monkeypatch):
    monkeypatch.setattr(store_mod, "version_spec", F.fake_spec)


def _write(results: Path, f: F.Fake, *, version: str = "v1", **submission) -> dict:
    samples = F.make_samples(f)
    result = F.make_result(f, samples, version=version)
    result["submission"].update(submission)
    F.write_stored(results / version, f, version=version, result=result, samples=samples)
    return result


def _repo(tmp_path: Path) -> Path:
    """A repository as this one is laid out: docs/, CITATION.cff, submissions/, leaderboard/{results,CHANGELOG.md}.
    pgd-at's model.yaml is the one its result records; trades' was edited after its run; fast-at has no folder."""
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "submissions.md").write_text("# Submitting\n")
    (repo / "CITATION.cff").write_text("cff-version: 1.2.0\n")
    (repo / "leaderboard").mkdir()
    (repo / "leaderboard" / "CHANGELOG.md").write_text("# Benchmark versions\n")
    yaml_sha = {}
    for sid in ("pgd-at", "trades"):
        folder = repo / "submissions" / sid
        folder.mkdir(parents=True)
        (folder / "README.md").write_text(f"# {sid}\n")
        text = BASELINE_YAML.read_text().replace("id: fxb-resnet10t-erm", f"id: {sid}")
        (folder / "model.yaml").write_text(text)
        (folder / "weights.safetensors").write_bytes(b"\0" * 2_500_000)
        yaml_sha[sid] = hashlib.sha256(text.encode()).hexdigest()
    (repo / "submissions" / "trades" / "model.yaml").write_text(text + "# edited after the run\n")
    for f in F.DEFAULT_FAKES:
        _write(repo / "leaderboard" / "results", f, yaml_sha256=yaml_sha.get(f.id, "0" * 64))
    return repo


def _refs(page: Path) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#]+)"', page.read_text())


def test_in_the_repository_the_site_links_guide_citation_changelog_and_submission_files(cli, spec, tmp_path):
    repo = _repo(tmp_path)
    board = repo / "leaderboard"
    r = cli("leaderboard", "--results", board / "results", "--out", board)
    assert r.exit_code == 0, r
    for page in (board / "site").rglob("*.html"):
        for ref in _refs(page):
            if not ref.startswith("https://example.org/"):
                assert (page.parent / ref).is_file(), f"{page.name}: broken link {ref}"
    index = (board / "site" / "index.html").read_text()
    for text, target in [("How to submit", "docs/submissions.md"), ("Cite", "CITATION.cff"),
                         ("Changelog", "leaderboard/CHANGELOG.md"), ("CSV", "leaderboard/leaderboard.csv"),
                         ("JSON", "leaderboard/leaderboard.json")]:
        href = re.search(rf'<a href="([^"]+)"(?: download)?>{text}</a>', index).group(1)
        assert (board / "site" / href).resolve() == (repo / target).resolve(), text

    pgd = (board / "site" / "v1" / "pgd-at.html").read_text()
    for text in ("model card (README.md)", "model.yaml", "weights (weights.safetensors, 2.5 MB)",
                 "result file (result.json)", "per-sample table (parquet)"):
        assert f">{text}</a>" in pgd, text
    assert "fxbench run submissions/pgd-at/model.yaml --preset full --device cpu --seed 0" in pgd
    assert "<dt>paper / code</dt><dd><a href=\"https://example.org/pgd-at\">" in pgd
    # trades' model.yaml is not the one that was evaluated: linked with a warning, its weights not offered
    trades = (board / "site" / "v1" / "trades.html").read_text()
    assert "changed since this result was computed" in trades and "weights (" not in trades
    fast = (board / "site" / "v1" / "fast-at.html").read_text()
    assert "model card" not in fast and "result file (result.json)" in fast

    # elsewhere (no repository around the output) those links are left out, never left broken
    out = tmp_path / "elsewhere"
    assert cli("leaderboard", "--results", board / "results", "--out", out).exit_code == 0
    index = (out / "site" / "index.html").read_text()
    assert "How to submit" not in index and ">CSV</a>" in index
    for page in (out / "site").rglob("*.html"):
        for ref in _refs(page):
            if not ref.startswith("https://example.org/"):
                assert (page.parent / ref).is_file(), f"{page.name}: broken link {ref}"


def test_a_result_without_a_url_has_no_blank_url_row_and_dashes_in_the_table(spec, tmp_path):
    results = tmp_path / "results"
    _write(results, F.Fake("bare"), url=None, architecture=None, n_parameters=None)
    _write(results, F.Fake("full-facts"), training={"adversarial": False, "method": "ERM", "extra_data": "MURA"})
    _write(results, F.Fake("no-extra"), training={"adversarial": False, "method": "ERM", "extra_data": False})
    files = build_leaderboard(results_dir=results, spec_for=F.fake_spec).files
    bare = files["site/v1/bare.html"].decode()
    assert "<dt>url</dt>" not in bare and "<dt>paper / code</dt>" not in bare
    assert "<dd></dd>" not in bare  # no fact row is left blank
    index = files["site/index.html"].decode()
    row = re.search(r'<tr data-id="bare"[^>]*>(.*?)</tr>', index).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert cells[2:7] == ["-", "-", "-", "-", "2025-01-01"]  # architecture, params, extra data, paper, date
    assert re.findall(r"<td[^>]*>(.*?)</td>", re.search(r'<tr data-id="full-facts"[^>]*>(.*?)</tr>', index)
                      .group(1))[2:5] == ["resnet10t", "4.9M", "MURA"]
    assert re.findall(r"<td[^>]*>(.*?)</td>", re.search(r'<tr data-id="no-extra"[^>]*>(.*?)</tr>', index)
                      .group(1))[4] == "no"


def test_hostile_submitted_text_is_escaped_on_every_page(spec, tmp_path):
    results = tmp_path / "results"
    _write(results, F.Fake("evil", flags=[{"code": "odd", "message": HOSTILE}]), name=HOSTILE,
           architecture=HOSTILE, authors=[HOSTILE], license=HOSTILE,
           training={"adversarial": True, "method": HOSTILE, "eps": HOSTILE, "norm": HOSTILE, "extra_data": HOSTILE})
    files = build_leaderboard(results_dir=results, spec_for=F.fake_spec).files
    pages = {k: v.decode() for k, v in files.items() if k.endswith(".html")}
    assert "site/v1/evil.html" in pages and "site/index.html" in pages
    for name, text in pages.items():
        assert "<img src=x" not in text and "<script>alert" not in text, name
    assert pages["site/index.html"].count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;") >= 4


def test_quick_results_are_never_ranked_and_the_full_table_is_always_there(spec, tmp_path):
    """v1 included (no ranking rules of its own): quick rows get no rank and no rank column."""
    results = tmp_path / "results"
    for f in F.DEFAULT_FAKES[:2]:
        _write(results, F.Fake(f.id, clean=f.clean, robust=f.robust, preset="quick"))
    board = build_leaderboard(results_dir=results, spec_for=F.fake_spec)
    tables = json.loads(board.files["leaderboard.json"])["versions"][0]["tables"]
    assert [(t["preset"], len(t["submissions"])) for t in tables] == [("full", 0), ("quick", 2)]
    assert [s["rank"] for s in tables[1]["submissions"]] == [None, None] and "rank" not in tables[1]["columns"]
    index = board.files["site/index.html"].decode()
    quick = index[index.index('id="board-v1-quick"'):]
    quick = quick[:quick.index("</table>")]
    assert ">rank<" not in quick
    # the page opens on the results there are (issue 24): the empty ranked table follows, saying why
    assert "No full-preset results yet" in index and "The results so far are above, unranked." in index
    assert index.index('id="board-v1-quick"') < index.index('id="board-v1-full"')
    readme = board.files["README.md"].decode()
    assert "| rank" not in readme[readme.index("### Quick preset"):]


def test_scatter_x_axis_is_scaled_to_the_points_and_their_intervals(monkeypatch):
    pts = [plots.Point(0.004, 0.5, 0.002, 0.006), plots.Point(0.021, 0.6, 0.015, 0.025), plots.Point(0.01, 0.0)]
    lo, hi = plots.x_range(pts)
    assert lo == 0.0 and hi == pytest.approx(0.025 + 0.1 * 0.023)  # lower margin clipped at the score's 0
    assert plots.x_range([plots.Point(0.5, 0.5, 0.45, 0.55)]) == pytest.approx((0.44, 0.56))
    assert plots.x_range([]) == (0.0, 1.0) and plots.x_range([plots.Point(0.98, 0.5, 0.9, 1.0)])[1] == 1.0
    figs = []
    monkeypatch.setattr(plots, "_png", lambda fig: figs.append(fig) or b"")
    plots.scatter(pts, xlabel="x", ylabel="y", title="t")
    assert figs[0].axes[0].get_xlim() == pytest.approx((lo, hi))


def test_a_long_submission_name_fits_in_the_robustness_curve_title(monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "_png", lambda fig: figs.append(fig) or b"")
    title = "ResNet-10t, FGSM adversarial training with random start (L-inf 4/255) (fxb-resnet10t-fgsmrs)"
    plots.robustness_curve([plots.Point(0, 0.8), plots.Point(4, 0.5)], title=title)
    fig = figs[0]
    fig.canvas.draw()
    box = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
    width, height = fig.get_size_inches() * fig.dpi
    assert box.x0 >= 0 and box.x1 <= width and box.y1 <= height, (box, width, height)
    assert fig.axes[0].get_title().replace("\n", " ") == title


def test_reproduce_command_names_preset_device_seed_and_limit():
    r = StoredResult(version="v2", path=Path("my-model.json"), samples=None, result={
        "submission": {"id": "my-model", "name": "m"},
        "benchmark": {"preset": "quick", "limit": 96},
        "provenance": {"device": "cuda: NVIDIA H200", "seed": 7},
    })
    assert reproduce_command(r) == "fxbench run submissions/my-model/model.yaml --preset quick --device cuda " \
                                   "--seed 7 --limit 96"


def test_model_yaml_extra_data_is_optional_and_kept_out_of_old_results():
    from fxbench.errors import SubmissionError
    from fxbench.models.spec import ModelSpec

    base = BASELINE_YAML.read_text()
    assert "extra_data" not in ModelSpec.from_text(base).training.to_json()  # earlier results stay identical
    spec = ModelSpec.from_text(base.replace("  method: erm", "  method: erm\n  extra_data: ImageNet-pretrained"))
    assert spec.training.to_json()["extra_data"] == "ImageNet-pretrained"
    assert ModelSpec.from_text(base.replace("  method: erm", "  method: erm\n  extra_data: false")
                               ).training.to_json()["extra_data"] is False
    with pytest.raises(SubmissionError, match="extra_data"):
        ModelSpec.from_text(base.replace("  method: erm", "  method: erm\n  extra_data: [1, 2]"))


def test_a_ranked_versions_curve_plots_its_robust_metric(spec, tmp_path, monkeypatch):
    """v2 ranks and tabulates balanced accuracy: its robustness curve plots the same numbers."""
    from fxbench.leaderboard.tables import Ranking

    ranking = Ranking(rank_by=("robust/linf-4/balanced_accuracy", "clean/balanced_accuracy"),
                      unranked_flags=frozenset(), min_n_for_ci=20, n=801, n_fracture=143)
    results = tmp_path / "results"
    result = _write(results, F.Fake("m", clean=30, robust={1: 20, 4: 10}), version="v2")
    calls = []
    monkeypatch.setattr(plots, "robustness_curve", lambda points, **kw: calls.append((points, kw)) or b"\x89PNG")
    build_leaderboard(results_dir=results, spec_for=F.fake_spec, ranking_for=lambda v: ranking)
    (points, kw), = calls
    m = result["metrics"]
    assert [p.y for p in points] == [m["clean/balanced_accuracy"]["value"], m["robust/linf-1/balanced_accuracy"]["value"],
                                     m["robust/linf-4/balanced_accuracy"]["value"]]
    assert kw["ylabel"] == "balanced accuracy"


# -- issue 24 ----------------------------------------------------------------------------------------------------

def test_reference_rows_carry_the_best_trivial_map_and_the_scatter_draws_it(spec, tmp_path, monkeypatch):
    results = tmp_path / "results"
    stored = [_write(results, f) for f in F.DEFAULT_FAKES]
    figs = []
    real_png = plots._png
    monkeypatch.setattr(plots, "_png", lambda fig: figs.append(fig) or real_png(fig))
    files = build_leaderboard(results_dir=results, spec_for=F.fake_spec).files
    index = files["site/index.html"].decode()
    # the fakes' trivial maps score edge 0.35 and centre 0.40 (+ the same per-image wave); random 0.30 and the
    # mask are not trivial references: the centre prior is the best one, on every image
    centre = stored[0]["metrics"]["xai/ref_centre/relevance_mass_accuracy"]["value"]
    row = re.search(r'<tr class="reference trivial-map">(.*?)</tr>', index).group(1)
    assert f'data-value="{centre!r}"' in row and "centre prior" in row and f"{centre:.3f}" in row
    # the scatter: a vertical line at that value and a label per point
    fig = next(f for f in figs if f.axes[0].get_xlabel().startswith("saliency"))
    ax = fig.axes[0]
    assert any(tuple(line.get_xdata()) == (centre, centre) for line in ax.lines)
    assert any("best trivial map: centre prior" in t.get_text() for t in ax.texts)
    labels = [t for t in ax.texts if t.get_text() in {f.id for f in F.DEFAULT_FAKES}]
    assert len(labels) == 4


def test_scatter_labels_of_close_points_do_not_overlap(monkeypatch):
    from matplotlib.text import Text

    figs = []
    monkeypatch.setattr(plots, "_png", lambda fig: figs.append(fig) or b"")
    pts = [plots.Point(0.01 + 0.0003 * i, 0.6 + 0.003 * (i % 3), label=f"fxb-model-{i}") for i in range(8)]
    plots.scatter(pts, xlabel="x", ylabel="y", title="t", x_ref=(0.009, "best trivial map"), y_ref=(0.5, "c"))
    ax = figs[0].axes[0]
    r = figs[0].canvas.get_renderer()
    frame = ax.get_window_extent(r)
    boxes = []
    for t in ax.texts:
        if t.get_text().startswith("fxb-model-"):
            t.update_positions(r)
            boxes.append(Text.get_window_extent(t, r))
    assert len(boxes) == 8
    assert not [(i, j) for i in range(8) for j in range(i) if boxes[i].overlaps(boxes[j])]
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 for b in boxes)  # inside the axes: nothing cut off
    # the old placement (every label beside its point) overlapped here: the test can fail
    naive = []
    for p in pts:
        a = ax.annotate(p.label, (p.x, p.y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        a.update_positions(r)
        naive.append(Text.get_window_extent(a, r))
    assert any(naive[i].overlaps(naive[j]) for i in range(8) for j in range(i))


def test_a_submission_page_opens_on_its_headline_and_groups_its_gallery(spec, tmp_path):
    results = tmp_path / "results"
    f = F.Fake("pgd-at", clean=30, robust={4: 16}, adversarial=True)
    samples = F.make_samples(f)
    result = F.make_result(f, samples)
    result["components"] = {"robustness": {"headline": "linf-4"}}  # as every real result records it
    ids = samples.loc[samples["label"] == 1, "image_id"].iloc[:1]
    result["files"]["gallery"] = [f"gallery/{i}/{m}.png" for i in ids for m in ("saliency", "gradcam")] + \
        [f"gallery/{i}/references/{m}.png" for i in ids for m in ("ref_edge", "ref_centre")]
    F.write_stored(results / "v1", f, result=result, samples=samples)
    page = build_leaderboard(results_dir=results, spec_for=F.fake_spec).files["site/v1/pgd-at.html"].decode()
    h1 = page.index("<h1>")
    assert page.index('id="headline"') < page.index("<dl>", page.index("</section>", h1))  # before the facts
    head = page[page.index('id="headline"'):page.index("</section>", h1)]
    assert "robust balanced accuracy, L-inf 4/255" in head and "0.400" in head  # 16 of 40 robust, 20 fractured
    assert "explanations" not in head  # no per-image differences from the trivial maps in this result
    methods, refs = page.split('class="gallery references"', 1)
    caps = re.findall(r"<figcaption>(.*?)</figcaption>", methods)
    assert caps == ["Grad-CAM", "Saliency"]
    assert re.findall(r"<figcaption>(.*?)</figcaption>", refs) == ["centre prior", "edge map (Sobel)"]


def test_the_methods_view_marks_losses_to_the_centre_prior(spec, tmp_path):
    results = tmp_path / "results"
    stored = [_write(results, f) for f in F.DEFAULT_FAKES]
    html = build_leaderboard(results_dir=results, spec_for=F.fake_spec).files["site/v1/methods.html"].decode()
    table = html[html.index('id="methods-pooled-localisation"'):]
    table = table[:table.index("</table>")]
    rows = {re.search(r"<code>(\w+)</code>|· (\w+) <em>", r).group(1) or re.search(r"· (\w+) <em>", r).group(1): r
            for r in re.findall(r"<tr[^>]*>(.*?)</tr>", table)[1:]}
    # relevance mass: gradcam's fake score 0.25 < centre 0.40 (marked); saliency's 0.30 mean too
    first = [re.findall(r"<td[^>]*>", rows[m])[1] for m in ("gradcam", "saliency", "ref_edge")]
    assert "below-centre" in first[0] and "below-centre" in first[1] and "below-centre" not in first[2]
    assert stored[0]["metrics"]["xai/gradcam/relevance_mass_accuracy"]["value"] < \
        stored[0]["metrics"]["xai/ref_centre/relevance_mass_accuracy"]["value"]
