"""The v2 leaderboard (issue 10): ranked by robust balanced accuracy, reference rows computed from the split
counts, flagged results in their own table, quick results unranked, the main table always shown."""

from __future__ import annotations

import json

import leaderboard_fixtures as F
import numpy as np
import pytest
from fxbench.leaderboard import fmt
from fxbench.leaderboard import store as store_mod
from fxbench.leaderboard.generate import build_leaderboard
from fxbench.leaderboard.tables import Ranking, version_ranking

N, POS = 40, 8  # 8 fractured of 40: a constant "no fracture" answer is 80% accurate
RANKING = Ranking(
    rank_by=("robust/linf-4/balanced_accuracy", "clean/balanced_accuracy"),
    unranked_flags=frozenset({"adaptive-attack-needed"}),
    min_n_for_ci=20,
    n=801,
    n_fracture=143,
)


def fake(id_, neg_ok, pos_ok, *, preset="full", flags=()):
    """A submission correct (clean and at every budget) on ``neg_ok`` of 32 negatives, ``pos_ok`` of 8 positives."""
    f = F.Fake(id_, preset=preset, flags=list(flags), robust={4: 0})
    s = F.make_samples(f, n=N)
    label = (np.arange(N) < POS).astype(int)
    s["label"] = label
    ok = np.where(label == 1, np.arange(N) < pos_ok, np.arange(N) - POS < neg_ok).astype(float)
    s["clean/correct"] = ok
    s["robust/linf-4/correct"] = ok
    return f, s


def write(root, f, s):
    F.write_stored(root / "v2", f, version="v2", samples=s, result=F.make_result(f, s, version="v2"))


@pytest.fixture
def board(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "version_spec", F.fake_spec)
    root = tmp_path / "results"

    def build(*fakes):
        for f, s in fakes:
            write(root, f, s)
        b = build_leaderboard(results_dir=root, spec_for=F.fake_spec, ranking_for=lambda v: RANKING)
        return b, json.loads(b.files["leaderboard.json"]), b.files["README.md"].decode()

    return build


def test_a_constant_model_ranks_below_every_model_that_beats_chance(board):
    constant = fake("always-no", neg_ok=32, pos_ok=0)  # accuracy 0.80, balanced 0.5
    good = fake("good", neg_ok=25, pos_ok=6)  # accuracy 0.775, balanced (25/32 + 6/8) / 2 = 0.766
    weak = fake("weak", neg_ok=31, pos_ok=1)  # accuracy 0.80, balanced 0.547
    _, data, readme = board(constant, good, weak)
    main = data["versions"][0]["tables"][0]
    assert main["kind"] == "main"
    got = [(s["id"], s["rank"], s["metrics"]["robust/linf-4/balanced_accuracy"]["value"]) for s in main["submissions"]]
    assert [g[0] for g in got] == ["good", "weak", "always-no"]  # v1's accuracy would have put always-no first
    assert got[-1][2] == 0.5
    # the reference rows, from the eval split's counts (801 images, 143 fractured), never ranked
    refs = {r["name"]: r["metrics"] for r in main["references"]}
    assert refs["always 'no fracture'"]["clean/accuracy"]["value"] == pytest.approx(658 / 801)
    assert refs["always 'fracture'"]["clean/accuracy"]["value"] == pytest.approx(143 / 801)
    assert all(m["robust/linf-4/balanced_accuracy"]["value"] == 0.5 for m in refs.values())
    assert "*reference: always 'no fracture'*" in readme
    assert "robust bal. acc" in readme


