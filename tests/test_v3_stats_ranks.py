"""Bootstrap rank intervals of the explanation methods and the metrics' agreement (leaderboard/method_ranks.py),
and their place in the v3 methods view (v1/v2 views unchanged)."""

from __future__ import annotations

from itertools import combinations

import leaderboard_fixtures as F
import numpy as np
import pytest
from fxbench.leaderboard import markdown, pages
from fxbench.leaderboard.layout import load_layout
from fxbench.leaderboard.method_ranks import kendall_w, method_ranks, rank_rows
from fxbench.leaderboard.store import load_store
from fxbench.leaderboard.tables import methods_view
from scipy.stats import spearmanr


def test_kendall_w_against_the_mean_spearman_correlation():
    """Without ties W = ((m - 1) mean_rho + 1) / m (rho: Spearman over each pair of the m rankings)."""
    rng = np.random.default_rng(0)
    for m, n in ((2, 5), (4, 7), (6, 12)):
        ranks = np.array([rng.permutation(n) + 1 for _ in range(m)], dtype=float)
        rho = np.mean([spearmanr(ranks[a], ranks[b]).statistic for a, b in combinations(range(m), 2)])
        assert kendall_w(ranks) == pytest.approx(((m - 1) * rho + 1) / m)
    same = np.tile(np.arange(1, 6), (3, 1)).astype(float)
    assert kendall_w(same) == pytest.approx(1.0)


def test_rank_rows_directions_ties_and_nan():
    v = np.array([[0.9], [0.5], [0.5], [np.nan]])
    assert rank_rows(v, True)[:, 0].tolist()[:3] == [1.0, 2.5, 2.5] and np.isnan(rank_rows(v, True)[3, 0])
    assert rank_rows(v, False)[:, 0].tolist()[:3] == [3.0, 1.5, 1.5]


def stored(root, fid: str, levels: dict[str, float], version: str = "v3"):
    """Every map's relevance mass = its level + a per-image wave shared by all maps (differences are exact)."""
    f = F.Fake(fid)
    df = F.make_samples(f)
    i = np.arange(len(df))
    frac = df["label"] == 1
    wave = 0.05 * np.sin(i)
    for m, lv in levels.items():
        own = 0.03 * np.cos(7 * i) if m == "ref_centre" else 0.0  # ref_centre: its own per-image spread
        df[f"xai/{m}/relevance_mass_accuracy"] = np.where(frac, lv + wave + own, np.nan)
    return F.write_stored(root / version, f, version=version, samples=df)


def test_rank_intervals_separate_distant_methods_and_not_close_ones(tmp_path):
    levels = {"saliency": 0.40, "gradcam": 0.30, "ref_random": 0.10, "ref_edge": 0.20, "ref_centre": 0.20}
    stored(tmp_path, "a", levels)
    stored(tmp_path, "b", levels)
    results = load_store(tmp_path, spec_for=F.fake_spec).versions["v3"]
    mr = method_ranks(results, ["saliency", "gradcam", "ref_edge", "ref_centre"], ["relevance_mass_accuracy"],
                      n_resamples=200, seed=0)
    r = {m: mr.ranks[(m, "relevance_mass_accuracy")] for m in mr.methods}
    assert (r["saliency"].rank, r["saliency"].low, r["saliency"].high) == (1, 1, 1)
    assert (r["gradcam"].low, r["gradcam"].high) == (2, 2)
    # ref_edge and ref_centre both near 0.20, ref_centre with its own per-image spread: the draws order them
    # either way, so both intervals are [3, 4]
    assert (r["ref_edge"].low, r["ref_edge"].high) == (r["ref_centre"].low, r["ref_centre"].high) == (3, 4)


def test_v3_methods_view_has_ranks_and_the_pages_show_them_v2_does_not(tmp_path):
    layout = load_layout()
    for version in ("v2", "v3"):
        stored(tmp_path, "a", {"saliency": 0.4, "gradcam": 0.3}, version=version)
        stored(tmp_path, "b", {"saliency": 0.35, "gradcam": 0.32}, version=version)
    store = load_store(tmp_path, spec_for=F.fake_spec)
    v2 = methods_view("v2", "full", store.versions["v2"], layout, F.fake_spec("v2"))
    v3 = methods_view("v3", "full", store.versions["v3"], layout, F.fake_spec("v3"))
    assert v2.ranks is None and v3.ranks is not None
    assert set(v3.ranks.metrics) >= {"relevance_mass_accuracy", "pointing_game"}
    assert v3.ranks.kendall_w is not None and v3.ranks.top["relevance_mass_accuracy"] == "saliency"
    md = markdown.render([("v3", "note", [], v3, [])], layout)
    assert "#### Method ranks" in md and "Kendall's W" in md
    assert "Method ranks" not in markdown.render([("v2", "note", [], v2, [])], layout)
    assert 'id="method-ranks"' in pages.methods_page(v3) and "method-ranks" not in pages.methods_page(v2)
