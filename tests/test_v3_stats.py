"""v3 statistics (fxbench.leaderboard.stats and compare): Holm against statsmodels, TOST against statsmodels'
ttost_paired, the signed-rank test against scipy, resampling over seeds as well as images, and compare's v3
report (primary comparisons, Holm over the rest, equivalence) on synthetic results."""

from __future__ import annotations

import json

import leaderboard_fixtures as F
import numpy as np
import pandas as pd
import pytest
from fxbench.leaderboard.compare import compare_results, paired_difference, resolve_result
from fxbench.leaderboard.stats import (
    adjust_p,
    margin_for,
    primary_ids,
    seed_means,
    tost_bootstrap,
    tost_paired,
    version_statistics,
    wilcoxon_p,
)
from fxbench.results.metrics import MetricDef, compute_metrics
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired


def test_holm_equals_statsmodels():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.uniform(0, 0.3, size=rng.integers(1, 25))
        p[rng.random(p.size) < 0.2] = p[0]  # ties
        want = multipletests(p, method="holm")[1]
        assert adjust_p(p.tolist(), "holm") == pytest.approx(want.tolist(), abs=1e-12)


def test_tost_equals_statsmodels_ttost_paired():
    rng = np.random.default_rng(1)
    for shift, margin in ((0.0, 0.1), (0.05, 0.1), (0.3, 0.1), (-0.08, 0.05)):
        a = rng.normal(0.6, 0.1, size=40)
        b = a + shift + rng.normal(0, 0.05, size=40)
        want_p, (_, want_lo, _), (_, want_hi, _) = ttost_paired(b, a, -margin, margin)
        got = tost_paired(b - a, margin)
        assert got.p == pytest.approx(want_p, rel=1e-10)
        assert (got.p_lower, got.p_upper) == pytest.approx((want_lo, want_hi), rel=1e-10)
    # inside the margin with a tight spread: equivalent; a difference of 3 margins: not
    d = np.random.default_rng(2).normal(0.0, 0.01, 100)
    assert tost_paired(d, 0.05).p < 0.001 and tost_paired(d + 0.15, 0.05).p > 0.5
    assert tost_paired(np.zeros(10), 0.05).p == 0.0  # no spread: certain inside the margin
    assert tost_paired(np.full(10, 0.06), 0.05).p == 1.0 and tost_paired(np.zeros(1), 0.05) is None


def test_bootstrap_tost_reads_the_distribution_against_both_margins():
    s = np.random.default_rng(3).normal(0.0, 0.01, 999)
    t = tost_bootstrap(s, 0.05)
    assert t.p == pytest.approx(1 / 1000) and t.test == "bootstrap"
    assert tost_bootstrap(s + 0.05, 0.05).p == pytest.approx(((s + 0.05 >= 0.05).sum() + 1) / 1000)


def test_wilcoxon_equals_scipy_and_sees_what_the_mean_hides():
    """The review's point 5: a consistent per-image loss with a few large gains has a mean near 0 (a t-test
    or a bootstrap CI of the mean includes 0) and a clearly negative median: the signed-rank test sees it."""
    rng = np.random.default_rng(4)
    d = np.r_[rng.normal(-0.003, 0.001, 130), rng.normal(0.035, 0.005, 13)]
    d[:5] = 0.0  # zero differences are dropped (Wilcoxon's rule)
    assert wilcoxon_p(d) == pytest.approx(sps.wilcoxon(d[d != 0]).pvalue, rel=1e-12)
    assert sps.ttest_1samp(d, 0).pvalue > 0.05 and wilcoxon_p(d) < 1e-6
    assert wilcoxon_p(np.zeros(7)) is None


def test_seed_means_one_seed_is_the_image_bootstrap_several_widen_it():
    rng = np.random.default_rng(5)
    one = rng.normal(size=(1, 500))
    assert np.array_equal(seed_means(one, 500, None), one[0])
    per_seed = rng.normal(size=(3, 500)) * 0.01 + np.array([[0.0], [0.1], [0.2]])
    s = seed_means(per_seed, 500, np.random.default_rng(0))
    assert s.mean() == pytest.approx(0.1, abs=0.01) and s.std() > 0.03  # the seeds' spread is in the CI
    for b in range(5):  # each draw: the mean of three of the seeds' values at that resample
        assert any(np.isclose(s[b], per_seed[list(c), b].mean())
                   for c in np.ndindex(3, 3, 3))


def test_the_v3_spec_declares_the_claims_and_margins():
    rules = version_statistics("v3")
    assert primary_ids(rules) == ["xai/saliency/shuffled_auc", "xai/saliency/shuffled_auc/adv_minus_noise-linf-4"]
    assert primary_ids(rules, "best_reference") == ["xai/saliency/shuffled_auc/vs-best-ref"]
    assert margin_for("shuffled_auc", rules) == 0.05 and margin_for("relevance_mass_accuracy", rules) is None
    assert version_statistics("v2") == {} and version_statistics("v99") == {}


# -- compare on synthetic v3 results ---------------------------------------------------------------------------


