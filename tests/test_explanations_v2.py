"""Benchmark v2's explanation metrics (issue 10): known answers that the v1 definitions got wrong.

Signed faithfulness = 1 for a signed linear model; per-image scores independent of the batch; all-zero maps
scored 0 where stated; the pointing-game tolerance and the order-free tie rule on hand-made maps; the anatomy
reference computed by hand; MPRT on models whose answer is known; the battery's under-attack rows."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import quantus
import torch
import yaml
from conftest import linear_model, make_evalset
from fxbench.explanations import METHODS, METRICS, MetricInputs, attribute, parse_config, reference_maps
from fxbench.explanations.metrics import topk_hits
from fxbench.explanations.quantus_calls import clipped_uniform_noise
from fxbench.paths import SPECS_DIR
from scipy.ndimage import distance_transform_edt
from tolerance import PerImage

N_PIX = 224 * 224
V2 = {"ties": "share", "constant_maps": "score"}


class LinearLayer(torch.nn.Module):
    """z = w . x + b as an nn.Linear (MPRT randomises modules with reset_parameters); logits [-z/2, z/2]."""

    def __init__(self, w: torch.Tensor, b: float = 0.0):
        super().__init__()
        self.fc = torch.nn.Linear(w.numel(), 1)
        with torch.no_grad():
            self.fc.weight.copy_(w.reshape(1, -1))
            self.fc.bias.fill_(b)

    def forward(self, x):
        z = self.fc(x.flatten(1))
        return torch.cat([-z / 2, z / 2], dim=1)


def linear_layer_model(w: torch.Tensor, b: float = 0.0):
    from fxbench.models import wrap

    return wrap(LinearLayer(w, b), channels=1, mean=(0.0,), std=(1.0,))


def spec_v2() -> dict:
    return yaml.safe_load((SPECS_DIR / "v2" / "explanations.yaml").read_text())


def score(name, maps, masks, x=None, **params):
    m = METRICS.get(name)
    x = np.zeros_like(maps) if x is None else x
    return m.score(MetricInputs(x=x, maps=maps, masks=masks, **V2), m.params(**params)).values


def rect(r0, r1, c0, c1) -> np.ndarray:
    m = np.zeros((1, 224, 224), dtype=bool)
    m[0, r0:r1, c0:c1] = True
    return m


def test_v2_spec_parses_both_presets_and_drops_the_duplicates():
    spec = spec_v2()
    for preset in ("full", "quick"):
        cfg = parse_config({"name": spec["name"], "version": spec["version"], **spec[preset]})
        assert "attribution_localisation" not in cfg.localisation  # = relevance mass on non-negative maps
        assert "top_k_intersection" not in cfg.localisation  # k tied to the mask: rank accuracy
        assert "random_logit" not in cfg.model_metrics and "mprt" in cfg.model_metrics
        assert cfg.model_metrics["faithfulness_correlation"].signed
        assert (
            cfg.model_metrics["pixel_flipping"].signed
            and cfg.model_metrics["pixel_flipping"].params.normalised
        )
        assert cfg.localisation["pointing_game"].params.tolerance_px == 15
        assert cfg.ties == "share" and cfg.constant_maps == "score" and cfg.per_image_seeds
        assert cfg.under_attack.clean_fallback is False
    full = parse_config({"name": spec["name"], "version": spec["version"], **spec["full"]})
    assert full.model_samples is None  # every fractured image
    assert full.methods["integrated_gradients"].n_steps >= 16


# -- faithfulness on signed maps -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed_linear():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(1, 224, 224, generator=g)  # weights of both signs
    model = linear_layer_model(w, b=0.3)
    x = torch.rand(3, 1, 224, 224, generator=g) * 0.9 + 0.05
    return model, x


def _faith(model, x, maps, seeds=(11, 12, 13)):
    m = METRICS.get("faithfulness_correlation")
    p = m.params(nr_runs=20, subset_size=1000, perturb_baseline=0.0, softmax=False)
    inp = MetricInputs(
        x=x.numpy(),
        maps=maps,
        masks=np.ones_like(maps, dtype=bool),
        model=model,
        seeds=np.array(seeds[: len(x)]),
        **V2,
    )
    return m.score(inp, p).values


def test_signed_input_x_gradient_has_faithfulness_one_on_a_signed_linear_model(signed_linear):
    # Removing S (to black) changes the fracture logit z/2 by sum_S w x / 2 = the signed attributions on S.
    model, x = signed_linear
    p = METHODS.get("input_x_gradient").params(rule="abs")
    signed = attribute(model, x, name="input_x_gradient", params=p, batch_size=3, signed=True).numpy()
    np.testing.assert_allclose(
        signed, (model.net.fc.weight.detach().reshape(1, 1, 224, 224) * x / 2).numpy(), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(_faith(model, x, signed), 1.0, atol=1e-6)
    # v1's artefact: the abs map throws the sign away and no longer explains the logit
    assert (_faith(model, x, np.abs(signed)) < 0.9).all()


# -- per-image scores do not depend on the batch ---------------------------------------------------------


def test_model_metric_scores_do_not_depend_on_the_batch(signed_linear):
    model, x = signed_linear
    p = METHODS.get("saliency").params(rule="abs")
    maps = attribute(model, x, name="input_x_gradient", params=p, batch_size=3, signed=True).numpy()
    maps[2] *= 50.0  # a batch-mate with a much larger maximum (v1: Quantus divided by the batch's max)
    alone = _faith(model, x[:1], maps[:1], seeds=(11,))
    batch = _faith(model, x, maps, seeds=(11, 12, 13))
    assert alone[0] == pytest.approx(batch[0], abs=1e-12)

    def explain(model, inputs, targets, **_):
        return attribute(
            model,
            torch.as_tensor(inputs),
            name="saliency",
            params=p,
            target=torch.as_tensor(targets),
            batch_size=8,
        ).numpy()

    reduced = np.abs(maps)
    for name, params in [
        ("max_sensitivity", {"nr_samples": 3, "lower_bound": 0.02, "clip": True}),
        ("mprt", {}),
        ("pixel_flipping", {"features_in_step": 6272, "normalised": True}),
    ]:
        m = METRICS.get(name)

        def run(idx, seeds, m=m, params=params):
            return m.score(
                MetricInputs(
                    x=x.numpy()[idx],
                    maps=reduced[idx],
                    masks=np.ones_like(reduced[idx], bool),
                    model=PerImage(model),
                    explain=explain,
                    seeds=np.array(seeds),
                    **V2,
                ),
                m.params(**params),
            ).values

        # Bit for bit: the model sees one image per call (tolerance.PerImage), so an image's logits come from
        # the same kernel alone or with batch-mates (a batched float32 matmul's summation order may depend on
        # the batch size, by CPU; the scores' independence of the batch is what is tested here).
        assert run([1], [5])[0] == run([0, 1, 2], [4, 5, 6])[1], name


def test_localisation_scores_do_not_depend_on_the_batch():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 1, 224, 224)).astype(np.float32)
    maps[2] *= 100
    masks = np.stack([rect(50, 90, 60, 100)] * 3)
    for name in [
        "pointing_game",
        "relevance_mass_accuracy",
        "relevance_rank_accuracy",
        "auc",
        "coverage_at_15",
    ]:
        params = {"tolerance_px": 15} if name == "pointing_game" else {}
        assert score(name, maps[:1], masks[:1], **params)[0] == score(name, maps, masks, **params)[0], name


# -- all-zero maps, tolerance, ties ----------------------------------------------------------------------


def test_all_zero_map_scores_zero_on_mass_and_top_k_metrics():
    zero = np.zeros((1, 1, 224, 224), dtype=np.float32)
    mask = rect(100, 120, 100, 130)[None]
    for name, params, want in [
        ("relevance_mass_accuracy", {}, 0.0),  # no mass on the fracture
        ("relevance_rank_accuracy", {}, 0.0),  # selects no pixel
        ("coverage_at_15", {}, 0.0),
        ("pointing_game", {"tolerance_px": 15}, 0.0),  # points nowhere
        ("pointing_game_strict", {"tolerance_px": 0}, 0.0),
        ("auc", {}, 0.5),  # no ranking: chance
    ]:
        assert score(name, zero, mask, **params)[0] == want, name
        # the same in a batch with a non-zero map: whole-batch normalisation turned it into NaN (a crash in
        # sklearn's AUC on a real run) because Quantus skips it only when every map of the batch is zero
        rng = np.random.default_rng(1)
        mixed = np.concatenate([zero, rng.random((1, 1, 224, 224)).astype(np.float32)])
        both = score(name, mixed, np.concatenate([mask, mask]), **params)
        assert both[0] == want, name
        assert both[1] == score(name, mixed[1:], mask, **params)[0], name
    # v1 dropped it (NaN), which is how a model whose Grad-CAM died looked better
    v1 = METRICS.get("relevance_mass_accuracy").score(MetricInputs(x=zero, maps=zero, masks=mask), None)
    assert np.isnan(v1.values[0]) and "constant" in v1.reasons[0]


def test_pointing_game_tolerance_and_tied_maxima_on_a_hand_made_map():
    mask = rect(100, 110, 100, 110)[None]
    a = np.zeros((3, 1, 224, 224), dtype=np.float32)
    a[0, 0, 105, 120] = 1.0  # 11 px right of the mask's last column (109): inside 15 px, outside the mask
    a[1, 0, 105, 126] = 1.0  # 17 px away: a miss either way
    a[2, 0, 105, 105] = 1.0  # two tied maxima: one inside the mask, one far away
    a[2, 0, 10, 10] = 1.0
    masks = np.repeat(mask, 3, axis=0)
    np.testing.assert_allclose(score("pointing_game", a, masks, tolerance_px=15), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(score("pointing_game_strict", a, masks, tolerance_px=0), [0.0, 0.0, 0.5])
    # Quantus (v1) counted a hit when any tied maximum is in the mask
    q = quantus.PointingGame(disable_warnings=True).evaluate_batch(x_batch=a, a_batch=a, s_batch=masks)
    assert list(np.asarray(q, float)) == [0.0, 0.0, 1.0]


def test_order_free_ties_match_quantus_on_tie_free_maps_and_share_ties():
    rng = np.random.default_rng(3)
    a = rng.random((4, 1, 224, 224))  # no ties
    masks = np.stack([rect(20 + 30 * i, 60 + 30 * i, 40, 90) for i in range(4)])
    q = quantus.RelevanceRankAccuracy(disable_warnings=True).evaluate_batch(
        x_batch=a, a_batch=a, s_batch=masks
    )
    np.testing.assert_allclose(score("relevance_rank_accuracy", a.astype(np.float32), masks), q, atol=1e-12)
    qpg = quantus.PointingGame(disable_warnings=True).evaluate_batch(x_batch=a, a_batch=a, s_batch=masks)
    np.testing.assert_array_equal(score("pointing_game_strict", a, masks, tolerance_px=0), np.asarray(qpg, float))
    raster = METRICS.get("coverage_at_15").score(MetricInputs(x=a, maps=a, masks=masks), None).values
    np.testing.assert_allclose(score("coverage_at_15", a, masks), raster)
    # 10 pixels tied at the threshold, 4 of them in the mask, 5 places left: 5 * 4 / 10 = 2 expected hits
    flat = np.zeros(100)
    flat[:3] = 2.0
    flat[10:20] = 1.0
    s = np.zeros(100, bool)
    s[[0, 10, 11, 12, 13]] = True
    assert topk_hits(flat, s, 8) == pytest.approx(1 + 2.0)
    assert topk_hits(flat, s, 8, ties="raster") == 1 + 4  # raster order: the tied pixels in mask come first


def test_anatomy_reference_scores_by_hand():
    # A foreground (anatomy) block F of 100 x 120 px in a black image; the mask M (20 x 30) lies inside F.
    x = np.zeros((1, 1, 224, 224), dtype=np.float32)
    x[0, 0, 50:150, 40:160] = 0.6
    f, m = 100 * 120, 20 * 30
    mask = rect(80, 100, 70, 100)[None]
    ref = reference_maps(
        "ref_anatomy",
        torch.from_numpy(x),
        torch.from_numpy(mask),
        params=_ref_params("ref_anatomy", threshold=0.1),
        seed=0,
    ).numpy()
    assert ref.sum() == f
    near = (distance_transform_edt(~mask[0, 0]) <= 15) & (x[0, 0] > 0.1)
    n_neg = N_PIX - m
    expected = {
        "relevance_mass_accuracy": m / f,  # uniform mass on F
        "relevance_rank_accuracy": m / f,  # |M| places shared by |F| tied pixels: |M| * |M| / |F| hits
        "coverage_at_5": round(N_PIX * 0.05) / f,  # 2509 places < |F|
        "coverage_at_50": 1.0,  # 25088 places > |F|: all of F, every mask pixel
        "pointing_game": near.sum() / f,  # share of the tied maxima (all of F) within 15 px of M
        "pointing_game_strict": m / f,
        # every mask pixel scores 1; negatives: 1 on F \ M (ties count half), 0 outside F
        "auc": ((N_PIX - f) + 0.5 * (f - m)) / n_neg,
        "auc_anatomy": 0.5,  # inside the anatomy the map is constant
    }
    for name, want in expected.items():
        params = {
            "pointing_game": {"tolerance_px": 15},
            "pointing_game_strict": {"tolerance_px": 0},
            "auc_anatomy": {"threshold": 0.1},
        }.get(name, {})
        assert score(name, ref, mask, x=x, **params)[0] == pytest.approx(want, abs=1e-9), name


def _ref_params(name, **kw):
    from fxbench.explanations import REFERENCES

    return REFERENCES.get(name).params(**kw)


# -- model metrics with known answers --------------------------------------------------------------------


def test_mprt_separates_a_model_independent_map_from_the_gradient():
    g = torch.Generator().manual_seed(0)
    model = linear_layer_model(torch.randn(1, 224, 224, generator=g))
    x = torch.rand(2, 1, 224, 224, generator=g)
    p = METHODS.get("saliency").params(rule="abs")

    def grad(model, inputs, targets, **_):
        return attribute(
            model,
            torch.as_tensor(inputs),
            name="saliency",
            params=p,
            target=torch.as_tensor(targets),
            batch_size=8,
        ).numpy()

    def edges(model, inputs, targets, **_):  # ignores the model: the sanity check's failure case
        return reference_maps("ref_edge", torch.as_tensor(inputs), None, params=None, seed=0).numpy()

    m = METRICS.get("mprt")
    for explain, check in [(edges, lambda v: np.allclose(v, 1.0)), (grad, lambda v: (np.abs(v) < 0.2).all())]:
        maps = explain(model, x.numpy(), np.ones(2, int))
        v = m.score(
            MetricInputs(
                x=x.numpy(),
                maps=maps,
                masks=np.ones_like(maps, bool),
                model=model,
                explain=explain,
                seeds=np.array([1, 2]),
                **V2,
            ),
            m.params(),
        ).values
        assert check(v), v


def test_pixel_flipping_normalised_curve_starts_at_the_clean_image(signed_linear):
    model, x = signed_linear
    m = METRICS.get("pixel_flipping")
    maps = np.random.default_rng(0).random((3, 1, 224, 224)).astype(np.float32)
    # one step removes every pixel: the curve is [1, 0] after normalisation, its area 0.5 for any model
    v = m.score(
        MetricInputs(
            x=x.numpy(),
            maps=maps,
            masks=np.ones_like(maps, bool),
            model=model,
            seeds=np.array([1, 2, 3]),
            **V2,
        ),
        m.params(features_in_step=N_PIX, softmax=False, normalised=True),
    ).values
    np.testing.assert_allclose(v, 0.5, atol=1e-9)


def test_max_sensitivity_noise_stays_in_the_canonical_range():
    arr = np.array([[0.0, 0.01, 0.5, 0.99, 1.0]] * 50)
    np.random.seed(0)
    out = clipped_uniform_noise(arr, np.tile(np.arange(5), (50, 1)), lower_bound=0.02)
    assert out.min() >= 0 and out.max() <= 1 and not np.allclose(out, arr)


# -- the battery ---------------------------------------------------------------------------------------


def v2_small_config(**overrides) -> dict:
    spec = spec_v2()
    cfg = {"name": spec["name"], "version": spec["version"], **copy.deepcopy(spec["quick"])}
    cfg["methods"] = {
        "saliency": {"rule": "abs"},
        "integrated_gradients": {"rule": "abs", "n_steps": 16, "internal_batch_size": 64},
    }
    cfg["references"] = {
        r: cfg["references"][r] for r in ("ref_edge", "ref_centre", "ref_anatomy", "ref_mask")
    }
    cfg["model_metrics"] = {"samples": 2, "metrics": {}}
    cfg["completeness"] = {"method": "integrated_gradients", "bound": 0.05}
    cfg["under_attack"]["methods"] = ["saliency", "ref_edge"]
    cfg["gallery"] = {**cfg["gallery"], "images": 0}
    cfg.update(overrides)
    return cfg


def _ctx(tensors, previous):
    from pathlib import Path

    from fxbench.battery import RunContext

    return RunContext(
        device=torch.device("cpu"),
        seed=0,
        preset="quick",
        work_dir=Path("."),
        previous=previous,
        _tensor_loader=lambda b: dict(tensors),
    )


def test_battery_under_attack_scores_stored_points_only_and_splits_flipped():
    import pandas as pd
    from fxbench.battery import BatteryResult
    from fxbench.explanations import ExplanationBattery

    evalset = make_evalset(8)
    fr = [evalset.ids[i] for i in (1, 3, 5, 7)]
    w = torch.zeros(1, 224, 224)
    w[0, 40:80, 60:90] = 1.0
    model = linear_model(w)
    tensors = {f"adv/linf-4/{fr[0]}": evalset.x[1] * 0.5, f"adv/linf-4/{fr[1]}": evalset.x[3] * 0.9}
    prev = {
        "robustness": BatteryResult(
            samples=pd.DataFrame({"image_id": fr, "robust/linf-4/broken": [True, False, False, False]}),
            metrics=[],
        ),
        "clean": BatteryResult(
            samples=pd.DataFrame(
                {"image_id": fr, "clean/correct": [1.0, 1.0, 0.0, 1.0], "clean/pred": [1, 1, 0, 1]}
            ),
            metrics=[],
        ),
    }
    b = ExplanationBattery()
    cfg, ctx = v2_small_config(), _ctx(tensors, prev)
    cfg["gallery"] = {**cfg["gallery"], "images": 4, "dpi": 50}  # size_px 448 at 50 dpi
    outs = {
        k: b.run_shard(k, model=model, evalset=evalset, config=cfg, ctx=ctx) for k in b.shards(evalset, cfg)
    }
    res = b.finalize(outs, model=model, evalset=evalset, config=cfg, ctx=ctx)
    s = res.samples.set_index("image_id")
    adv = "xai/ref_edge/relevance_mass_accuracy/adv-linf-4"
    assert s[adv].notna().tolist() == [True, True, False, False]  # never the clean image in their place
    assert s.loc[fr[2], f"{adv}/nan_reason"] == "misclassified clean: not attacked"
    assert s.loc[fr[3], f"{adv}/nan_reason"].startswith("no attacked point stored")
    assert s["xai/adv-linf-4/flipped"].tolist()[:2] == [1.0, 0.0]
    ua = res.info["under_attack"]
    assert (ua["scored"], ua["flipped"], ua["not_flipped"], ua["not_scored"]) == (2, 1, 1, 2)
    defs = {m.id: m for m in res.metrics}
    assert defs[f"{adv}/flipped"].where == {"label": 1, "xai/adv-linf-4/flipped": 1.0}
    assert s["xai/detected"].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert "xai/saliency/pointing_game/mask-small" in defs and "xai/saliency/pointing_game/missed" in defs
    # paired difference against the best trivial reference, per image
    best = res.info["best_reference"]["relevance_mass_accuracy"]
    np.testing.assert_allclose(
        s["xai/saliency/relevance_mass_accuracy/vs-best-ref"],
        s["xai/saliency/relevance_mass_accuracy"] - s[f"xai/{best}/relevance_mass_accuracy"],
    )
    # IG on a linear model is exact: completeness error ~0
    assert (s["xai/integrated_gradients/completeness_error"] < 1e-4).all()
    assert "xai-completeness" not in {f.code for f in res.flags}
    # the gallery: every fractured image here (4), references apart from methods, no ref_mask
    assert f"gallery/{fr[0]}/saliency.png" in res.files and f"gallery/{fr[0]}/references/ref_edge.png" in res.files
    assert not any("ref_mask" in k for k in res.files)
    from PIL import Image

    w_adv = Image.open(io.BytesIO(res.files[f"gallery/{fr[0]}/saliency.png"])).size[0]
    w_clean = Image.open(io.BytesIO(res.files[f"gallery/{fr[3]}/saliency.png"])).size[0]
    assert w_adv > 1.8 * w_clean  # clean and attacked side by side where an attacked point exists


def test_gallery_rule_and_panels():
    from fxbench.explanations.gallery import choose_images, panels_png
    from PIL import Image

    ids = [f"IMG{i:07d}" for i in range(10)]
    px = [50, 10, 90, 30, 70, 20, 100, 40, 60, 80]
    # sorted by size: 10..100; 3 images at quantiles 0.17, 0.5, 0.83 -> sizes 20, 60, 90; excluded ids skipped
    assert choose_images(ids, px, 3, exclude=[]) == ["IMG0000005", "IMG0000008", "IMG0000002"]
    assert "IMG0000008" not in choose_images(ids, px, 3, exclude=["IMG0000008"])
    spec = parse_config({"name": "x", "version": 2, **spec_v2()["quick"]})
    img = np.random.default_rng(0).random((224, 224))
    att = np.zeros((224, 224))
    att[100:120, 100:120] = 1.0
    mask = np.zeros((224, 224), bool)
    mask[90:130, 90:130] = True
    panel = {"image": img, "attribution": att, "mask": mask, "title": "clean"}
    data = panels_png([panel, {**panel, "title": "attacked"}], style=spec.gallery, suptitle="t")
    im = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert im.shape[1] >= 2 * 448 and im.shape[0] >= 448
    assert data == panels_png([panel, {**panel, "title": "attacked"}], style=spec.gallery, suptitle="t")


class NanGradient(LinearLayer):
    """z = w . x + b, plus 0 * sqrt(0 * x_0): the same logits, a NaN gradient at pixel 0 (masked gradients)."""

    def forward(self, x):
        z = self.fc(x.flatten(1)) + 0 * torch.sqrt(x.flatten(1)[:, :1] * 0)
        return torch.cat([-z / 2, z / 2], dim=1)


def test_nan_gradients_cannot_lift_a_score():
    # a submitter whose gradients are NaN would, under v1, drop out of the mean (NaN) on those images
    mask = rect(50, 90, 60, 100)[None]
    maps = np.ones((2, 1, 224, 224), dtype=np.float32)
    maps[0, 0, 50:90, 60:100] = 5.0
    maps[1] = maps[0]
    maps[1, 0, 0, 0] = np.nan
    v = score("relevance_mass_accuracy", maps, np.repeat(mask, 2, axis=0))
    assert v[0] > 0.1 and v[1] == 0.0
    from fxbench.explanations import ExplanationBattery
    from fxbench.models import wrap

    w = torch.zeros(1, 224, 224)
    w[0, 40:80, 60:90] = 1.0
    model = wrap(NanGradient(w), channels=1, mean=(0.0,), std=(1.0,))
    evalset = make_evalset(4)
    cfg = v2_small_config(under_attack=None)
    cfg["methods"] = {"saliency": {"rule": "abs"}}
    cfg["completeness"] = None
    b, ctx = ExplanationBattery(), _ctx({}, {})
    outs = {k: b.run_shard(k, model=model, evalset=evalset, config=cfg, ctx=ctx) for k in b.shards(evalset, cfg)}
    res = b.finalize(outs, model=model, evalset=evalset, config=cfg, ctx=ctx)
    assert (res.samples["xai/saliency/relevance_mass_accuracy"] == 0).all()
    assert "xai-nonfinite-attribution" in {f.code for f in res.flags}
    assert res.info["nonfinite_maps"] == {"saliency": 2}
