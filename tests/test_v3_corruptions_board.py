"""The corruption battery outside itself: its metric ids (grammar, round trip, the v3 catalogue), the
leaderboard's corruption columns, reference values, view, plot and README section (and nothing of it for a
version without corruption scores), and `fxbench run --battery corruptions` / `fxbench.evaluate`."""

from __future__ import annotations

import json

import leaderboard_fixtures as F
import numpy as np
import pytest
from fxbench.paths import SPECS_DIR
from fxbench.results import metric_ids as ids
from fxbench.results.metric_ids import MetricId, parse, try_parse
from fxbench.results.metrics import MetricDef, compute_metrics

# -- metric ids -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mid", "want"), [
    ("corrupt/gaussian_noise-3/balanced_accuracy", MetricId("corrupt", "balanced_accuracy", shift="gaussian_noise-3")),
    ("corrupt/gaussian_noise-3/correct", MetricId("corrupt", "correct", shift="gaussian_noise-3")),
    ("corrupt/gamma_corr_up-5/correct/drop", MetricId("corrupt", "correct", variant="drop", shift="gamma_corr_up-5")),
    ("corrupt/mean-2/balanced_accuracy", MetricId("corrupt", "balanced_accuracy", shift="mean-2")),
    ("corrupt/mean/sensitivity/drop", MetricId("corrupt", "sensitivity", variant="drop", shift="mean")),
    ("corrupt/pixelate-0/p_fracture", MetricId("corrupt", "p_fracture", shift="pixelate-0")),
    ("corrupt/clean/xai/saliency/relevance_mass_enrichment",
     MetricId("corrupt", "relevance_mass_enrichment", method="saliency", shift="clean")),
    ("corrupt/pixelate-1/xai/saliency/relevance_mass_enrichment/drop",
     MetricId("corrupt", "relevance_mass_enrichment", method="saliency", variant="drop", shift="pixelate-1")),
])
def test_parse_and_round_trip(mid, want):
    assert parse(mid) == want and str(want) == mid
    assert not want.headline and not want.under_attack and want.threat is None


@pytest.mark.parametrize("bad", [
    "corrupt/gaussian_noise/balanced_accuracy", "corrupt/gaussian_noise-10/balanced_accuracy",
    "corrupt/Gauss-1/balanced_accuracy", "corrupt/clean-1/balanced_accuracy", "corrupt/clean/balanced_accuracy",
    "corrupt/clean/xai/saliency/auc/drop", "corrupt/mean/drop", "corrupt/mean-/correct", "corrupt/-1/correct",
    "corrupt/pixelate-1/correct/flipped", "corrupt/pixelate-1/xai/saliency", "corrupt/pixelate-1/xai/adv-linf-4/auc",
    "corrupt/pixelate-1", "corrupt/pixelate-1/a/b/c", "corrupt/pixelate-1/correct/nan_reason",
])
def test_parse_refuses(bad):
    with pytest.raises(ValueError):
        parse(bad)
    assert try_parse(bad) is None


def test_builders():
    assert ids.shift_id("pixelate", 3) == "pixelate-3" and ids.mean_shift() == "mean" and ids.mean_shift(2) == "mean-2"
    assert ids.corrupt_id("pixelate-3", "balanced_accuracy", drop=True) == "corrupt/pixelate-3/balanced_accuracy/drop"
    assert ids.corrupt_id("clean", "e", method="saliency") == "corrupt/clean/xai/saliency/e"
    assert ids.shift_parts("gamma_corr_up-4") == ("gamma_corr_up", 4)
    assert ids.shift_parts("mean-4") == (None, 4) and ids.shift_parts("mean") == (None, None)
    for call in (lambda: ids.shift_id("mean", 1), lambda: ids.shift_id("clean", 1), lambda: ids.shift_id("a", 10),
                 lambda: ids.shift_id("a", True), lambda: ids.corrupt_id("clean", "balanced_accuracy"),
                 lambda: ids.corrupt_id("clean", "e", method="saliency", drop=True),
                 lambda: ids.corrupt_id("a-1", "drop"), lambda: ids.corrupt_id("a", "x")):
        with pytest.raises(ValueError):
            call()


def test_the_v3_catalogue_holds_the_battery_and_every_id_round_trips():
    from fxbench.definition import load_definition

    raw = json.loads((SPECS_DIR / "v3" / "metrics.json").read_text())
    d = load_definition("v3")
    for preset, metrics in raw.items():
        assert metrics == d.catalogue_json()[preset]  # regenerated with `python -m fxbench.definition v3`
        families = {parse(m).family for m in metrics}
        assert families == {"clean", "robust", "xai", "corrupt"}
        for mid, definition in metrics.items():
            assert str(parse(mid)) == mid and str(parse(definition["column"])) == definition["column"]
            p = parse(mid)
            if p.family == "corrupt":
                assert definition["higher_is_better"] == (p.variant is None), mid  # drops: lower is better
    full = [m for m in raw["full"] if m.startswith("corrupt/")]
    per_condition = [m for m in full if parse(m).shift not in ("mean", "clean") and parse(m).method is None
                     and ids.shift_parts(parse(m).shift)[0] is not None and parse(m).variant is None
                     and parse(m).metric == "balanced_accuracy"]
    assert len(per_condition) == 13 * 5
    for v in ("v1", "v2"):  # earlier versions unchanged: no corruption battery
        assert "corruptions" not in load_definition(v).raw["batteries"]
        assert not any(m.startswith("corrupt/") for m in json.loads((SPECS_DIR / v / "metrics.json").read_text())["full"])


