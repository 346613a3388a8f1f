"""[anti-gaming]: the audit re-runs a sample of a result's images chosen by a review-time nonce and compares
each outcome (leaderboard/audit.py).

The model is linear in the canonical pixels, z = a * sum(x) + b with a constant a, so every answer is known by
hand: the decision is "mean brightness >= t"; an L-inf attack of budget eps moves sum(x) by at most
sum(min(x, eps)) down and sum(min(1 - x, eps)) up (the box [0, 1] clips it), which APGD reaches in one signed
step; saliency is the constant map |a|, whose relevance mass is the mask's share of the image. The result is a
genuine v3 quick-preset run of it on the embedded subset (96 images, 48 fractured)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from fxbench.leaderboard.audit import (
    AuditSettings,
    audit_result,
    audit_settings,
    compare_robust,
    select_images,
)
from fxbench.leaderboard.consistency import check_consistency
from fxbench.robustness.battery import RobustnessBattery
from scipy.stats import hypergeom
from v3_audit_fixtures import INPUT, N_PIX, SUBMISSION, A, canonical, embedded, genuine_run, linear

EPS = 4 / 255


@pytest.fixture(scope="module")
def data():
    return embedded()


@pytest.fixture(scope="module")
def genuine():
    run = genuine_run()
    return json.loads((run / "result.json").read_text()), pd.read_parquet(run / "samples.parquet")


def run_audit(genuine, data, *, result=None, samples=None, nonce="n" * 16, submission=None, model=None, **kw):
    ev, t = data
    result = result if result is not None else genuine[0]
    samples = samples if samples is not None else genuine[1]
    model = model or canonical(t)
    return audit_result(result, samples, model=model, submission=submission or genuine[0]["submission"],
                        evalset=ev, nonce=nonce, result_sha256="f" * 64, device=torch.device("cpu"),
                        robustness_battery=RobustnessBattery(surrogate=model), **kw)


def by_hand(ev, t: float) -> pd.DataFrame:
    """Clean decision and robustness at 4/255 of the linear model, from the pixels."""
    x = ev.x.reshape(len(ev), -1).double()
    s = x.sum(dim=1)
    margin = A * (s - N_PIX * t)
    down = A * torch.clamp(x, max=EPS).sum(dim=1)  # how far the attack can lower the margin
    up = A * torch.clamp(1 - x, max=EPS).sum(dim=1)
    pred = (margin >= 0).long()
    y = ev.y
    robust = torch.where(y == 1, margin - down >= 0, margin + up < 0) & (pred == y)
    return pd.DataFrame({"image_id": ev.ids, "pred": pred.numpy(), "robust": robust.numpy(),
                         "slack": torch.minimum((margin - down).abs(), (margin + up).abs()).numpy()})


# ---- known answers ---------------------------------------------------------------------------------------------

def test_the_genuine_result_is_what_the_hand_computation_says(genuine, data):
    ev, t = data
    result, df = genuine
    hand = by_hand(ev, t).set_index("image_id").loc[df["image_id"]]
    assert (df["clean/pred"].to_numpy() == hand["pred"].to_numpy()).all()
    clear = hand["slack"].to_numpy() > 1e-4  # away from the boundary, where float32 decides
    robust = df["robust/linf-4/correct"].to_numpy() == 1
    assert (robust == hand["robust"].to_numpy())[clear].all()
    assert 5 < robust.sum() < df["clean/correct"].sum()  # some robust, some broken: the test can fail
    frac = df["label"] == 1
    mask_share = df.loc[frac, "xai/mask_px"] / N_PIX  # constant map: its mass inside the mask is the mask's share
    np.testing.assert_allclose(df.loc[frac, "xai/saliency/relevance_mass_accuracy"], mask_share, rtol=1e-5)
    check_consistency(result, df, source="genuine")


def test_a_genuine_result_passes_its_audit(genuine, data):
    rec = run_audit(genuine, data)
    assert rec["verdict"] == "pass", rec["problems"]
    s = audit_settings("v3")
    assert len(rec["images"]) == 2 * s.images_per_class == 64
    labels = genuine[1].set_index("image_id").loc[rec["images"], "label"]
    assert (labels == 1).sum() == (labels == 0).sum() == 32
    assert rec["clean"]["compared"] == 64 and rec["clean"]["mismatched"] == []
    assert rec["robustness"]["refuted"] == [] and rec["robustness"]["budgets"] == ["linf-4"]
    assert rec["explanations"]["compared"] == 32 * 2 * 8  # 32 fractured x 2 metrics x 8 maps (gradcam: none)
    assert rec["explanations"]["unsupported_checked"] == {"gradcam": "unsupported: no convolutional layer "
                                                                      "declared or found"}


def test_float_noise_within_the_derived_tolerances_passes(genuine, data):
    result, df = genuine
    s = audit_settings("v3")
    f = df.copy()
    f["clean/p_fracture"] = np.clip(f["clean/p_fracture"] + 0.5 * s.p_atol, 0, 1)
    for c in [c for c in f if c.endswith("/relevance_mass_accuracy") or c.endswith("/auc")]:
        f[c] = f[c] * (1 + 0.5 * s.xai_rtol)
    assert run_audit(genuine, data, samples=f)["verdict"] == "pass"
    f["clean/p_fracture"] = np.clip(df["clean/p_fracture"] + 3 * s.p_atol, 0, 1)
    assert run_audit(genuine, data, samples=f)["verdict"] == "fail"


# ---- the nonce picks the images ------------------------------------------------------------------------------

def test_the_nonce_and_the_result_bytes_pick_the_images():
    df = pd.DataFrame({"image_id": [f"IMG{i:07d}" for i in range(801)], "label": [int(i < 143) for i in range(801)]})
    from fxbench.leaderboard.audit import audit_seed

    a = select_images(df, seed=audit_seed("nonce-one-0000000", "a" * 64), per_class=32)
    assert a == select_images(df, seed=audit_seed("nonce-one-0000000", "a" * 64), per_class=32)
    assert a != select_images(df, seed=audit_seed("nonce-two-0000000", "a" * 64), per_class=32)
    assert a != select_images(df, seed=audit_seed("nonce-one-0000000", "b" * 64), per_class=32)
    assert len(a) == 64 and sum(i < "IMG0000143" for i in a) == 32


def test_the_chance_of_missing_a_forgery_is_the_hypergeometric_one():
    """A forgery of m rows of the 143 fractured images escapes a 32-per-class audit when none is drawn:
    the frequency over 3,000 nonces matches scipy's hypergeometric probability (and (1 - 2D)^32 roughly)."""
    from fxbench.leaderboard.audit import audit_seed

    df = pd.DataFrame({"image_id": [f"IMG{i:07d}" for i in range(801)], "label": [int(i < 143) for i in range(801)]})
    forged = {f"IMG{i:07d}" for i in range(0, 143, 10)}  # 15 rows: balanced accuracy + 15 / 286 = 0.052
    missed = sum(not forged & set(select_images(df, seed=audit_seed(f"nonce-{k:012d}", "c" * 64), per_class=32))
                 for k in range(3000))
    p = hypergeom(143, len(forged), 32).pmf(0)
    assert abs(missed / 3000 - p) < 4 * np.sqrt(p * (1 - p) / 3000)
    assert 0.015 < p < 0.04  # ~ (1 - 2 * 0.052)^32 = 0.030