def v3_result(root, fid: str, shift: float, seed: int = 0):
    """A synthetic v3 result with a primary-endpoint column: saliency's shuffled AUC = 0.6 + shift + a per-image
    wave (the same wave for every result, so differences are known) + seed noise."""
    f = F.Fake(fid)
    df = F.make_samples(f)
    i = np.arange(len(df))
    frac = df["label"] == 1
    noise = np.random.default_rng(seed).normal(0, 0.01, len(df))
    df["xai/saliency/shuffled_auc"] = np.where(frac, 0.6 + shift + 0.05 * np.cos(i) + noise, np.nan)
    result = F.make_result(f, df, version="v3")
    extra = compute_metrics(df, [MetricDef("xai/saliency/shuffled_auc", "xai/saliency/shuffled_auc",
                                           where={"label": 1})], n_resamples=200, seed=0)
    result["metrics"].update({k: v.to_json() for k, v in extra.items()})
    return F.write_stored(root / "v3", f, version="v3", result=result, samples=df)


def test_compare_v3_marks_the_primary_adjusts_the_rest_and_tests_equivalence(tmp_path):
    a = v3_result(tmp_path, "erm", 0.0)
    b = v3_result(tmp_path, "robust", 0.01, seed=1)
    c = compare_results(resolve_result(str(a), results_dir=tmp_path), resolve_result(str(b), results_dir=tmp_path),
                        select="all", correction="holm")
    assert c.statistics
    first = c.metrics[0]
    assert first.id == "xai/saliency/shuffled_auc" and first.primary and first.p_adjusted == first.p_value
    rest = [d for d in c.metrics if d.p_adjusted is not None and not d.primary]
    assert [d.p_adjusted for d in rest] == pytest.approx(adjust_p([d.p_value for d in rest], "holm"))
    # +0.01 +- seed noise, margin 0.05: equivalent by the paired t TOST; the per-image tests are filled in
    assert first.margin == 0.05 and first.equivalence_test == "paired t" and first.p_equivalence < 0.05
    assert first.median_diff == pytest.approx(0.01, abs=0.01) and first.p_wilcoxon is not None
    pg = next(d for d in c.metrics if d.id == "xai/saliency/pointing_game")
    assert pg.margin == 0.10
    ba = next(d for d in c.metrics if d.id == "clean/balanced_accuracy")
    assert ba.margin is None and ba.p_wilcoxon is None  # no margin, no per-image test for a balanced accuracy
    from fxbench.leaderboard.compare import format_table

    text = format_table(c)
    assert "(primary) xai/saliency/shuffled_auc" in text and "p (Wilcoxon)" in text and "equivalent" in text


def test_compare_with_seed_groups(tmp_path, cli):
    a = [v3_result(tmp_path, f"erm-s{k}", 0.0, seed=k) for k in range(3)]
    b = [v3_result(tmp_path, f"robust-s{k}", 0.02 * k, seed=10 + k) for k in range(3)]
    ga = resolve_result(",".join(map(str, a)), results_dir=tmp_path)
    gb = resolve_result(",".join(map(str, b)), results_dir=tmp_path)
    assert len(ga.members) == 3
    c = compare_results(ga, gb, prefixes=("xai/saliency/shuffled_auc",))
    d = c.metrics[0]
    assert d.n_seeds_a == d.n_seeds_b == 3
    single = [pd.read_parquet(p.with_suffix(".parquet")) for p in (*a, *b)]
    col = "xai/saliency/shuffled_auc"
    want = np.mean([t[col].mean() for t in single[3:]]) - np.mean([t[col].mean() for t in single[:3]])
    assert d.diff == pytest.approx(want, abs=1e-12)
    one = compare_results(resolve_result(str(a[0]), results_dir=tmp_path), resolve_result(str(b[1]), results_dir=tmp_path),
                          prefixes=(col,)).metrics[0]
    assert (d.ci_high - d.ci_low) > (one.ci_high - one.ci_low)  # the seeds' spread (0, 0.02, 0.04) widens it
    assert d.equivalence_test == "bootstrap"  # several seeds: TOST on the seed-and-image bootstrap
    # one result per side: exactly the paired image bootstrap
    ta, tb = single[0], single[4]
    m = MetricDef(col, col, where={"label": 1})
    pd_ = paired_difference(ta, tb, m, n_resamples=F.BOOTSTRAP["n_resamples"], seed=0, alpha=0.05)
    assert (pd_.diff, pd_.ci_low, pd_.ci_high, pd_.p_value) == (one.diff, one.ci_low, one.ci_high, one.p_value)
    r = cli("compare", ",".join(map(str, a)), ",".join(map(str, b)), "--metric", col, "--json")
    assert r.exit_code == 0, r
    out = json.loads(r.stdout)
    assert out["seeds_a"] == [str(p) for p in a] and out["metrics"][0]["n_seeds_b"] == 3
    assert "seeds: A 3, B 3" in cli("compare", ",".join(map(str, a)), ",".join(map(str, b)), "--metric", col).stdout
