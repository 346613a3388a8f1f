"""[anti-gaming], store side: outcomes that contradict each other are refused (leaderboard/consistency.py).

Every forgery starts from a genuine committed result (its per-sample file and result.json, as v3 would hold
it) and is edited the way a submitter who wants to win would, values recomputed where that matters; the
checks need no bootstrap, so they are tested directly on (result, samples); the store calls the same function
(test at the end)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fxbench.errors import ResultError
from fxbench.leaderboard.consistency import check_consistency, copied_rows, required_columns

REPO = Path(__file__).resolve().parents[1]
V2 = REPO / "leaderboard" / "results" / "v2"
ROBUST = "fxb-resnet10t-pgdat-v2"  # robust points at linf-4, a stored attack for each fractured image
ERM = "fxb-resnet10t-erm-v2"


def genuine(sid: str = ROBUST) -> tuple[dict, pd.DataFrame]:
    return json.loads((V2 / f"{sid}.json").read_text()), pd.read_parquet(V2 / f"{sid}.parquet")


def refused(result: dict, df: pd.DataFrame, *needles: str) -> str:
    with pytest.raises(ResultError) as e:
        check_consistency(result, df, source="forged")
    for n in needles:
        assert n in str(e.value), str(e.value)
    return str(e.value)


@pytest.mark.parametrize("sid", sorted(p.stem for p in V2.glob("*.json")) + [
    f"../{v}/{p.stem}" for v in ("v1", "v3") for p in sorted((V2.parent / v).glob("*.json"))])
def test_every_committed_result_is_consistent(sid):
    result, df = genuine(sid)
    check_consistency(result, df, source=sid)  # v1 and v2 alike: the rules are the batteries' own


def test_the_rules_see_something_in_the_genuine_result():
    """Not vacuous: the genuine result has broken, robust and misclassified points and Square's alpha."""
    result, df = genuine()
    assert {"clean", "apgd-ce", ""} <= set(df["robust/linf-4/attack"])
    assert 0 < df["robust/linf-4/correct"].sum() < df["clean/correct"].sum() < len(df)
    assert result["benchmark"]["config"]["batteries"]["robustness"]["square_flag_alpha"] == 0.002


# ---- outcomes that contradict each other ---------------------------------------------------------------------

def test_robust_correct_on_an_image_misclassified_clean_is_refused():
    result, df = genuine()
    wrong = df.index[df["clean/correct"] == 0][:3]
    df.loc[wrong, "robust/linf-4/correct"] = 1.0  # "robust" where the model is wrong on the clean image
    refused(result, df, "robust/linf-4/correct on images misclassified clean", "3 image(s)")


def test_broken_with_robust_correct_is_refused():
    result, df = genuine()
    i = df.index[df["robust/linf-4/broken"]][0]
    df.loc[i, "robust/linf-4/correct"] = 1.0  # counted robust, yet the attack broke it
    refused(result, df, "robust/linf-4/broken is not 'correct clean and not robust/linf-4/correct'")


def test_a_robust_point_said_broken_without_an_attack_is_refused():
    result, df = genuine()
    i = df.index[(df["robust/linf-4/correct"] == 1)][0]
    df.loc[i, "robust/linf-4/broken"] = True
    df.loc[i, "robust/linf-4/correct"] = 0.0
    refused(result, df, "robust/linf-4/attack names an attack where the point is not broken, or none where it is")


def test_a_norm_beyond_eps_is_refused_and_float32_rounding_is_not():
    result, df = genuine()
    i = df.index[df["robust/linf-4/broken"]][0]
    df.loc[i, "robust/linf-4/norm"] = 4 / 255 + 0.5e-6  # within the spec's linf_atol (1e-6): float32 rounding
    check_consistency(result, df, source="rounding")
    df.loc[i, "robust/linf-4/norm"] = 5 / 255  # an adversarial example outside the budget
    refused(result, df, "robust/linf-4/norm is outside the budget")


