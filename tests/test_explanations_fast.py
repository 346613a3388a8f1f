"""The batched metric paths (explanations/fast.py) against Quantus itself, the reference: equal per-image
values on the same inputs and seeds, for the parameters the v2 spec uses (and smaller ones, to stay fast).

Exactness: with Quantus's own forward batching the fast path is bit-for-bit Quantus (every draw,
perturbation, tie order and similarity is the same; test_bit_for_bit_...). With its large batches, a float32
forward pass over many copies differs from a one-image pass in the last bits (~1e-8 on a logit); a
correlation over a few runs of a barely moving untrained model amplifies that to ~2e-5. Stated tolerance:
abs 1e-4 on scores that lie in [-1, 1] or [0, 1] (and test_the_tolerance_would_catch_... shows a change of
draws moves them by far more)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import make_evalset, tiny_timm
from fxbench.explanations import METHODS, METRICS, MetricInputs, attribute, fast, parse_config
from fxbench.models import device, wrap
from fxbench.paths import SPECS_DIR

V2 = {"ties": "share", "constant_maps": "score"}
RTOL, ATOL = 0.0, 1e-4


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


@pytest.mark.parametrize("normalised,step", [(True, 1568), (False, 6272)])  # the full and quick spec steps
def test_pixel_flipping_equals_quantus(case, normalised, step):
    model, x, signed, _ = case
    maps = signed[:3].copy()
    maps[0, 0, :40] = 0.0  # a block of ties: Quantus's argsort order is reproduced, not just the values
    params = {"features_in_step": step, "perturb_baseline": 0.0, "softmax": True, "normalised": normalised}
    got, want = _both("pixel_flipping", params, x[:3], maps, model)
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
    assert max(calls) == device.CPU_FORWARD_BATCH
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


def test_battery_fast_by_default_same_columns_as_quantus_and_records_the_path(monkeypatch):
    # A v2 quick shard (model metrics shrunk) on both paths: every model-metric column equal within the
    # tolerance, and info.metric_paths says which implementation computed it.
    import copy
    from pathlib import Path

    import yaml
    from fxbench.battery import RunContext
    from fxbench.explanations import ExplanationBattery

    spec = yaml.safe_load((SPECS_DIR / "v2" / "explanations.yaml").read_text())
    cfg = {"name": spec["name"], "version": spec["version"], **copy.deepcopy(spec["quick"])}
    cfg["methods"] = {"saliency": {"rule": "abs"}}
    cfg["references"] = {"ref_random": {}, "ref_centre": {"sigma": 0.25}, "ref_anatomy": {"threshold": 0.1},
                         "ref_edge": {}}
    cfg["under_attack"] = None
    mm = cfg["model_metrics"]
    mm["samples"] = 2
    mm["metrics"]["faithfulness_correlation"].update(methods=["saliency", "ref_random"], nr_runs=10)
    mm["metrics"]["pixel_flipping"]["methods"] = ["saliency", "ref_random"]
    mm["metrics"]["mprt"]["methods"] = ["saliency"]
    mm["metrics"]["max_sensitivity"].update(methods=["saliency"], nr_samples=2)
    cfg["subgroups"]["metrics"] = ["pointing_game"]
    cfg["gallery"]["images"] = 0
    model = wrap(tiny_timm(seed=3), channels=1, mean=(0.5,), std=(0.25,))
    ev = make_evalset(4, seed=5)
    ctx = RunContext(device=torch.device("cpu"), seed=0, preset="quick", work_dir=Path("."), previous={},
                     _tensor_loader=lambda b: {})
    b = ExplanationBattery()
    key = b.shards(ev, cfg)[0]
    monkeypatch.delenv(fast.PATH_ENV, raising=False)
    got = b.run_shard(key, model=model, evalset=ev, config=cfg, ctx=ctx)
    monkeypatch.setenv(fast.PATH_ENV, "quantus")
    want = b.run_shard(key, model=model, evalset=ev, config=cfg, ctx=ctx)
    cols = [c for c in got.info["metric_paths"]]
    assert len(cols) == 6 and set(got.info["metric_paths"].values()) == {"fast"}
    assert set(want.info["metric_paths"].values()) == {"quantus"}
    for c in cols:
        g, w = got.samples[c].to_numpy(), want.samples[c].to_numpy()
        assert np.isfinite(w).sum() == 2, c
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=c)
    result = b.finalize({key: got}, model=model, evalset=ev, config=cfg, ctx=ctx)
    assert set(result.info["metric_paths"].values()) == {"fast"}
    monkeypatch.setenv(fast.PATH_ENV, "nonsense")
    with pytest.raises(Exception, match="FXBENCH_XAI_METRICS"):
        b.run_shard(key, model=model, evalset=ev, config=cfg, ctx=ctx)


def test_bit_for_bit_quantus_when_the_forward_batches_are_quantus_own(case, monkeypatch):
    # With Quantus's own batching (one image per FaithfulnessCorrelation pass, the image batch per
    # PixelFlipping step, one noisy copy per MaxSensitivity explanation) the paths agree exactly: every draw,
    # perturbation, tie order and similarity is the same, and the tolerance above covers only float32
    # forward passes over other batch sizes.
    model, x, signed, reduced = case
    monkeypatch.setattr(device, "CPU_FORWARD_BATCH", 1)
    got, want = _both("faithfulness_correlation", {"nr_runs": 6, "subset_size": 2048}, x, signed, model)
    np.testing.assert_array_equal(got, want)
    monkeypatch.setattr(device, "CPU_FORWARD_BATCH", len(x))
    maps = signed.copy()
    maps[0, 0, :40] = 0.0
    got, want = _both("pixel_flipping", {"features_in_step": 6272, "normalised": True}, x, maps, model)
    np.testing.assert_array_equal(got, want)
    p = METHODS.get("saliency").params(rule="abs")
    got, want = _both("max_sensitivity", {"nr_samples": 2, "lower_bound": 0.02, "clip": True}, x[:2],
                      reduced[:2], model, explain=_explainer("saliency", p, batch_size=1))
    np.testing.assert_array_equal(got, want)
    got, want = _both("mprt", {}, x, reduced, model, explain=_explainer("saliency", p))
    np.testing.assert_array_equal(got, want)


# -- attribution methods batched to the device's memory ---------------------------------------------------


def test_device_batch_plan_changes_no_map(case, monkeypatch):
    # The accelerator's plan (more images per call, IG's steps and Occlusion's patches in larger passes) run
    # here on the CPU: the maps equal the CPU micro-batches' bit for bit. The model sees one image per call
    # (tolerance.PerImage), so both plans get each image's logits and gradients from the same kernels and the
    # regrouping is all that is compared. With the batched model a CPU whose convolution kernel depends on the
    # batch size moves the maps by more than rounding: with oneDNN off for one side, IG moves by 0.55% of its
    # largest value (one interpolation step's gradient changes by 3% through a ReLU/max-pool choice), above
    # any tolerance that rounding would justify.
    from fxbench.explanations import methods as mth
    from tolerance import PerImage

    model, x, _, _ = case
    model = PerImage(model)
    xt = torch.as_tensor(x[:2])
    specs = {
        "integrated_gradients": {"rule": "abs", "n_steps": 4, "internal_batch_size": 4},
        "occlusion": {"rule": "positive", "window": 56, "stride": 56, "perturbations_per_eval": 2},
        "input_x_gradient": {"rule": "abs"},
    }
    for name, spec in specs.items():
        p = METHODS.get(name).params(**spec)
        cpu = attribute(model, xt, name=name, params=p, batch_size=1, signed=True)
        monkeypatch.setattr(mth, "_device_kind", lambda x: "device")
        for budget in (6, 4096):
            monkeypatch.setitem(mth._device_budget, "inputs", budget)
            per, q = mth.batch_plan(name, p, 2, 1, kind="device", budget=budget)
            if budget == 4096:  # the point: larger passes than the spec's
                assert per == 2 or name == "occlusion"
                assert q != p or name == "input_x_gradient", name
            dev = attribute(model, xt, name=name, params=p, batch_size=1, signed=True)
            np.testing.assert_array_equal(dev, cpu, err_msg=f"{name} {budget}")
        monkeypatch.setattr(mth, "_device_kind", lambda x: "cpu")
    # SmoothGrad's noise depends on the grouping: it keeps the spec's batch on every device
    sg = METHODS.get("smoothgrad").params(rule="abs", nt_samples=2, stdevs=0.1, nt_samples_batch_size=2)
    assert mth.batch_plan("smoothgrad", sg, 64, 16, kind="device", budget=4096) == (16, sg)


def test_device_out_of_memory_halves_the_pass_and_keeps_the_maps(case, monkeypatch):
    from fxbench.explanations import methods as mth

    model, x, _, _ = case
    xt = torch.as_tensor(x[:3])
    p = METHODS.get("saliency").params(rule="abs")
    want = attribute(model, xt, name="saliency", params=p, batch_size=1)
    inner, seen = mth.METHODS.get("saliency").fn, []

    def small_card(model, xb, tb, p, signed=False):
        seen.append(len(xb))
        if len(xb) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return inner(model, xb, tb, p, signed=signed)

    monkeypatch.setattr(mth, "_device_kind", lambda x: "device")
    monkeypatch.setitem(mth._device_budget, "inputs", 4)
    monkeypatch.setitem(mth.METHODS._items, "saliency", mth.Method(small_card, type(p)))
    got = attribute(model, xt, name="saliency", params=p, batch_size=1)
    assert seen[:3] == [3, 2, 1] and mth._device_budget["inputs"] == 1
    np.testing.assert_allclose(got, want, rtol=1e-6)


class FastBatchTrick(torch.nn.Module):
    """Honest alone and in the spec's batches; shifts its logits in a batch of exactly the fast path's size."""

    def forward(self, x):
        from fxbench.models import device

        z = x.mean(dim=(1, 2, 3))[:, None] * torch.tensor([[-1.0, 1.0]])
        return z + (0.5 if x.shape[0] == device.CPU_FORWARD_BATCH else 0.0)


def test_run_checks_batch_independence_at_the_fast_paths_forward_batch(monkeypatch):
    # A model that changed its answer only in the batched path's passes would score differently there than
    # under Quantus's one-image passes: the run's model check covers that batch size too.
    from fxbench.definition import load_definition
    from fxbench.errors import ModelMisbehaviour
    from fxbench.models import check_model_outputs, device
    from fxbench.models.validate import check_batch_sizes

    monkeypatch.setattr(device, "CPU_FORWARD_BATCH", 24)  # as on a GPU: a size no spec key names (1024 there)
    model = wrap(FastBatchTrick())
    spec_sizes = load_definition("v2").batch_sizes("quick")
    assert device.CPU_FORWARD_BATCH not in spec_sizes
    check_model_outputs(model, device="cpu", batch_sizes=spec_sizes)  # passes
    sizes = check_batch_sizes("quick", version="v2", device="cpu")
    assert device.CPU_FORWARD_BATCH in sizes
    with pytest.raises(ModelMisbehaviour, match="in a batch of 24"):
        check_model_outputs(model, device="cpu", batch_sizes=sizes)