# -- leaderboard ------------------------------------------------------------------------------------------

CONDS = [("gaussian_noise", 1), ("gaussian_noise", 5), ("pixelate", 1), ("pixelate", 5)]


def with_corruptions(f: F.Fake, keep: dict[int, int], version: str = "v3"):
    """Samples and result of ``f`` plus corruption columns: at severity s the first keep[s] images right."""
    s = F.make_samples(f)
    i = np.arange(len(s))
    defs = []
    for c, sev in CONDS:
        shift = ids.shift_id(c, sev)
        s[ids.corrupt_id(shift, "correct")] = ((i < keep[sev]) & (s["clean/correct"] == 1)).astype(float)
        s[ids.corrupt_id(shift, "correct", drop=True)] = s["clean/correct"] - s[ids.corrupt_id(shift, "correct")]
    for pooled, members in [(ids.mean_shift(1), CONDS[0::2]), (ids.mean_shift(5), CONDS[1::2]),
                            (ids.mean_shift(), CONDS)]:
        for drop in (False, True):
            s[ids.corrupt_id(pooled, "correct", drop=drop)] = np.mean(
                [s[ids.corrupt_id(ids.shift_id(c, sev), "correct", drop=drop)] for c, sev in members], axis=0)
    for shift in [ids.shift_id(c, sev) for c, sev in CONDS] + [ids.mean_shift(1), ids.mean_shift(5), ids.mean_shift()]:
        defs += [MetricDef(ids.corrupt_id(shift, "balanced_accuracy"), ids.corrupt_id(shift, "correct"),
                           reduce="balanced_accuracy"),
                 MetricDef(ids.corrupt_id(shift, "balanced_accuracy", drop=True),
                           ids.corrupt_id(shift, "correct", drop=True), reduce="balanced_accuracy",
                           higher_is_better=False)]
    result = F.make_result(f, s, version=version)
    result["metrics"].update({k: v.to_json() for k, v in compute_metrics(s, defs, n_resamples=200).items()})
    return s, result


@pytest.fixture
def built(tmp_path, monkeypatch):
    from fxbench.leaderboard import store as store_mod
    from fxbench.leaderboard.generate import build_leaderboard
    from test_leaderboard_v2 import RANKING

    monkeypatch.setattr(store_mod, "version_spec", F.fake_spec)
    root = tmp_path / "results"
    for f, keep in ((F.Fake("robust-model", clean=30), {1: 28, 5: 20}), (F.Fake("fragile-model", clean=34), {1: 10, 5: 2})):
        s, result = with_corruptions(f, keep)
        F.write_stored(root / "v3", f, version="v3", samples=s, result=result)
    F.write_stored(root / "v2", F.Fake("old-model"), version="v2")
    b = build_leaderboard(results_dir=root, spec_for=F.fake_spec, ranking_for=lambda v: RANKING)
    return b.files


def test_tables_carry_the_corruption_columns_and_references_score_half(built):
    board = json.loads(built["leaderboard.json"])
    v3 = next(v for v in board["versions"] if v["version"] == "v3")
    v2 = next(v for v in board["versions"] if v["version"] == "v2")
    main = v3["tables"][0]
    mean, drop = ids.corrupt_id("mean", "balanced_accuracy"), ids.corrupt_id("mean", "balanced_accuracy", drop=True)
    assert mean in main["columns"] and drop in main["columns"]
    assert not any(c.startswith("corrupt/") for t in v2["tables"] for c in t["columns"])
    refs = {r["name"]: r["metrics"] for r in main["references"]}
    assert all(m[mean]["value"] == 0.5 and m[drop]["value"] == 0.0 for m in refs.values())
    csv = built["leaderboard.csv"].decode()
    assert mean in csv.splitlines()[0]


def test_the_corruption_view_plot_and_readme_section(built):
    page = built["site/v3/corruptions.html"].decode()
    assert "robust-model" in page and "fragile-model" in page and "severity 5" in page
    assert page.index("robust-model") < page.index("fragile-model")  # sorted by the mean corrupted score
    assert "reference: always" in page
    for sid in ("robust-model", "fragile-model"):
        png = built[f"site/v3/{sid}/corruptions.png"]
        assert png.startswith(b"\x89PNG")
        assert "corruptions.png" in built[f"site/v3/{sid}.html"].decode()
    assert "v3/corruptions.html" in built["site/index.html"].decode()
    index = built["site/index.html"].decode()
    assert index.count("Natural corruptions") >= 1
    readme = built["README.md"].decode()
    assert "### Natural corruptions (full preset)" in readme and "severity 1" in readme
    # nothing of it for the version without corruption scores
    assert "site/v2/corruptions.html" not in built
    assert "corruptions.png" not in built["site/v2/old-model.html"].decode()
    assert "v2/corruptions.html" not in index


