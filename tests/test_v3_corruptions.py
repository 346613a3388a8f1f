"""The corruption battery's known answers (issue 25): a constant classifier scores exactly 0.5 balanced accuracy
under every corruption; severity 0 reproduces the clean battery's outcomes exactly; a model that normalises each
image by its own mean and standard deviation keeps its predictions under brightness (and contrast) changes that
do not clip, by a margin derived from the 8-bit arithmetic; and the pooled scores are what their definitions
say (means of balanced accuracies, paired drops)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import linear_model, make_evalset
from fxbench.battery import RunContext
from fxbench.clean import CleanBattery
from fxbench.corruptions import CorruptionBattery
from fxbench.corruptions.stability import relevance_mass_enrichment
from fxbench.definition import load_definition
from fxbench.errors import FxbenchError
from fxbench.models import wrap
from fxbench.results.metric_ids import corrupt_id, mean_shift, parse, shift_id
from fxbench.results.metrics import compute_metrics


def raw_config(preset: str = "full", **changes) -> dict:
    cfg = copy.deepcopy(load_definition("v3").battery_config("corruptions", preset))
    cfg.update(changes)
    return cfg


def run(model, evalset, cfg: dict, *, clean: bool = True, preset: str = "full", chunk_size: int | None = None):
    """(samples with labels, metrics as JSON, info) of the clean battery (optionally) and the corruption one."""
    ctx = RunContext(device=torch.device("cpu"), seed=0, preset=preset, work_dir=Path("."))
    samples, defs = None, []
    batteries = [(CleanBattery(), load_definition("v3").battery_config("clean", preset))] if clean else []
    cb = CorruptionBattery()
    batteries.append((cb, cfg if chunk_size is None else {**cfg, "chunk_size": chunk_size}))
    for b, raw in batteries:
        config = b.configure(raw)
        outs = {k: b.run_shard(k, model=model, evalset=evalset, config=config, ctx=ctx)
                for k in b.shards(evalset, config)}
        res = b.finalize(outs, model=model, evalset=evalset, config=config, ctx=ctx)
        ctx.previous[b.name] = res
        samples = res.samples if samples is None else samples.merge(res.samples, on="image_id")
        defs += res.metrics
    samples = samples.assign(label=evalset.y.numpy())
    metrics = {k: v.to_json() for k, v in compute_metrics(samples, defs, n_resamples=50).items()}
    return samples, metrics, ctx.previous[cb.name].info


def u8_evalset(n: int = 8, seed: int = 0):
    """make_evalset's layout on the 8-bit grid canonical images live on."""
    ev = make_evalset(n, seed=seed)
    return dataclasses.replace(ev, x=torch.round(ev.x * 255) / 255)


def test_a_constant_classifier_scores_exactly_half_under_every_corruption():
    ev = u8_evalset(8)
    constant = linear_model(torch.zeros(1, 224, 224), b=-1.0)  # always "no fracture", gradient 0
    cfg = raw_config("full")  # every corruption at every severity; stability on three (each costs Quantus calls)
    cfg["stability"] = {**cfg["stability"], "corruptions": ["pixelate", "gaussian_noise", "gamma_corr_up"]}
    samples, m, _ = run(constant, ev, cfg)
    ba = [k for k in m if parse(k).family == "corrupt" and parse(k).metric == "balanced_accuracy"]
    assert len([k for k in ba if parse(k).variant is None]) == 13 * 5 + 5 + 1  # conditions, severity means, mean
    for k in ba:
        assert m[k]["value"] == (0.0 if parse(k).variant else 0.5), k
    assert m[corrupt_id(mean_shift(), "sensitivity")]["value"] == 0.0
    assert m[corrupt_id(mean_shift(), "specificity")]["value"] == 1.0
    # its maps are all zero: no mass on the fracture, on clean and corrupted images alike (a drop of exactly 0)
    e = corrupt_id(mean_shift(), "relevance_mass_enrichment", method="saliency")
    assert m[e]["value"] == 0.0 and m[corrupt_id(mean_shift(), "relevance_mass_enrichment", method="saliency",
                                                 drop=True)]["value"] == 0.0


def _severity_zero(cfg: dict) -> dict:
    return {**cfg, "severities": [0], "stability": {**cfg["stability"], "severities": [0]}}