# ---- forgeries the audit catches -------------------------------------------------------------------------------

def test_a_model_that_never_ran_is_caught(genuine, data):
    """Every outcome set correct and robust, consistently: the cheap checks pass, the audit does not."""
    result, df = genuine
    f = df.copy()
    f["clean/pred"] = f["label"]
    f["clean/correct"] = 1.0
    f["clean/p_fracture"] = np.where(f["label"] == 1, 0.99, 0.01) + np.arange(len(f)) * 1e-6
    f["robust/linf-4/correct"] = 1.0
    f["robust/linf-4/broken"] = False
    f["robust/linf-4/attack"] = ""
    f["robust/linf-4/norm"] = np.nan
    f["robust/linf/min_eps_broken"] = np.nan
    f["xai/detected"] = np.where(f["label"] == 1, 1.0, np.nan)
    f["xai/adv-linf-4/flipped"] = np.where(f["label"] == 1, 0.0, np.nan)
    r = copy.deepcopy(result)
    curve = r["components"]["robustness"]["curve"][0]
    curve.update(robust_accuracy=1.0, robust_at_start=len(f), broken_by={k: 0 for k in curve["broken_by"]})
    check_consistency(r, f, source="never ran")  # consistent: only evidence can tell
    rec = run_audit(genuine, data, result=r, samples=f)
    assert rec["verdict"] == "fail"
    assert any("clean outcome of" in p for p in rec["problems"])
    assert any("the audit's attack broke" in p for p in rec["problems"])