def test_the_plot_is_deterministic(built, tmp_path, monkeypatch):
    from fxbench.leaderboard.corruption_view import curve_png
    from fxbench.leaderboard.store import load_store

    monkeypatch.setattr("fxbench.leaderboard.store.version_spec", F.fake_spec)
    store = load_store(tmp_path / "results", spec_for=F.fake_spec)
    r = next(r for r in store.versions["v3"] if r.id == "robust-model")
    assert curve_png(r) == curve_png(r) == built["site/v3/robust-model/corruptions.png"]


# -- fxbench run / evaluate -------------------------------------------------------------------------------


def test_run_battery_corruptions_alone_and_with_clean(tmp_path, cli):
    from test_run import make_submission

    sub = make_submission(tmp_path / "sub")
    r = cli("run", sub, "--out", tmp_path / "o", "--limit", 6, "--device", "cpu", "--preset", "quick",
            "--battery", "corruptions", "--battery", "clean")
    assert r.exit_code == 0, r
    assert "corrupted balanced accuracy (mean)" in r.stdout
    result = json.loads((tmp_path / "o" / "tiny-test" / "result.json").read_text())
    assert list(result["components"]) == ["clean", "corruptions"]  # the definition's order
    assert result["components"]["corruptions"]["clean_source"] == {"clean battery": 6}
    assert ids.corrupt_id("mean", "balanced_accuracy") in result["metrics"]
    r = cli("run", sub, "--out", tmp_path / "o2", "--limit", 6, "--device", "cpu", "--preset", "quick",
            "--battery", "corruptions", "-q")
    assert r.exit_code == 0, r
    alone = json.loads((tmp_path / "o2" / "tiny-test" / "result.json").read_text())
    assert alone["components"]["corruptions"]["clean_source"] == {"recomputed": 6}
    for k, m in alone["metrics"].items():
        assert m["value"] == result["metrics"][k]["value"], k


def test_evaluate_reports_the_corruption_battery():
    import fxbench
    from conftest import tiny_timm

    res = fxbench.evaluate(tiny_timm(num_classes=2, in_chans=1, seed=0),
                           input={"size": 224, "channels": 1, "mean": [0.5], "std": [0.25]},
                           preset="quick", batteries=["clean", "corruptions"], device="cpu", limit=4)
    assert "corruptions" in res.result["components"]
    assert res.result["metrics"][ids.corrupt_id("mean", "balanced_accuracy")]["n"] == 4
    assert ids.corrupt_id("gaussian_noise-3", "correct") in res.samples.columns


def test_the_vectorised_balanced_accuracy_bootstrap_is_the_reducer_per_resample():
    """v3's ~140 balanced-accuracy metrics per result made the per-resample reducer loop the cost of publishing
    and of every store check; the vectorised path gives the same bits on 0/1 and drop columns (integer sums)."""
    import pandas as pd
    from fxbench.results.metrics import REDUCERS, bootstrap_indices, resample_stats

    rng = np.random.default_rng(0)
    for n in (801, 40, 5):
        df = pd.DataFrame({"label": (np.arange(n) % 5 == 0).astype(int), "c": (rng.random(n) < 0.7).astype(float),
                           "d": rng.integers(-1, 2, n).astype(float), "f": rng.integers(0, 14, n) / 13})
        idx = bootstrap_indices(df["label"].to_numpy(), 300, 0)
        for col in ("c", "d", "f"):
            m = MetricDef("x", col, reduce="balanced_accuracy")
            ref = np.array([REDUCERS.get("balanced_accuracy")(df.iloc[i], m) for i in idx])
            got = resample_stats(df, m, idx)
            if col == "f":
                np.testing.assert_allclose(got, ref, rtol=0, atol=1e-15)
            else:
                assert np.array_equal(got, ref), (n, col)
    df.loc[0, "c"] = np.nan  # a NaN goes through the reducer itself, as before
    m = MetricDef("x", "c", reduce="balanced_accuracy")
    ref = np.array([REDUCERS.get("balanced_accuracy")(df.iloc[i], m) for i in idx])
    np.testing.assert_array_equal(resample_stats(df, m, idx), ref)


def test_the_site_board_shows_the_mean_corrupted_score_by_default(built):
    index = built["site/index.html"].decode()
    head = index[index.index('id="board-v3-full"'):]
    head = head[: head.index("</thead>")]
    mean = ids.corrupt_id("mean", "balanced_accuracy")
    drop = ids.corrupt_id("mean", "balanced_accuracy", drop=True)
    assert f'data-col="{mean}"><button' in head  # shown (a hidden one carries class="off")
    assert f'data-col="{drop}" class="off"' in head