@pytest.mark.parametrize("preset", ["quick", "full"])
def test_severity_zero_reproduces_the_clean_battery_exactly(preset, tiny_model):
    ev = u8_evalset(8)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(1, 224, 224, generator=g) / 224
    linear = linear_model(w, b=float(-(ev.x.flatten(1) @ w.flatten()).median()))  # about half each way
    for model in (linear, tiny_model):
        samples, m, _ = run(model, ev, _severity_zero(raw_config(preset)), preset=preset)
        cfg = CorruptionBattery().configure(_severity_zero(raw_config(preset)))
        assert len(set(samples["clean/pred"])) == 2 or model is tiny_model
        for c in cfg.run:
            s = shift_id(c, 0)
            assert np.array_equal(samples[f"corrupt/{s}/p_fracture"], samples["clean/p_fracture"])  # bit for bit
            assert np.array_equal(samples[f"corrupt/{s}/correct"], samples["clean/correct"])
            assert m[corrupt_id(s, "balanced_accuracy")]["value"] == m["clean/balanced_accuracy"]["value"]
            assert m[corrupt_id(s, "balanced_accuracy", drop=True)]["value"] == 0.0
        drop = samples[corrupt_id(shift_id(cfg.stability.corruptions[0], 0), "relevance_mass_enrichment",
                                  method="saliency", drop=True)]
        assert (drop.dropna() == 0).all() and drop.notna().sum() == int(ev.y.sum())