def test_clean_correct_must_be_pred_equals_label_and_pred_must_follow_p():
    result, df = genuine()
    f = df.copy()
    f.loc[f["clean/correct"] == 0, "clean/correct"] = 1.0  # every image "correct", predictions untouched
    refused(result, f, "clean/correct is not clean/pred == label")
    f = df.copy()
    i = f.index[(f["clean/p_fracture"] < 0.4)][0]
    f.loc[i, "clean/pred"] = 1  # decided fracture at p = 0.3
    refused(result, f, "clean/pred is not p_fracture >= 0.5")


def test_min_eps_broken_and_the_curve_in_components_must_follow_the_rows():
    result, df = genuine()
    f = df.copy()
    f.loc[f["robust/linf-4/broken"], "robust/linf/min_eps_broken"] = 8.0
    refused(result, f, "robust/linf/min_eps_broken is not the smallest L-inf budget")
    r = copy.deepcopy(result)
    r["components"]["robustness"]["curve"][0]["robust_accuracy"] += 0.01
    refused(r, df, "components.robustness.curve at linf-4")


def test_explanation_columns_must_agree_with_the_clean_and_robust_outcomes():
    result, df = genuine()
    f = df.copy()
    frac = f.index[(f["label"] == 1) & (f["clean/pred"] == 0)][:2]
    f.loc[frac, "xai/detected"] = 1.0  # missed fractures counted as detected (a subgroup's rows move)
    refused(result, f, "xai/detected is not the clean prediction")
    f = df.copy()
    stored = f.index[f["xai/adv-linf-4/flipped"] == 1][:2]
    f.loc[stored, "xai/adv-linf-4/flipped"] = 0.0
    refused(result, f, "xai/adv-linf-4/flipped is not robust/linf-4/broken")
    f = df.copy()
    f.loc[f.index[f["label"] == 0][:1], "xai/saliency/relevance_mass_accuracy"] = 0.9
    refused(result, f, "has scores on images without a fracture")


def test_v3_fixed_step_points_may_flip_what_the_cascade_left_robust():
    """v3 attacks the explanation images itself (APGD-CE at exactly eps, no early stopping), so its flip need
    not be the cascade's break: the committed TRADES-v2 v3 result has one image the fixed-step point flipped
    and the quick cascade did not break. Where no attacked point can exist, a flip is still refused."""
    v3 = V2.parent / "v3"
    result = json.loads((v3 / "fxb-resnet10t-trades-v2.json").read_text())
    df = pd.read_parquet(v3 / "fxb-resnet10t-trades-v2.parquet")
    assert result["benchmark"]["config"]["batteries"]["explanations"]["under_attack"]["points"] == "fixed_step"
    f = df["xai/adv-linf-4/flipped"].to_numpy()
    assert (np.isfinite(f) & (f != df["robust/linf-4/broken"].to_numpy())).sum() >= 1
    check_consistency(result, df, source="v3")
    forged = df.copy()
    forged.loc[forged.index[(forged["label"] == 1) & (forged["clean/correct"] == 0)][:1], "xai/adv-linf-4/flipped"] = 0.0
    refused(result, forged, "is given where no attacked point can be stored")
    v2_rules = copy.deepcopy(result)  # the same rows under the cascade's points (v2) contradict each other
    v2_rules["benchmark"]["config"]["batteries"]["explanations"]["under_attack"]["points"] = "cascade"
    refused(v2_rules, df, "xai/adv-linf-4/flipped is not robust/linf-4/broken")


def test_dropping_a_column_to_skip_its_rule_is_refused():
    result, df = genuine()
    assert required_columns(df) == []
    refused(result, df.drop(columns=["robust/linf-4/broken"]), "per-sample column 'robust/linf-4/broken' is missing")
    refused(result, df.drop(columns=["clean/pred"]), "'clean/pred' is missing")


# ---- flags re-derived from what the files allow ----------------------------------------------------------------

def test_a_removed_quick_preset_flag_or_one_injected_into_a_full_result_is_refused():
    result, df = genuine()
    r = copy.deepcopy(result)
    r["flags"] = []
    refused(r, df, "flag quick-preset is missing")
    r = copy.deepcopy(result)
    r["benchmark"]["preset"] = "full"
    refused(r, df, "components.robustness was computed with preset 'quick'", "flag quick-preset is present")


