"""v3 under attack, like for like: the explanation battery's own fixed-step APGD-CE point and the sign-noise
control, on a linear model whose highest-loss point is known by hand; and the battery's v3 columns."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from conftest import linear_model, make_evalset
from fxbench import decision
from fxbench.battery import RunContext
from fxbench.definition import load_definition
from fxbench.explanations import ExplanationBattery, parse_config
from fxbench.explanations.catalogue import expected_metrics
from fxbench.explanations.perturbed import (
    NOT_ATTACKED,
    eps_of,
    fixed_step_points,
    image_seed,
    perturbed_inputs,
    sign_noise,
)

EPS = 4 / 255
SIZE = 224


def weights(seed: int = 0) -> torch.Tensor:
    """Small weights: eps * sum|w| is about 0.06, so the margins stay where float32's softplus has a gradient
    (with unit weights a margin of hundreds makes the loss's gradient underflow to 0 and nothing moves)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(1, SIZE, SIZE, generator=g)
    return 1e-4 * torch.where(w.abs() < 0.05, torch.full_like(w, 0.05), w)  # no zero weight: sign(w) defined


def images(n: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.2 + 0.6 * torch.rand(n, 1, SIZE, SIZE, generator=g)  # away from the box's faces


def margin(model, x) -> torch.Tensor:
    with torch.no_grad():
        z = model(x)
    return z[:, 1] - z[:, 0]


def test_the_fixed_step_point_is_the_same_whether_the_label_flips_at_step_1_or_never():
    """z = w.x + b, margin z. The cross-entropy of the fracture label is monotone in w.x whatever b, so APGD's
    steps, step-size checks and best point do not depend on b: a model that flips at the first step (b just
    above eps * sum|w| - w.x) and one that never flips (b huge) get the same point. By hand, that point is the
    corner x - eps sign(w) (one step of 2 eps from anywhere in the ball lands outside and is projected onto
    it; no later iterate has a strictly higher loss)."""
    w, x = weights(), images()
    wx = (x.flatten(1) @ w.flatten()).double()
    reach = EPS * w.abs().sum().double()
    seeds = [11, 12, 13]
    flips = linear_model(w, b=float(-wx.mean() + 0.3 * reach))  # clean margin +0.3 reach (+-spread), corner < 0
    never = linear_model(w, b=float(-wx.mean() + 50 * reach))
    assert (margin(flips, x) > 0).all() and (margin(never, x) > 0).all()  # both classify every image correctly
    pa = fixed_step_points(flips, x, eps=EPS, steps=10, seeds=seeds, device=torch.device("cpu"), batch=2)
    pb = fixed_step_points(never, x, eps=EPS, steps=10, seeds=seeds, device=torch.device("cpu"), batch=3)
    assert torch.equal(pa, pb)
    corner = (x - EPS * torch.sign(w)).clamp(0, 1)
    assert torch.allclose(pa, corner, atol=1e-6)
    assert (decision.predict(flips(pa)) == 0).all() and (decision.predict(never(pb)) == 1).all()
    assert (pa - x).abs().max() <= EPS + 1e-6


def test_a_point_depends_on_its_image_and_seed_only_not_on_the_batch():
    w, x = weights(2), images(4, seed=5)
    model = linear_model(w, b=float(-(x.flatten(1) @ w.flatten()).mean()) + 100.0)
    seeds = [1, 2, 3, 4]
    cpu = torch.device("cpu")
    together = fixed_step_points(model, x, eps=EPS, steps=3, seeds=seeds, device=cpu, batch=4)
    alone = fixed_step_points(model, x[2:3], eps=EPS, steps=3, seeds=seeds[2:3], device=cpu, batch=1)
    assert torch.equal(together[2:3], alone)


def test_the_noise_control_is_reproducible_from_its_seed():
    x = images(2)
    a, b = sign_noise(x, EPS, [7, 8]), sign_noise(x, EPS, [7, 8])
    assert torch.equal(a, b)
    assert torch.equal(sign_noise(x[1:], EPS, [8]), a[1:])  # per image, not per batch
    assert not torch.equal(sign_noise(x, EPS, [7, 9])[1], a[1])
    d = (a - x).abs()
    assert torch.allclose(d, torch.full_like(d, EPS), atol=1e-7)  # every pixel moved by exactly eps
    signs = torch.sign(a - x)
    assert 0.45 < (signs > 0).float().mean() < 0.55  # a fair coin per pixel
    edge = torch.zeros(1, 1, 4, 4)
    assert sign_noise(edge, EPS, [1]).min() >= 0  # clipped to the canonical range
    assert image_seed(0, "noise", "IMG1") != image_seed(0, "noise", "IMG2") != image_seed(1, "noise", "IMG2")
    assert eps_of("linf-4") == 4 / 255


def v3_config() -> dict:
    spec = load_definition("v3").batteries["explanations"]
    cfg = {"name": spec["name"], "version": spec["version"], **copy.deepcopy(spec["quick"])}
    cfg["methods"] = {"saliency": cfg["methods"]["saliency"]}
    cfg["references"] = {r: cfg["references"][r] for r in ("ref_edge", "ref_prior", "ref_mask")}
    cfg["model_metrics"] = {"samples": 1, "metrics": {}}
    cfg["under_attack"] = {**cfg["under_attack"], "methods": ["saliency", "ref_edge"], "steps": 2,
                           "metrics": ["shuffled_auc", "relevance_mass_accuracy"]}
    cfg["subgroups"] = {**cfg["subgroups"], "metrics": ["shuffled_auc"]}
    cfg["vs_reference"] = {"references": ["ref_edge", "ref_prior"], "metrics": ["shuffled_auc", "enrichment"]}
    cfg["gallery"] = {**cfg["gallery"], "images": 0}
    cfg["chunk_size"] = 8
    return cfg


def test_battery_v3_scores_attack_and_noise_without_the_robustness_battery():
    evalset = make_evalset(8)  # four fractured images
    w = weights(3)
    fr = evalset.y == 1
    wx = evalset.x[fr].flatten(1) @ w.flatten()
    order = torch.argsort(wx)
    # misclassify the fractured image with the smallest w.x: b between it and the next
    b = float(-(wx[order[0]] + wx[order[1]]) / 2)
    model = linear_model(w, b=b)
    ctx = RunContext(device=torch.device("cpu"), seed=0, preset="quick", work_dir=Path("."), previous={},
                     _tensor_loader=lambda battery: {})  # nothing from the robustness battery
    battery, cfg = ExplanationBattery(), parse_config(v3_config())
    out = {k: battery.run_shard(k, model=model, evalset=evalset, config=cfg, ctx=ctx)
           for k in battery.shards(evalset, cfg)}
    res = battery.finalize(out, model=model, evalset=evalset, config=cfg, ctx=ctx)
    df: pd.DataFrame = res.samples
    status = res.info["under_attack"]
    assert status["status"] == "computed" and status["scored"] == 3 and status["not_scored"] == 1
    c = "xai/saliency/shuffled_auc"
    adv, noise = df[f"{c}/adv-linf-4"], df[f"{c}/noise-linf-4"]
    assert np.allclose(df[f"{c}/adv_minus_noise-linf-4"], adv - noise, equal_nan=True)
    assert np.allclose(df[f"{c}/noise_minus_clean-linf-4"], noise - df[c], equal_nan=True)
    missed = df["image_id"] == evalset.ids[int(np.flatnonzero(fr.numpy())[int(order[0])])]
    assert adv[missed].isna().all() and (df.loc[missed, f"{c}/adv-linf-4/nan_reason"] == NOT_ATTACKED).all()
    assert adv[~missed].notna().all()
    # a linear model's saliency is |w| / 2 wherever x is: attack and noise change nothing
    assert np.allclose(df.loc[~missed, f"{c}/adv_minus_noise-linf-4"], 0, atol=1e-12)
    ids = {m.id for m in res.metrics}
    assert {f"{c}/adv-linf-4", f"{c}/noise-linf-4", f"{c}/adv_minus_noise-linf-4",
            f"{c}/noise_minus_clean-linf-4"} <= ids
    assert not any("drop-linf-4" in i or i.endswith("/flipped") for i in ids)  # v2's split: cascade only
    enr = next(m for m in res.metrics if m.id == "xai/saliency/enrichment")
    assert enr.reduce == "median" and {m.id for m in expected_metrics(cfg)} == ids
    assert res.info["best_reference"]["shuffled_auc"] in ("ref_edge", "ref_prior")
    # the same points through the typed object: the battery reads nothing from the robustness battery
    i = evalset.ids.index(df.loc[~missed, "image_id"].iloc[0])
    adv_in, _ = perturbed_inputs(model, 0, evalset.ids[i : i + 1], evalset.x[i : i + 1], cfg, torch.device("cpu"))
    assert adv_in.noise is not None and adv_in.attacked == [True]