def test_rows_mixed_from_another_model_are_caught(genuine, data):
    import fxbench

    ev, t = data
    other = fxbench.evaluate(linear(t + 0.02), input=INPUT, preset="quick", device="cpu", batteries=["clean"],
                             id=SUBMISSION).samples
    f = genuine[1].copy()
    half = f.index[f["label"] == 1][::2]
    f.loc[half, ["clean/p_fracture", "clean/pred", "clean/correct"]] = \
        other.loc[half, ["clean/p_fracture", "clean/pred", "clean/correct"]].to_numpy()
    rec = run_audit(genuine, data, samples=f)
    assert rec["verdict"] == "fail" and rec["clean"]["mismatched"]
    assert {m["image_id"] for m in rec["clean"]["mismatched"]} <= set(f.loc[half, "image_id"])


def test_false_training_claims_are_caught(genuine, data):
    r = copy.deepcopy(genuine[0])
    r["submission"]["training"] = {**r["submission"]["training"], "adversarial": True, "method": "PGD-AT"}
    rec = run_audit(genuine, data, result=r)
    assert rec["verdict"] == "fail"
    assert any(p.startswith("submission.training is") for p in rec["problems"])


def test_a_method_declared_unsupported_that_computes_is_caught(genuine, data):
    r = copy.deepcopy(genuine[0])
    r["components"]["explanations"]["unsupported"]["saliency"] = "declared by the forger"
    rec = run_audit(genuine, data, result=r)
    assert rec["explanations"]["unsupported_checked"]["saliency"] == "computes"
    assert any("declares saliency unsupported, but the audit computes it" in p for p in rec["problems"])


def test_inflated_robust_claims_are_refuted_by_the_audits_own_attack(genuine, data):
    f = genuine[1].copy()
    broken = f["robust/linf-4/broken"].astype(bool)
    f.loc[broken, "robust/linf-4/correct"] = 1.0
    rec = run_audit(genuine, data, samples=f)
    sampled_broken = set(f.loc[broken, "image_id"]) & set(rec["images"])
    assert len(sampled_broken) > 1
    assert {r["image_id"] for r in rec["robustness"]["refuted"]} == sampled_broken
    assert rec["verdict"] == "fail"


def test_explanation_scores_raised_by_hand_are_caught(genuine, data):
    f = genuine[1].copy()
    f["xai/saliency/relevance_mass_accuracy"] *= 1.5
    rec = run_audit(genuine, data, samples=f)
    assert rec["verdict"] == "fail"
    assert {m["column"] for m in rec["explanations"]["mismatched"]} == {"xai/saliency/relevance_mass_accuracy"}


# ---- the robust comparison's rules -------------------------------------------------------------------------

def _claims(correct):
    return pd.DataFrame({"image_id": [f"I{k}" for k in range(len(correct))], "robust/linf-4/correct": correct})


@pytest.mark.parametrize("audit_correct,fails", [([1, 1, 1, 1], False), ([0, 1, 1, 1], False), ([0, 0, 1, 1], True)])
def test_one_refuted_image_is_allowed_two_are_not(audit_correct, fails):
    s = AuditSettings(images_per_class=2, margin_band=1e-3, max_refuted=1, xai_methods=(), xai_metrics=(),
                      xai_rtol=0, xai_atol=0)
    got = compare_robust(_claims([1.0] * 4), _claims([float(v) for v in audit_correct]), s, audit_flags=[],
                         claimed_flags=set(), unranked_flags=frozenset())
    assert bool(got["problems"]) is fails