@pytest.mark.parametrize("code,counts", [
    ("unbounded-attack-failed", ("unbounded", "survived")),
    ("transfer-attack-succeeded", ("transfer", "broken")),
    ("gradient-mismatch", ("finite_differences", "mismatched")),
])
def test_an_unranked_flag_injected_into_a_competitor_is_refused(code, counts):
    """Flags that keep a result out of the ranking must be what the battery's own counts call for."""
    result, df = genuine()
    r = copy.deepcopy(result)
    r["flags"].append({"code": code, "message": "injected"})
    refused(r, df, f"flag {code} is present, but the result's own files do not call for it")
    r = copy.deepcopy(result)  # and removing it where the counts call for it
    check, field = counts
    r["components"]["robustness"]["checks"][check][field] = 100
    if check == "finite_differences":
        r["components"]["robustness"]["checks"][check]["checked"] = 136
    refused(r, df, f"flag {code} is missing")


def test_the_square_flag_follows_autoattacks_rule_on_the_rows():
    """gradient-masking-suspected iff Square broke more than alpha * n points at a budget (known answer: with
    801 images and alpha 0.002, 2 Square breaks (0.0025) call for it and 1 (0.00125) does not)."""
    result, df = genuine()
    broken = df.index[df["robust/linf-4/attack"] == "apgd-ce"]
    r = copy.deepcopy(result)
    curve = r["components"]["robustness"]["curve"][0]
    for k in (1, 2):
        f = df.copy()
        f.loc[broken[:k], "robust/linf-4/attack"] = "square"
        curve["broken_by"] = {"apgd-ce": int(len(broken) - k), "apgd-margin": 0, "fab": 0, "square": k}
        if k == 1:
            check_consistency(r, f, source="one square break")
        else:
            refused(r, f, "flag gradient-masking-suspected is missing")
            r2 = copy.deepcopy(r)
            r2["flags"].append({"code": "gradient-masking-suspected", "message": "Square beat white-box"})
            check_consistency(r2, f, source="flag present as due")


# ---- the quick result relabelled full, done sloppily --------------------------------------------------------

def relabel_curve(df: pd.DataFrame, budgets=("linf-1", "linf-2", "linf-8")) -> pd.DataFrame:
    """What the issue describes: the linf-4 columns copied to the full preset's other budgets."""
    f = df.copy()
    for b in budgets:
        for m in ("correct", "broken", "attack", "norm"):
            f[f"robust/{b}/{m}"] = f[f"robust/linf-4/{m}"]
    return f


def test_curve_columns_copied_from_linf_4_are_refused():
    result, df = genuine()
    f = relabel_curve(df)
    msg = refused(result, f, "robust/linf-1/norm is outside the budget", "robust/linf-2/norm is outside the budget")
    assert "min_eps_broken" in msg  # broken at 1/255 already, yet the smallest budget says 4


# ---- rows copied from another result ----------------------------------------------------------------------

def test_rows_mixed_from_two_genuine_results_are_detected_and_two_genuine_ones_are_not():
    _, a = genuine(ROBUST)
    _, b = genuine(ERM)
    assert copied_rows(a, b) is None
    mixed = a.copy()
    half = mixed.index[: len(mixed) // 2]
    mixed.loc[half] = b.loc[half].to_numpy()  # half the rows from the other run (same images, same order)
    hit = copied_rows(mixed, b)
    assert hit is not None and hit[0] == "clean/p_fracture" and hit[1] > 300
    renamed = b.copy()  # a genuine result's files under a new id
    assert copied_rows(renamed, b)[1] == int(((b["clean/p_fracture"] > 0) & (b["clean/p_fracture"] < 1)
                                              & ~b["clean/p_fracture"].duplicated(keep=False)).sum())
    one = a.copy()
    one.loc[one.index[0], "clean/p_fracture"] = b.loc[b.index[0], "clean/p_fracture"]
    assert copied_rows(one, b) is None  # one equal value can be chance: two is the rule


def test_a_constant_model_shares_no_value_by_chance():
    _, ref = genuine("fxb-reference-no-fracture")
    _, a = genuine(ROBUST)
    assert copied_rows(ref, ref.copy()) is None or ref["clean/p_fracture"].nunique() > 1
    assert copied_rows(ref, a) is None
    assert np.isfinite(ref["clean/p_fracture"]).all()
