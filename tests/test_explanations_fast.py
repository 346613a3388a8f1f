"""The batched metric paths (explanations/fast.py) against Quantus itself, the reference: equal per-image
values on the same inputs and seeds, for the parameters the v2 spec uses (and smaller ones, to stay fast).

Tolerance: the two paths share every random draw, perturbation and similarity function; they differ only
where a float32 forward pass over many perturbed copies differs in the last bits from a pass over one image
(and, for PixelFlipping's normalised curve, where a small f(clean) - f(all removed) scales that up). Stated
per test: rel 1e-5 (abs 1e-6 near zero)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import make_evalset, tiny_timm
from fxbench.explanations import METHODS, METRICS, MetricInputs, attribute, parse_config
from fxbench.explanations import fast
from fxbench.models import wrap
from fxbench.paths import SPECS_DIR

V2 = {"ties": "share", "constant_maps": "score"}
RTOL, ATOL = 0.0, 2e-5  # every score lies in [-1, 1] or [0, 1]: 1e-5 of its range


@pytest.fixture(scope="module")
def case():
    model = wrap(tiny_timm(seed=3), channels=1, mean=(0.5,), std=(0.25,))
    ev = make_evalset(n=8, seed=2)
    x = ev.x[ev.y == 1][:4].contiguous()
    p = METHODS.get("saliency").params(rule="abs")
    signed = attribute(model, x, name="input_x_gradient", params=p, batch_size=4, signed=True).numpy()
    reduced = attribute(model, x, name="saliency", params=p, batch_size=4).numpy()
    return model, x.numpy(), signed, reduced


def _explainer(name, params, batch_size=4):
    def explain(model, inputs, targets, **_):
        return attribute(
            model, torch.as_tensor(inputs), name=name, params=params, target=torch.as_tensor(targets),
            batch_size=batch_size,
        ).numpy()

    return explain


def _both(name, params, x, maps, model, seeds=(101, 202, 303, 404), **kw):
    m = METRICS.get(name)
    inp = MetricInputs(
        x=x, maps=maps, masks=np.ones_like(maps, bool), model=model, seeds=np.array(seeds[: len(x)]),
        seed=7, batch_size=4, **V2, **kw,
    )
    p = m.params(**params)
    assert fast.path_for(name, inp, p) == "fast"
    got = m.score(inp, p).values
    want = m.score(dataclasses.replace(inp, reference=True), p).values
    DIFFS.setdefault(name, []).append(float(np.nanmax(np.abs(got - want))))
    return got, want


DIFFS: dict[str, list[float]] = {}  # largest |fast - Quantus| per metric (printed with -s)


def test_v2_spec_parameters_run_on_the_fast_path():
    import yaml

    raw = yaml.safe_load((SPECS_DIR / "v2" / "explanations.yaml").read_text())
    inp = MetricInputs(x=np.zeros((1, 1, 4, 4)), maps=np.zeros((1, 1, 4, 4)), masks=np.zeros((1, 1, 4, 4)),
                       seeds=np.array([1]))
    for preset in ("full", "quick"):
        for name, choice in parse_config({**raw[preset], "name": "x", "version": 2}).model_metrics.items():
            assert fast.path_for(name, inp, choice.params) == "fast", (preset, name)
    # v1 (one seed per batch, Quantus's batch normalisation), the env switch and SmoothGrad stay on Quantus
    m = METRICS.get("max_sensitivity").params(nr_samples=2, lower_bound=0.02)
    assert fast.path_for("max_sensitivity", dataclasses.replace(inp, seeds=None), m) == "quantus"
    assert fast.path_for("max_sensitivity", dataclasses.replace(inp, explain_random=True), m) == "quantus"
    assert fast.path_for("max_sensitivity", dataclasses.replace(inp, reference=True), m) == "quantus"


@pytest.mark.parametrize("softmax", [False, True])
def test_faithfulness_correlation_equals_quantus(case, softmax):
    model, x, signed, _ = case
    # the v2 spec's subset size and baseline; fewer runs than its 100 to stay fast
    params = {"nr_runs": 12, "subset_size": 2048, "perturb_baseline": 0.0, "softmax": softmax}
    got, want = _both("faithfulness_correlation", params, x, signed, model)
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_faithfulness_correlation_random_subsets_are_quantus_draws():
    # the same subsets as np.random.seed(s) + Quantus's np.random.choice calls, by construction
    np.random.seed(123)
    want = np.stack([np.random.choice(50176, 2048, replace=False) for _ in range(3)])
    np.testing.assert_array_equal(fast._subsets(123, 50176, 3, 2048), want)


@pytest.mark.parametrize("normalised", [True, False])
def test_pixel_flipping_equals_quantus(case, normalised):
    model, x, signed, _ = case
    maps = signed.copy()
    maps[0, 0, :40] = 0.0  # a block of ties: Quantus's argsort order is reproduced, not just the values
    params = {"features_in_step": 1568, "perturb_baseline": 0.0, "softmax": True, "normalised": normalised}
    got, want = _both("pixel_flipping", params, x, maps, model)
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_constant_map_gives_the_same_nan_on_both_paths(case):
    model, x, signed, _ = case
    maps = signed.copy()
    maps[1] = 0.25  # constant: NaN with its reason before either path runs
    for name, params in [
        ("faithfulness_correlation", {"nr_runs": 5, "subset_size": 2048}),
        ("pixel_flipping", {"features_in_step": 6272, "normalised": True}),
    ]:
        got, want = _both(name, params, x, maps, model)
        assert np.isnan(got[1]) and np.isnan(want[1]), name
        np.testing.assert_allclose(np.delete(got, 1), np.delete(want, 1), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
def test_max_sensitivity_equals_quantus(case, method):
    model, x, _, _ = case
    p = METHODS.get(method).params(rule="abs")
    maps = attribute(model, torch.as_tensor(x[:3]), name=method, params=p, batch_size=3).numpy()
    params = {"nr_samples": 3, "lower_bound": 0.02, "clip": True}
    got, want = _both("max_sensitivity", params, x[:3], maps, model, explain=_explainer(method, p))
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("method", ["saliency", "smoothgrad"])
def test_mprt_equals_quantus(case, method):
    model, x, _, _ = case
    spec = {"rule": "abs"} if method == "saliency" else {
        "rule": "abs", "nt_samples": 3, "stdevs": 0.15, "nt_samples_batch_size": 3}
    p = METHODS.get(method).params(**spec)
    torch.manual_seed(0)
    maps = attribute(model, torch.as_tensor(x), name=method, params=p, batch_size=4).numpy()
    got, want = _both("mprt", {}, x, maps, model, explain=_explainer(method, p),
                      explain_random=method == "smoothgrad")
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_fast_path_uses_larger_forward_passes(case, monkeypatch):
    # the point of the path: a few large forward passes instead of one per perturbation
    model, x, signed, _ = case
    calls = []
    inner = model.forward

    def counting(z):
        calls.append(len(z))
        return inner(z)

    monkeypatch.setattr(model, "forward", counting)
    m = METRICS.get("pixel_flipping")
    inp = MetricInputs(x=x, maps=signed, masks=np.ones_like(signed, bool), model=model,
                       seeds=np.arange(len(x)), **V2)
    m.score(inp, m.params(features_in_step=6272, normalised=True))
    # 4 images x 8 steps in batches of 32, plus f(clean) and f(all removed)
    assert max(calls) == fast.CPU_FORWARD_BATCH
    assert sum(calls) == 4 * 8 + 2 * 4


def test_the_tolerance_would_catch_different_draws(case):
    # The comparison is not vacuous: the same metric with the seeds shifted by one moves the scores by far
    # more than the tolerance (so equal scores mean equal subsets, not a loose test).
    model, x, signed, _ = case
    m = METRICS.get("faithfulness_correlation")
    p = m.params(nr_runs=12, subset_size=2048)
    inp = MetricInputs(x=x, maps=signed, masks=np.ones_like(signed, bool), model=model,
                       seeds=np.array([101, 202, 303, 404]), **V2)
    a = m.score(inp, p).values
    b = m.score(dataclasses.replace(inp, seeds=inp.seeds + 1, reference=True), p).values
    assert np.abs(a - b).max() > 100 * ATOL