def test_a_claimed_break_the_audit_cannot_repeat_is_counted_not_failed():
    s = AuditSettings(2, 1e-3, 1, (), (), 0, 0)
    got = compare_robust(_claims([0.0, 0.0]), _claims([1.0, 1.0]), s, audit_flags=[], claimed_flags=set(),
                         unranked_flags=frozenset())
    assert got["problems"] == [] and len(got["unconfirmed"]) == 2


def test_an_unranked_flag_the_audit_raises_must_be_on_the_result():
    s = AuditSettings(2, 1e-3, 1, (), (), 0, 0)
    got = compare_robust(_claims([1.0]), _claims([1.0]), s, audit_flags=["gradient-mismatch", "check-not-run"],
                         claimed_flags=set(), unranked_flags=frozenset({"gradient-mismatch"}))
    assert got["problems"] == ["the audit's robustness checks raised gradient-mismatch on the sample, a flag that "
                               "keeps a result out of the ranking; the result carries none"]
    got = compare_robust(_claims([1.0]), _claims([1.0]), s, audit_flags=["gradient-mismatch"],
                         claimed_flags={"gradient-mismatch"}, unranked_flags=frozenset({"gradient-mismatch"}))
    assert got["problems"] == []


class FewerSteps:
    """v3's definition with the full preset's robustness budgets and checks but the quick preset's attack steps:
    the full cascade runs Square's 5,000 queries on every robust point of every budget (18 minutes of this
    test on a busy 2-core CPU); what the test shows depends on the budgets, not on the attack's strength."""

    def __init__(self, d):
        self._d = d

    def __getattr__(self, name):
        return getattr(self._d, name)

    def battery_config(self, battery, preset):
        config = self._d.battery_config(battery, preset)
        if battery == "robustness" and preset == "full":
            quick = self._d.battery_config("robustness", "quick")["attacks"]
            names = {a["name"] for a in quick}
            at = {b: [a for a in listed if a in names] for b, listed in (config.get("attacks_at") or {}).items()}
            config = {**config, "attacks": quick, "attacks_at": at}
        return config


def test_a_quick_result_relabelled_full_fails_its_audit(genuine, data, monkeypatch):
    """The linf-4 columns copied to every budget of the full preset: at 8/255 the audit's attack breaks points
    the result claims robust (a brightness margin between 4/255 and 8/255 of the movable pixels), and at 1/255
    it cannot repeat claimed breaks; the methods the quick run did not score, declared unsupported, compute."""
    import fxbench.definition
    from fxbench.definition import load_definition

    monkeypatch.setattr(fxbench.definition, "load_definition", lambda v=None: FewerSteps(load_definition(v)))
    ev, t = data
    result, df = copy.deepcopy(genuine[0]), genuine[1].copy()
    for b in ("linf-1", "linf-2", "linf-8", "l2-1.75"):
        for m in ("correct", "broken", "attack", "norm"):
            df[f"robust/{b}/{m}"] = df[f"robust/linf-4/{m}"]
    d = load_definition("v3")
    result["benchmark"].update(preset="full", config=d.resolved("full"), config_hash=d.config_hash("full"))
    for m in ("integrated_gradients", "occlusion", "smoothgrad"):
        result["components"]["explanations"]["unsupported"][m] = "declared by the forger"
    rec = run_audit(genuine, data, result=result, samples=df)
    hand = by_hand(ev, t).set_index("image_id")
    refuted = {r["image_id"] for r in rec["robustness"]["refuted"] if r["budget"] == "linf-8"}
    assert len(refuted) > 1 and not hand.loc[sorted(refuted), "pred"].isna().any()
    assert any(u["budget"] == "linf-1" for u in rec["robustness"]["unconfirmed"])
    assert rec["verdict"] == "fail"
    assert any("declares integrated_gradients, occlusion, smoothgrad unsupported" in p for p in rec["problems"])