def test_a_reference_submission_is_shown_but_never_ranked_nor_pooled(tmp_path, monkeypatch):
    from dataclasses import replace

    monkeypatch.setattr(store_mod, "version_spec", F.fake_spec)
    root = tmp_path / "results"
    for f, s in [fake("always-no", neg_ok=32, pos_ok=0), fake("good", 25, 6), fake("weak", 31, 1)]:
        write(root, f, s)
    ranking = replace(RANKING, reference_submissions=frozenset({"always-no"}))
    b = build_leaderboard(results_dir=root, spec_for=F.fake_spec, ranking_for=lambda v: ranking)
    main = json.loads(b.files["leaderboard.json"])["versions"][0]["tables"][0]
    got = [(s["id"], s["rank"]) for s in main["submissions"]]
    assert got == [("good", 1), ("weak", 2), ("always-no", None)]  # listed last, no rank number
    # the methods view pools a method's score over real submissions only
    from fxbench.leaderboard.layout import load_layout
    from fxbench.leaderboard.tables import methods_view

    stored = store_mod.load_store(root, spec_for=F.fake_spec).versions["v2"]
    pooled_all = methods_view("v2", "full", stored, load_layout(), F.fake_spec("v2")).pooled
    pooled_real = methods_view("v2", "full", stored, load_layout(), F.fake_spec("v2"),
                               trivial=frozenset({"always-no"})).pooled
    key = next(k for k in pooled_all if k[0] == "saliency")
    real = [r.metrics[f"xai/{key[0]}/{key[1]}"]["value"] for r in stored if r.id != "always-no"]
    assert pooled_real[key].value == pytest.approx(sum(real) / len(real))
    assert pooled_all[key].value != pytest.approx(pooled_real[key].value) or len(set(real)) == 1


def test_flagged_results_get_their_own_table_with_the_reason(board):
    flag = {"code": "adaptive-attack-needed", "message": "gradients vanish on 40% of images"}
    _, data, readme = board(fake("good", 25, 6), fake("masked", 32, 8, flags=[flag]))
    tables = {t["kind"]: t for t in data["versions"][0]["tables"]}
    assert [s["id"] for s in tables["main"]["submissions"]] == ["good"]
    flagged = tables["flagged"]["submissions"]
    assert [s["id"] for s in flagged] == ["masked"] and flagged[0]["rank"] is None
    assert "gradients vanish on 40% of images" in flagged[0]["not_ranked_because"]
    assert readme.index("### Flagged: not ranked") < readme.index("gradients vanish")
    # a flag that is not in unranked_flags only qualifies the number
    _, data, _ = board(fake("other", 20, 4, flags=[{"code": "gradient-masking", "message": "m"}]))
    main = data["versions"][0]["tables"][0]
    assert "other" in [s["id"] for s in main["submissions"]]


def test_quick_results_unranked_and_the_main_table_always_shown(board):
    _, data, readme = board(fake("cpu-only", 30, 7, preset="quick"))
    tables = data["versions"][0]["tables"]
    assert [t["kind"] for t in tables] == ["main", "quick"]
    assert tables[0]["submissions"] == [] and "No full-preset results yet" in tables[0]["note"]
    assert [s["rank"] for s in tables[1]["submissions"]] == [None]
    assert tables[0]["references"] and tables[1]["references"]  # reference rows in every table
    assert "### Models (full preset, ranked)" in readme and "No full-preset results yet" in readme


def test_no_ci_below_twenty_images():
    m = {"value": 0.4, "ci_low": 0.1, "ci_high": 0.7, "n": 6}
    assert fmt.metric(m, min_n=20) == "0.400 (n=6: too small for a CI)"
    assert fmt.metric(m) == "0.400 [0.100, 0.700]"  # v1 renders as it did


def test_real_v2_definition_declares_the_ranking():
    r = version_ranking("v2")
    assert r.rank_by == ("robust/linf-4/balanced_accuracy", "clean/balanced_accuracy")
    assert (r.n, r.n_fracture) == (801, 143)
    assert version_ranking("v1") is None  # v1 keeps its rules and its rendering


def test_one_gallery_page_shows_the_same_image_for_every_submission(board):
    b, _, _ = board(fake("good", 25, 6), fake("weak", 31, 1))
    page = b.files["site/v2/gallery.html"].decode()
    image = F.gallery_names(F.make_samples(F.Fake("x")))[0].split("/")[1]
    section = page[page.index(f"<h2>{image}</h2>"):]
    assert "<h3>good</h3>" in section and "<h3>weak</h3>" in section
    assert f"good/gallery/{image}/saliency.png" in section