class Standardise(torch.nn.Module):
    """z = w . (x - mean(x)) / std(x) over the canonical pixels: blind to any affine change of the intensities."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(w.reshape(1, -1).clone())

    def forward(self, x):
        f = x.flatten(1)
        n = (f - f.mean(dim=1, keepdim=True)) / f.std(dim=1, keepdim=True)
        z = n @ self.w.t()
        return torch.cat([-z / 2, z / 2], dim=1)


def template_evalset(n: int = 8):
    """Fractured images carry +T, the others -T (T a +-1 checkerboard of 8 px squares), around grey 80, plus
    noise; every pixel stays within [30, 130]: x 1.5 (the strongest brightening) stays below white."""
    ev = make_evalset(n)
    i, j = np.mgrid[0:224, 0:224]
    t = np.where((i // 8 + j // 8) % 2 == 0, 1.0, -1.0)
    rng = np.random.default_rng(0)
    s = np.where(ev.y.numpy() == 1, 1.0, -1.0)
    u8 = np.clip(np.rint(80 + 40 * s[:, None, None] * t + rng.normal(0, 5, (n, 224, 224))), 30, 130)
    return dataclasses.replace(ev, x=torch.from_numpy(u8.astype(np.float32) / 255.0).unsqueeze(1)), t


def test_a_self_normalising_model_keeps_its_predictions_under_brightness_and_contrast_that_do_not_clip():
    ev, t = template_evalset(8)
    n_px = t.size
    w = torch.from_numpy(10 * t / n_px).float()
    model = wrap(Standardise(w), channels=1, mean=(0.0,), std=(1.0,))
    run_ = ["brightness_up", "brightness_down", "contrast_down"]
    samples, m, _ = run(model, ev, {**raw_config("full"), "run": run_, "stability": None})
    # The margin the 8-bit truncation can move: each pixel loses < 1/255, so |dz| <= |w| 2 sqrt(N) / (255 sigma),
    # sigma the std of the changed image (the smallest: brightness 0.5 or contrast 0.4 times the clean std).
    with torch.no_grad():
        z = model(ev.x)[:, 1] * 2
    sigma = ev.x.flatten(1).std(dim=1).double() * 0.4
    bound = float(np.linalg.norm(w.numpy())) * 2 * np.sqrt(n_px) / (255 * sigma)
    assert (z.abs().double() > bound).all(), "the test images must leave more margin than truncation can take"
    assert (samples["clean/correct"] == 1).all()
    for c in run_:
        for s in (1, 2, 3, 4, 5):
            assert (samples[f"corrupt/{shift_id(c, s)}/correct"] == 1).all(), (c, s)
    assert m[corrupt_id(mean_shift(), "balanced_accuracy", drop=True)]["value"] == 0.0
    # The control: the same template on raw intensities, with a bias, does change its mind. z = 10 T.x / N + b,
    # T.x / N = +-40/255 (+: fractured); b = 0.6 x 10 x 40/255 keeps every clean answer right, and at brightness
    # 0.5 the non-fractured z becomes (0.6 - 0.5) x 10 x 40/255 > 0: every one is called a fracture.
    raw = linear_model(w.reshape(1, 224, 224), b=0.6 * 10 * 40 / 255)
    samples, m, _ = run(raw, ev, {**raw_config("full"), "run": ["brightness_down"], "stability": None})
    assert (samples["clean/correct"] == 1).all()
    assert m[corrupt_id(shift_id("brightness_down", 5), "specificity")]["value"] == 0.0
    assert m[corrupt_id(shift_id("brightness_down", 5), "balanced_accuracy", drop=True)]["value"] == 0.5


def test_pooled_scores_are_the_mean_of_the_conditions_and_drops_are_paired(tiny_model):
    ev = u8_evalset(10, seed=3)
    g = torch.Generator().manual_seed(2)
    w = torch.randn(1, 224, 224, generator=g) / 224
    model = linear_model(w, b=float(-(ev.x.flatten(1) @ w.flatten()).median()))
    cfg = {**raw_config("full"), "run": ["gaussian_noise", "pixelate", "contrast_up"], "severities": [1, 5],
           "stability": None}
    _, m, _ = run(model, ev, cfg)
    conds = [shift_id(c, s) for c in cfg["run"] for s in cfg["severities"]]
    ba = {s: m[corrupt_id(s, "balanced_accuracy")]["value"] for s in conds}
    assert m[corrupt_id(mean_shift(), "balanced_accuracy")]["value"] == pytest.approx(np.mean(list(ba.values())),
                                                                                      abs=1e-12)
    for sev in (1, 5):
        assert m[corrupt_id(mean_shift(sev), "balanced_accuracy")]["value"] == pytest.approx(
            np.mean([ba[shift_id(c, sev)] for c in cfg["run"]]), abs=1e-12)
    clean = m["clean/balanced_accuracy"]["value"]
    for s in conds:
        assert m[corrupt_id(s, "balanced_accuracy", drop=True)]["value"] == pytest.approx(clean - ba[s], abs=1e-12)
    assert m[corrupt_id(mean_shift(), "balanced_accuracy", drop=True)]["value"] == pytest.approx(
        clean - m[corrupt_id(mean_shift(), "balanced_accuracy")]["value"], abs=1e-12)


def test_shards_resume_to_the_same_numbers_and_the_clean_battery_is_optional(tiny_model):
    """A shard is a function of its images alone (per-image seeds), and a run without the clean battery
    recomputes the clean decisions the same way (same batches)."""
    ev = u8_evalset(9, seed=5)
    cfg = {**raw_config("quick"), "stability": {**raw_config("quick")["stability"], "samples": "all"}}
    a, _, info_a = run(tiny_model, ev, cfg, preset="quick")
    b, _, info_b = run(tiny_model, ev, cfg, preset="quick", chunk_size=4)
    c, _, info_c = run(tiny_model, ev, cfg, preset="quick", clean=False)
    cols = [k for k in a.columns if k.startswith("corrupt/")]
    for other in (b, c):
        for k in cols:
            assert a[k].equals(other[k]), k
    assert info_a["clean_source"] == {"clean battery": 9} and info_c["clean_source"] == {"recomputed": 9}
    assert info_b["stability"]["images"] == int(ev.y.sum())


def test_the_stability_subset_is_the_first_fractured_ids_and_the_rest_say_why(tiny_model):
    ev = u8_evalset(8)
    cfg = {**raw_config("quick"), "stability": {**raw_config("quick")["stability"], "samples": 2}}
    samples, m, info = run(tiny_model, ev, cfg, preset="quick")
    col = corrupt_id("clean", "relevance_mass_enrichment", method="saliency")
    first = sorted(i for i, y in zip(ev.ids, ev.y.tolist()) if y == 1)[:2]
    assert sorted(samples.loc[samples[col].notna(), "image_id"]) == first
    reasons = samples[f"{col}/nan_reason"]
    assert set(reasons.dropna()) == {"not fractured", "not in the stability subset (the first 2 fractured ids)"}
    assert info["stability"]["images"] == 2 and m[col]["n"] == 2


def test_relevance_mass_enrichment_known_answers():
    masks = np.zeros((4, 1, 20, 20), dtype=bool)
    masks[:, :, 5:10, 5:15] = True  # area share 50 / 400 = 1/8
    a = 1 / 8
    maps = np.stack([np.ones((1, 20, 20)), masks[0].astype(float), np.zeros((1, 20, 20)), 1.0 + masks[0]])
    got = relevance_mass_enrichment(maps, masks, np.zeros(masks.shape, dtype=np.float32))
    assert got == pytest.approx([1.0, 1 / a, 0.0, (2 * a / (2 * a + (1 - a))) / a], abs=1e-12)
    empty = relevance_mass_enrichment(maps[:1], np.zeros_like(masks[:1]), np.zeros((1, 1, 20, 20), np.float32))
    assert np.isnan(empty).all()


def _with(name: str, definition: dict) -> dict:
    return {"corruptions": {**raw_config("quick")["corruptions"], name: definition}}


@pytest.mark.parametrize(("change", "field"), [
    ({"run": ["nope"]}, "run"),
    (_with("pixelate", {"op": "blur9", "params": [1, 2, 3, 4, 5]}), "blur9"),
    (_with("pixelate", {"op": "pixelate", "params": [0.3, 0.2]}), "corruptions.pixelate.params"),
    (_with("mean", {"op": "pixelate", "params": [0.3, 0.2, 0.2, 0.1, 0.1]}), "mean"),
    ({"severities": [6]}, "severities"),
    ({"severities": [3, 3]}, "severities"),
    ({"stability": {"method": "saliency", "params": {"rule": "abs"}, "endpoint": "relevance_mass_enrichment",
                    "samples": "all", "corruptions": ["shot_noise"], "severities": [3], "batch_size": 4}},
     "stability.corruptions"),
    ({"extra": 1}, "extra"),
])
def test_a_bad_spec_is_refused_naming_the_field(change, field):
    cfg = {**raw_config("quick"), **change}
    with pytest.raises(FxbenchError, match=f"corruptions spec: .*{field}"):
        CorruptionBattery().configure(cfg)


def test_configure_accepts_its_own_output_and_pickles():
    import pickle

    cfg = CorruptionBattery().configure(raw_config("full"))
    assert CorruptionBattery().configure(cfg) is cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg


class NanWhenDark(torch.nn.Module):
    """Fine on the clean images (mean ~0.5), NaN once an image is darkened below a mean of 0.3."""

    def forward(self, x):
        m = x.flatten(1).mean(dim=1, keepdim=True)
        z = torch.where(m < 0.3, torch.full_like(m, float("nan")), m - 0.5)
        return torch.cat([-z, z], dim=1)


def test_non_finite_logits_on_corrupted_images_are_the_submissions_error():
    from fxbench.errors import SubmissionError

    model = wrap(NanWhenDark(), channels=1, mean=(0.0,), std=(1.0,))
    with pytest.raises(SubmissionError, match=r"on corrupted images \(brightness_down-[45]\)"):
        run(model, u8_evalset(4), {**raw_config("full"), "run": ["brightness_down"], "stability": None})


def test_an_attribution_captum_cannot_compute_is_nan_with_the_reason(tiny_model, monkeypatch):
    from fxbench.corruptions import battery as cb
    from fxbench.explanations.methods import UnsupportedMethod

    def refuse(*a, **k):
        raise UnsupportedMethod("no gradient here")

    monkeypatch.setattr(cb, "attribution_maps", refuse)
    samples, m, info = run(tiny_model, u8_evalset(6), raw_config("quick"), preset="quick")
    col = corrupt_id("clean", "relevance_mass_enrichment", method="saliency")
    assert samples[col].isna().all() and m[col]["value"] is None
    assert "unsupported: no gradient here" in set(samples[f"{col}/nan_reason"])
    assert info["stability"]["unsupported"] == {"saliency": "no gradient here"}
    assert m[corrupt_id(mean_shift(), "balanced_accuracy")]["value"] is not None  # the rest is scored
