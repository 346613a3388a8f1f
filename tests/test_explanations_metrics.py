"""Explanation metrics: known answers from a linear model, the mask ceiling, chance, Quantus equivalence,
the NaN policy, and the model-based metrics on models whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch
from conftest import linear_model
from fxbench.explanations import METHODS, METRICS, MetricInputs, attribute, reference_maps
from fxbench.explanations.config import parse_config
from tolerance import numpy_fp32_ratio_rtol

N_PIX = 224 * 224
LOCALISATION = [
    "pointing_game",
    "attribution_localisation",
    "top_k_intersection",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "auc",
]
COVERAGE = {f"coverage_at_{p}": p for p in (5, 15, 25, 50)}



def score(name, maps, masks, x=None, k=1000, **inputs):
    m = METRICS.get(name)
    params = m.params(k=k) if "k" in m.params.model_fields else m.params()
    x = np.zeros_like(maps) if x is None else x
    return m.score(MetricInputs(x=x, maps=maps, masks=masks, **inputs), params)


def rect(r0, r1, c0, c1) -> np.ndarray:
    m = np.zeros((1, 224, 224), dtype=bool)
    m[0, r0:r1, c0:c1] = True
    return m


# R: where the linear model's weights are 1. Low in the image so that coverage@p's extra pixels (ties among
# zeros, taken in raster order) fill the top rows and never reach the masks.
R = rect(150, 190, 60, 100)  # 1600 pixels
M_HALF = rect(150, 190, 80, 120)  # 1600 pixels, 800 of them in R
M_OUT = rect(200, 220, 150, 210)  # 1200 pixels, none in R


@pytest.fixture(scope="module")
def linear_saliency():
    model = linear_model(torch.from_numpy(R.astype(np.float32)))
    x = torch.rand(2, 1, 224, 224, generator=torch.Generator().manual_seed(0))
    params = METHODS.get("saliency").params(rule="abs")
    return attribute(model, x, name="saliency", params=params, batch_size=2).numpy()


def test_linear_saliency_is_the_weight_pattern(linear_saliency):
    # logits [-z/2, z/2] with z = w . x: the fracture logit's gradient is w / 2.
    np.testing.assert_allclose(linear_saliency, np.stack([R, R]) * 0.5, atol=1e-7)


def test_localisation_known_answers(linear_saliency):
    masks = np.stack([M_HALF, M_OUT])
    got = {n: score(n, linear_saliency, masks, k=1600).values for n in [*LOCALISATION, *COVERAGE]}
    f_half = 800 / (N_PIX - 1600)  # false-positive rate at the only threshold that separates anything
    f_out = 1600 / (N_PIX - 1200)
    expected = {
        "pointing_game": [1, 0],  # the maximum (all of R) touches M_HALF, never M_OUT
        "attribution_localisation": [0.5, 0],
        "top_k_intersection": [0.5, 0],  # top 1600 = R exactly
        "relevance_mass_accuracy": [0.5, 0],
        "relevance_rank_accuracy": [0.5, 0],  # top |M| = R (M_HALF); any 1200 pixels of R (M_OUT)
        # ROC with one step: TPR 0.5 at FPR f, then (1, 1).
        "auc": [0.5 * f_half * 0.5 + (1 - f_half) * 0.75, (1 - f_out) * 0.5],
        **{c: [0.5, 0] for c in COVERAGE},
    }
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, atol=1e-6, err_msg=name)


def _masks_of_many_sizes() -> np.ndarray:
    sizes = [(3, 5), (20, 30), (60, 80), (150, 200)]  # up to 60% of the image: coverage ceilings below 1
    return np.stack([rect(10 + i, 10 + i + h, 5 + 2 * i, 5 + 2 * i + w) for i, (h, w) in enumerate(sizes)])


def test_mask_reference_reaches_every_ceiling():
    masks = _masks_of_many_sizes()
    x = torch.zeros(len(masks), 1, 224, 224)
    maps = reference_maps("ref_mask", x, torch.from_numpy(masks), params=None, seed=0).numpy()
    area = masks.reshape(len(masks), -1).sum(1)
    for name in LOCALISATION:
        v = score(name, maps, masks, k=1000).values
        best = np.minimum(1.0, area / 1000) if name == "top_k_intersection" else np.ones(len(masks))
        np.testing.assert_allclose(v, best, atol=1e-6, err_msg=name)
    for name, p in COVERAGE.items():
        best = np.minimum(1.0, round(N_PIX * p / 100) / area)
        np.testing.assert_allclose(score(name, maps, masks).values, best, atol=1e-9, err_msg=name)


def test_random_reference_scores_chance():
    masks = np.stack([rect(20 + 10 * i, 80 + 10 * i, 30, 90) for i in range(8)])  # 3600 pixels each
    maps = reference_maps(
        "ref_random", torch.zeros(8, 1, 224, 224), torch.from_numpy(masks), params=None, seed=3
    ).numpy()
    for name, p in COVERAGE.items():
        assert abs(score(name, maps, masks).values.mean() - p / 100) < 0.02, name
    assert abs(score("auc", maps, masks).values.mean() - 0.5) < 0.02
    assert abs(score("relevance_mass_accuracy", maps, masks).values.mean() - 3600 / N_PIX) < 0.005


@pytest.mark.parametrize("name", LOCALISATION)
def test_localisation_equals_quantus_call(name):
    """Our route (checks + Quantus's evaluate_batch) against Quantus's public __call__ on the same inputs.
    Tolerance: we normalise in float64, Quantus in the maps' float32. Both are NumPy code (no BLAS), whose
    summation order is fixed by NumPy's source, not the CPU; the relative error of Quantus's mass ratios (sum
    over the mask / sum over the image, non-negative terms, rows of 50,176) is bounded by
    tolerance.numpy_fp32_ratio_rtol: 2 gamma_24 + 3 u = 51 u = 3.0e-6 (measured: 7e-8). The other metrics are
    ranks and argmaxes: equal."""
    rng = np.random.default_rng(1)
    masks = _masks_of_many_sizes()
    smooth = rng.random((4, 1, 28, 28)).repeat(8, axis=2).repeat(8, axis=3)  # blocky maps, like Grad-CAM
    maps = (smooth + 1e-3 * rng.random((4, 1, 224, 224))).astype(np.float32)  # no ties
    x = rng.random((4, 1, 224, 224)).astype(np.float32)
    kw = {"k": 1000} if name == "top_k_intersection" else {}
    cls = {
        "pointing_game": quantus.PointingGame,
        "attribution_localisation": quantus.AttributionLocalisation,
        "top_k_intersection": quantus.TopKIntersection,
        "relevance_mass_accuracy": quantus.RelevanceMassAccuracy,
        "relevance_rank_accuracy": quantus.RelevanceRankAccuracy,
        "auc": quantus.AUC,
    }[name]
    ref = cls(disable_warnings=True, normalise_func_kwargs={"normalise_axes": (1, 2, 3)}, **kw)(
        model=None, x_batch=x, y_batch=np.ones(4, dtype=int), a_batch=maps, s_batch=masks, channel_first=True
    )
    np.testing.assert_allclose(
        score(name, maps, masks, x=x, k=1000).values, np.asarray(ref, float), rtol=numpy_fp32_ratio_rtol(N_PIX),
        atol=1e-9,
    )


def test_nan_policy_names_the_reason():
    masks = np.stack([M_HALF, np.zeros_like(M_HALF), M_HALF, M_HALF])
    maps = np.random.default_rng(0).random((4, 1, 224, 224)).astype(np.float32)
    maps[2] = 0.0
    maps[3, 0, 0, 0] = np.nan
    for name in [*LOCALISATION, "coverage_at_15"]:
        s = score(name, maps, masks)
        assert np.isfinite(s.values[0]) and s.reasons[0] is None, name
        assert np.isnan(s.values[1:]).all(), name  # PointingGame alone would score the empty mask a hit
        assert s.reasons[1:] == [
            "empty mask",
            "constant attribution (all pixels equal)",
            "non-finite attribution",
        ]


def test_shipped_spec_parses_both_presets():
    import yaml
    from fxbench.paths import SPECS_DIR

    spec = yaml.safe_load((SPECS_DIR / "v1" / "explanations.yaml").read_text())
    for preset in ("quick", "full"):
        cfg = parse_config({"name": spec["name"], "version": spec["version"], **spec[preset]})
        assert set(cfg.methods) <= set(METHODS.names()) and "ref_mask" in cfg.references
        assert all(METRICS.get(m) for m in [*cfg.localisation, *cfg.model_metrics])
    full = spec["full"]
    assert set(full["methods"]) == set(METHODS.names())  # the full preset runs every method


# -- model-based metrics on a linear model: answers known in closed form ----------------------------------


@pytest.fixture(scope="module")
def linear_case():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(1, 224, 224, generator=g)  # positive weights: input x gradient = w x / 2 >= 0
    model = linear_model(w)
    x = torch.rand(3, 1, 224, 224, generator=g) * 0.9 + 0.05
    masks = np.stack([M_HALF] * 3)

    def maps(name):
        params = METHODS.get(name).params(rule="abs")
        return attribute(model, x, name=name, params=params, batch_size=3).numpy()

    def explain(name):
        def fn(model, inputs, targets, **_):
            t = torch.as_tensor(targets)
            return attribute(
                model,
                torch.as_tensor(inputs),
                name=name,
                params=METHODS.get(name).params(rule="abs"),
                target=t,
                batch_size=8,
            ).numpy()

        return fn

    return model, x.numpy(), masks, maps, explain


def _model_score(name, case, maps, explain=None, **params):
    model, x, masks, _, _ = case
    m = METRICS.get(name)
    return m.score(
        MetricInputs(x=x, maps=maps, masks=masks, model=model, explain=explain, batch_size=8, seed=0),
        m.params(**params),
    ).values


def test_faithfulness_correlation_is_one_for_input_x_gradient_on_a_linear_model(linear_case):
    # Blacking out a subset S changes the fracture logit by sum_S w x / 2 = the attribution mass on S.
    v = _model_score(
        "faithfulness_correlation",
        linear_case,
        linear_case[3]("input_x_gradient"),
        nr_runs=10,
        subset_size=500,
        perturb_baseline=0.0,
        softmax=False,
    )
    np.testing.assert_allclose(v, 1.0, atol=1e-5)
    rnd = reference_maps("ref_random", torch.from_numpy(linear_case[1]), None, params=None, seed=0).numpy()
    r = _model_score(
        "faithfulness_correlation",
        linear_case,
        rnd,
        nr_runs=10,
        subset_size=500,
        perturb_baseline=0.0,
        softmax=False,
    )
    assert (np.abs(r) < 0.9).all()


def test_pixel_flipping_prefers_the_faithful_map(linear_case):
    kw = {"features_in_step": 3136, "perturb_baseline": "black", "softmax": False}
    ixg = _model_score("pixel_flipping", linear_case, linear_case[3]("input_x_gradient"), **kw)
    rnd = reference_maps("ref_random", torch.from_numpy(linear_case[1]), None, params=None, seed=0).numpy()
    worst = _model_score(
        "pixel_flipping", linear_case, 1.0 / (linear_case[3]("input_x_gradient") + 1e-3), **kw
    )
    assert (ixg < _model_score("pixel_flipping", linear_case, rnd, **kw)).all()
    assert (_model_score("pixel_flipping", linear_case, rnd, **kw) < worst).all()


def test_random_logit_and_max_sensitivity_on_a_linear_model(linear_case):
    # The two logits are -z/2 and z/2: |gradient| is the same for both classes (SSIM 1, the worst), and the
    # gradient does not depend on the input (sensitivity 0, the best).
    sal, explain = linear_case[3]("saliency"), linear_case[4]("saliency")
    np.testing.assert_allclose(_model_score("random_logit", linear_case, sal, explain), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        _model_score("max_sensitivity", linear_case, sal, explain, nr_samples=2, lower_bound=0.02),
        0.0,
        atol=1e-6,
    )
