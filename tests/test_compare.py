"""`fxbench compare`: paired bootstrap differences with known answers, through the real CLI."""

from __future__ import annotations

import json

import leaderboard_fixtures as F
import numpy as np
import pandas as pd
import pytest
from fxbench.errors import ResultError
from fxbench.leaderboard.compare import compare_results, p_value, resolve_result

RMA = "xai/saliency/relevance_mass_accuracy"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Run folders A and B: B = A with saliency's per-sample relevance mass accuracy + 0.1, and 4 more
    images classified correctly (clean accuracy +0.1)."""
    root = tmp_path_factory.mktemp("compare")
    fa = F.Fake("model-a", clean=24)
    sa = F.make_samples(fa)
    fb = F.Fake("model-b", clean=28)
    sb = F.make_samples(fb)
    sb[RMA] = sa[RMA] + 0.1
    for c in [c for c in sa.columns if c.startswith("robust/")]:
        sb[c] = sa[c]
    a = F.write_run_dir(root / "a", F.make_result(fa, sa), sa)
    b = F.write_run_dir(root / "b", F.make_result(fb, sb), sb)
    return a, b


def test_known_shift_gives_that_difference_with_a_tight_ci_and_small_p(cli, pair):
    a, b = pair
    r = cli("compare", a, b, "--json")
    assert r.exit_code == 0, r
    out = json.loads(r.stdout)
    assert out["direction"] == "b - a" and out["n_shared"] == 40
    by_id = {m["id"]: m for m in out["metrics"]}
    rma = by_id[RMA]
    assert rma["diff"] == pytest.approx(0.1, abs=1e-12)
    assert rma["ci_low"] == pytest.approx(0.1, abs=1e-9) and rma["ci_high"] == pytest.approx(0.1, abs=1e-9)
    assert rma["p_value"] == pytest.approx(2 / (F.BOOTSTRAP["n_resamples"] + 1))  # every resample > 0
    assert rma["n_a"] == rma["n_b"] == 20
    # Robust columns are identical: no difference, p = 1.
    assert by_id["robust/linf-4/accuracy"]["diff"] == 0.0
    assert by_id["robust/linf-4/accuracy"]["p_value"] == 1.0
    # Clean accuracy: 28 vs 24 correct of 40.
    acc = by_id["clean/accuracy"]
    assert acc["diff"] == pytest.approx(0.1)
    # B is right on every image where A is, so no paired resample can favour A; with 4 of 40 images
    # differing, a resample misses all four often enough that 0 stays inside the CI.
    assert 0.0 <= acc["ci_low"] < 0.1 < acc["ci_high"]
    assert 0.05 < acc["p_value"] < 1


def test_identical_results_differ_by_zero_with_p_one(pair):
    a, _ = pair
    c = compare_results(resolve_result(str(a), results_dir="."), resolve_result(str(a / "result.json"), results_dir="."))
    assert c.metrics and all(m.diff in (0.0, None) for m in c.metrics)
    assert all(m.p_value in (1.0, None) for m in c.metrics)
    assert all(m.ci_low in (0.0, None) and m.ci_high in (0.0, None) for m in c.metrics)


def test_direction_is_b_minus_a(pair):
    a, b = pair
    fwd = compare_results(resolve_result(str(a), results_dir="."), resolve_result(str(b), results_dir="."),
                          prefixes=(RMA,))
    back = compare_results(resolve_result(str(b), results_dir="."), resolve_result(str(a), results_dir="."),
                           prefixes=(RMA,))
    assert fwd.metrics[0].diff == pytest.approx(-back.metrics[0].diff)


def test_metric_prefix_filter_and_table(cli, pair):
    a, b = pair
    r = cli("compare", a, b, "--metric", "xai/saliency", "--metric", "clean/acc")
    assert r.exit_code == 0, r
    lines = [ln.split()[0] for ln in r.stdout.splitlines() if ln.startswith(("xai/", "clean/", "robust/"))]
    assert lines and all(m.startswith(("xai/saliency", "clean/acc")) for m in lines)
    assert "clean/accuracy" in lines and RMA in lines and "xai/gradcam/pointing_game" not in lines
    assert "B - A" in r.stdout and "paired bootstrap, 200 resamples stratified by label" in r.stdout
    r = cli("compare", a, b, "--metric", "nothing/")
    assert r.exit_code == 2 and "no metric shared by both results starts with nothing/" in r.stderr


def test_submission_ids_from_the_store(cli, tmp_path):
    results = F.make_store(tmp_path / "results", F.DEFAULT_FAKES[:2])
    r = cli("compare", "erm-baseline", "v1/pgd-at", "--results", results, "--json", "--metric", "robust/linf-4/accuracy")
    assert r.exit_code == 0, r
    m = json.loads(r.stdout)["metrics"]
    assert [x["id"] for x in m] == ["robust/linf-4/accuracy"] and m[0]["diff"] == pytest.approx(0.4)
    r = cli("compare", "erm-baseline", "nobody", "--results", results)
    assert r.exit_code == 2 and "'nobody': not a result file, a result folder, or a submission id" in r.stderr


def test_different_versions_or_data_refused(cli, pair, tmp_path):
    a, _ = pair
    for name, change, reason in [
        ("v2", lambda d: d["benchmark"].update(version="v2"), "different benchmark versions"),
        ("fp", lambda d: d["benchmark"]["dataset"].update(fingerprint="cd" * 32), "computed on different data"),
    ]:
        other = tmp_path / name
        other.mkdir()
        obj = json.loads((a / "result.json").read_text())
        change(obj)
        (other / "result.json").write_text(json.dumps(obj))
        (other / "samples.parquet").write_bytes((a / "samples.parquet").read_bytes())
        r = cli("compare", a, other)
        assert r.exit_code == 2 and reason in r.stderr, r
        assert "Traceback" not in r.stderr


def test_different_presets_compared_with_a_note(pair, tmp_path):
    a, _ = pair
    obj = json.loads((a / "result.json").read_text())
    obj["benchmark"].update(preset="quick", config_hash=F.CONFIG_HASHES["quick"])
    other = F.write_run_dir(tmp_path / "q", obj, F.make_samples(F.Fake("model-a", clean=24)))
    c = compare_results(resolve_result(str(a), results_dir="."), resolve_result(str(other), results_dir="."))
    assert any("different battery configurations" in n for n in c.notes)


def test_labels_must_agree(pair, tmp_path):
    a, _ = pair
    obj = json.loads((a / "result.json").read_text())
    s = F.make_samples(F.Fake("model-a", clean=24))
    s.loc[0, "label"] = 1  # image 0 is non-fractured in A
    obj["metrics"] = F.make_result(F.Fake("model-a", clean=24), s)["metrics"]
    other = F.write_run_dir(tmp_path / "relabelled", obj, s)
    with pytest.raises(ResultError, match="IMG9000000 has different labels"):
        compare_results(resolve_result(str(a), results_dir="."), resolve_result(str(other), results_dir="."))


def test_p_value_formula():
    assert p_value(np.zeros(99)) == 1.0
    assert p_value(np.full(99, 0.3)) == pytest.approx(2 / 100)
    d = np.concatenate([np.full(10, -1.0), np.full(89, 1.0)])
    assert p_value(d) == pytest.approx(2 * 11 / 100)
    assert p_value(np.array([np.nan])) is None


def test_pairs_only_images_finite_in_both_and_says_n(tmp_path):
    """A scores every fractured image 0.2; B scores its 'easy' half 0.6 and is NaN on the other half, where
    A also happens to be worse. Averaging each side over its own rows would report B - A = 0.6 - mean(A);
    paired on the shared finite rows it is 0.6 - 0.2 = 0.4 exactly, on n = half the images."""
    fa, fb = F.Fake("a"), F.Fake("b")
    sa, sb = F.make_samples(fa), F.make_samples(fb)
    frac = sa["label"].to_numpy() == 1
    idx = np.flatnonzero(frac)
    easy, hard = idx[::2], idx[1::2]
    a_vals = np.full(len(sa), np.nan)
    a_vals[easy], a_vals[hard] = 0.2, 0.0
    b_vals = np.full(len(sb), np.nan)
    b_vals[easy] = 0.6
    sa[RMA], sb[RMA] = a_vals, b_vals
    a = F.write_run_dir(tmp_path / "a", F.make_result(fa, sa), sa)
    b = F.write_run_dir(tmp_path / "b", F.make_result(fb, sb), sb)
    c = compare_results(resolve_result(str(a), results_dir=tmp_path), resolve_result(str(b), results_dir=tmp_path),
                        prefixes=(RMA,), n_resamples=200)
    d = next(m for m in c.metrics if m.id == RMA)
    assert (d.n, d.n_a, d.n_b) == (len(easy), len(idx), len(easy))
    assert d.a == pytest.approx(0.2) and d.b == pytest.approx(0.6) and d.diff == pytest.approx(0.4)
    assert d.ci_low == pytest.approx(0.4) and d.ci_high == pytest.approx(0.4)
    from fxbench.leaderboard.compare import format_table

    assert f"{len(easy)} (A {len(idx)}, B {len(easy)})" in format_table(c)


def test_a_filter_on_model_behaviour_pairs_the_images_where_it_holds_for_both():
    """`.../adv-linf-4/flipped` keeps the images whose label the attack flipped: a property of each model,
    not of the image. A's flipped images score 0.1, B's 0.5; they overlap on half of them. Filtering each
    side separately compared two different image sets; paired, both sides are read on the overlap only."""
    from fxbench.leaderboard.compare import paired_difference
    from fxbench.results.metrics import MetricDef

    n = 40
    label = np.r_[np.ones(20, int), np.zeros(20, int)]
    col, flip = "xai/saliency/relevance_mass_accuracy/adv-linf-4", "xai/adv-linf-4/flipped"
    fa = np.r_[np.ones(10, bool), np.zeros(30, bool)]  # A flipped on images 0-9
    fb = np.r_[np.zeros(5, bool), np.ones(10, bool), np.zeros(25, bool)]  # B on 5-14: overlap 5-9
    va = np.where(label == 1, np.where(fa, 0.1, 0.3), np.nan)
    vb = np.where(label == 1, np.where(fb, 0.5, 0.7), np.nan)
    da = pd.DataFrame({"image_id": range(n), "label": label, col: va, flip: fa})
    db = pd.DataFrame({"image_id": range(n), "label": label, col: vb, flip: fb})
    m = MetricDef(f"{col}/flipped", col, "mean", True, {"label": 1, flip: True})
    d = paired_difference(da, db, m, n_resamples=100, seed=0, alpha=0.05)
    assert d.n == 5 and (d.n_a, d.n_b) == (10, 10)
    assert d.a == pytest.approx(0.1) and d.b == pytest.approx(0.5) and d.diff == pytest.approx(0.4)
