"""The explanation battery end to end: columns, metric definitions, unsupported methods, the under-attack
variants, subgroups, resume purity, the gallery, spec errors, and frames on EXIF-rotated images."""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import linear_model, make_evalset, tiny_timm
from fxbench.battery import DatasetInfo, EvalSet, RunContext
from fxbench.errors import EvaluationBug, FxbenchError
from fxbench.explanations import ExplanationBattery, parse_config
from fxbench.explanations.gallery import overlay_png
from fxbench.models import wrap
from fxbench.paths import SPECS_DIR
from fxbench.results.metrics import compute_metrics
from PIL import Image

ID = re.compile(r"^[a-z0-9_./+-]+$")



def quick_config(**overrides) -> dict:
    spec = yaml.safe_load((SPECS_DIR / "v1" / "explanations.yaml").read_text())
    cfg = {"name": spec["name"], "version": spec["version"], **copy.deepcopy(spec["quick"])}
    cfg.update(overrides)
    return cfg


def full_methods() -> dict:
    spec = yaml.safe_load((SPECS_DIR / "v1" / "explanations.yaml").read_text())
    return copy.deepcopy(spec["full"]["methods"])


def small_config(
    methods=("saliency",), refs=("ref_mask", "ref_edge"), model_metrics=None, **overrides
) -> dict:
    base = quick_config()
    base["methods"] = {**full_methods(), **base["methods"]}
    cfg = quick_config(
        methods={m: base["methods"][m] for m in methods},
        references={r: base["references"][r] for r in refs},
        model_metrics={"samples": 2, "metrics": model_metrics or {}},
        under_attack={
            "attack": "linf-4",
            "methods": [*methods, *refs][:3],
            "metrics": ["pointing_game", "relevance_mass_accuracy"],
        },
        subgroups={"hardware": True, "regions": ["hand", "leg"], "metrics": ["relevance_mass_accuracy"]},
        gallery={**base["gallery"], "images": 1, "dpi": 30, "size_inches": 1.5},
    )
    cfg.update(overrides)
    return cfg


def ctx_with(tensors: dict | None = None, previous=None) -> RunContext:
    return RunContext(
        device=torch.device("cpu"),
        seed=0,
        preset="quick",
        work_dir=Path("."),
        previous=previous or {},
        _tensor_loader=lambda battery: dict(tensors or {}),
    )


def run(model, evalset, config, ctx):
    b = ExplanationBattery()
    outs = {
        k: b.run_shard(k, model=model, evalset=evalset, config=config, ctx=ctx)
        for k in b.shards(evalset, config)
    }
    return outs, b.finalize(outs, model=model, evalset=evalset, config=config, ctx=ctx)


def rect_weights() -> torch.Tensor:
    w = torch.zeros(1, 224, 224)
    w[0, 40:80, 60:90] = 1.0
    return w


def test_linear_model_through_the_battery():
    """make_evalset's first fractured image (i=1) has its mask at rows 50:90, cols 67:97."""
    evalset = make_evalset(4)
    outs, result = run(linear_model(rect_weights()), evalset, small_config(chunk_size=1), ctx_with())
    s = result.samples.set_index("image_id")
    assert list(s.index) == [evalset.ids[1], evalset.ids[3]]  # fractured images only, one row each
    m = evalset.masks[1, 0].numpy()
    inside = m[40:80, 60:90].sum()
    assert s.loc[evalset.ids[1], "xai/saliency/relevance_mass_accuracy"] == pytest.approx(inside / 1200)
    assert s.loc[evalset.ids[1], "xai/saliency/pointing_game"] == 1.0
    for col in [c for c in s if c.startswith("xai/ref_mask/") and not c.endswith("nan_reason")]:
        if "top_k" not in col:
            assert (s[col] > 1 - 1e-6).all(), col
    assert len(outs) == 2  # chunk_size 1: one shard per fractured image


def test_metric_definitions_are_complete_and_computable():
    evalset = make_evalset(8)
    _, result = run(linear_model(rect_weights()), evalset, small_config(), ctx_with())
    defs = {m.id: m for m in result.metrics}
    for m in result.metrics:
        assert ID.match(m.id) and m.id.startswith("xai/") and m.column in result.samples
        assert m.where.get("label") == 1 and isinstance(m.higher_is_better, bool)
    assert defs["xai/saliency/relevance_mass_accuracy/hardware"].where == {"label": 1, "hardware": True}
    assert defs["xai/saliency/relevance_mass_accuracy/no_hardware"].where == {"label": 1, "hardware": False}
    assert defs["xai/ref_edge/relevance_mass_accuracy/region-leg"].where == {"label": 1, "leg": True}
    assert "xai/saliency/pointing_game/hardware" not in defs  # subgroups only for the spec's metrics
    merged = evalset.meta.merge(result.samples, on="image_id", how="left")  # what the runner does
    values = compute_metrics(merged, result.metrics, n_resamples=20)
    assert values["xai/ref_mask/relevance_mass_accuracy"].value == pytest.approx(1.0)
    assert values["xai/ref_mask/relevance_mass_accuracy"].n == 4


def test_unsupported_methods_are_reported_not_crashed():
    class Reuse(torch.nn.Module):  # one ReLU module used twice: Captum's DeepLift refuses it
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)
            self.act, self.fc = torch.nn.ReLU(), torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.act(self.c2(self.act(self.c1(x)))).mean((2, 3)))

    torch.manual_seed(0)
    model = wrap(Reuse())  # and no gradcam_layer
    cfg = small_config(methods=("saliency", "deeplift", "gradcam"), refs=("ref_mask",))
    _, result = run(model, make_evalset(4), cfg, ctx_with())
    assert "used more than once" in result.info["unsupported"]["deeplift"]
    assert result.info["unsupported"]["gradcam"] == "no convolutional layer declared or found"
    assert {f.code for f in result.flags} >= {"xai-method-unsupported"}
    s = result.samples
    assert s["xai/deeplift/auc"].isna().all()
    assert s["xai/deeplift/auc/nan_reason"].str.startswith("unsupported: ").all()
    assert s["xai/saliency/auc"].notna().all()
    assert "xai/deeplift/auc" in {m.id for m in result.metrics}  # reported (as undefined), not dropped
    assert not any("/deeplift/" in f or "/gradcam/" in f for f in result.files)


def test_under_attack_scores_and_drop():
    evalset = make_evalset(4)
    fr = [evalset.ids[1], evalset.ids[3]]
    adv = (evalset.x[1] * 0.5).clone()  # a visibly different image for the first fractured one only
    cfg = small_config(refs=("ref_edge", "ref_mask"))
    _, result = run(
        linear_model(rect_weights()), evalset, cfg, ctx_with({f"adv/linf-4/{fr[0]}": adv, "other": adv})
    )
    s = result.samples.set_index("image_id")
    assert s["xai/adv-linf-4/adversarial"].tolist() == [True, False]
    rma = "xai/ref_edge/relevance_mass_accuracy"
    assert s.loc[fr[1], f"{rma}/drop-linf-4"] == 0.0  # robust image: its clean image, so no drop
    np.testing.assert_allclose(s[f"{rma}/drop-linf-4"], s[rma] - s[f"{rma}/adv-linf-4"])
    # the linear model's saliency does not depend on the image: no drop anywhere
    assert (s["xai/saliency/relevance_mass_accuracy/drop-linf-4"] == 0).all()
    defs = {m.id: m for m in result.metrics}
    assert defs[f"{rma}/adv-linf-4"].higher_is_better and not defs[f"{rma}/drop-linf-4"].higher_is_better
    assert (
        result.info["under_attack"]["adversarial"] == 1 and result.info["under_attack"]["clean_fallback"] == 1
    )


def test_under_attack_skipped_without_robustness_and_bad_tensors_fail_loudly():
    evalset = make_evalset(4)
    _, result = run(linear_model(rect_weights()), evalset, small_config(), ctx_with({}))
    assert "xai-under-attack-skipped" in {f.code for f in result.flags}
    assert not any("linf-4" in m.id for m in result.metrics)
    bad = {f"adv/linf-4/{evalset.ids[1]}": torch.full((1, 224, 224), 2.0)}
    with pytest.raises(EvaluationBug, match="outside"):
        run(linear_model(rect_weights()), evalset, small_config(), ctx_with(bad))


def test_shards_are_pure_and_resume_to_identical_numbers(tiny_model):
    evalset = make_evalset(4)
    cfg = small_config(
        methods=("smoothgrad",),
        refs=("ref_random",),
        model_metrics={
            "faithfulness_correlation": {"methods": ["smoothgrad"], "nr_runs": 3, "subset_size": 500}
        },
    )
    cfg["methods"]["smoothgrad"] = {
        **cfg["methods"]["smoothgrad"],
        "nt_samples": 2,
        "nt_samples_batch_size": 2,
    }
    b = ExplanationBattery()
    key = b.shards(evalset, cfg)[0]
    a = b.run_shard(key, model=tiny_model, evalset=evalset, config=cfg, ctx=ctx_with())
    torch.manual_seed(123)
    np.random.seed(123)  # a different global state must not matter
    c = b.run_shard(key, model=tiny_model, evalset=evalset, config=cfg, ctx=ctx_with())
    pd.testing.assert_frame_equal(a.samples, c.samples)
    assert a.samples["xai/smoothgrad/faithfulness_correlation"].notna().sum() == 2


def test_gallery_is_deterministic_and_listed():
    evalset = make_evalset(4)
    cfg = small_config()
    _, r1 = run(linear_model(rect_weights()), evalset, cfg, ctx_with())
    _, r2 = run(linear_model(rect_weights()), evalset, cfg, ctx_with())
    first = min(evalset.ids[1], evalset.ids[3])
    assert (
        sorted(r1.files)
        == r1.info["gallery"]
        == [f"gallery/{first}/{m}.png" for m in ("ref_edge", "ref_mask", "saliency")]
    )
    assert r1.files == r2.files  # byte-identical
    png = Image.open(io.BytesIO(r1.files[f"gallery/{first}/saliency.png"]))
    assert png.format == "PNG" and png.size == (45, 45) and "Software" not in png.info


def test_overlay_shows_the_heatmap():
    style = parse_config(small_config()).gallery
    img = np.zeros((224, 224))
    heat = np.zeros((224, 224))
    heat[100:120, 100:120] = 1.0
    plain = overlay_png(img, np.zeros_like(heat), heat > 0, title="t", style=style)
    hot = overlay_png(img, heat, heat > 0, title="t", style=style)
    assert plain != hot


@pytest.mark.parametrize(
    "path,value,match",
    [
        (("methods", "salency"), {"rule": "abs"}, r"methods\.salency.*Did you mean 'saliency'"),
        (("methods", "saliency"), {"rule": "sign"}, r"methods\.saliency\.rule"),
        (("methods", "occlusion"), {"rule": "positive", "window": 8}, r"methods\.occlusion\.stride"),
        (
            ("localisation", "pixel_flipping"),
            {"features_in_step": 3136},
            r"localisation\.pixel_flipping: calls the model",
        ),
        (("model_metrics", "metrics", "random_logit"), {"methods": ["ref_edge"]}, r"reference maps cannot"),
        (("subgroups", "regions"), ["knee"], r"subgroups\.regions"),
    ],
)
def test_spec_errors_name_the_field(path, value, match):
    cfg = quick_config()
    node = cfg
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(FxbenchError, match=match):
        parse_config(cfg)


def test_attribution_and_mask_share_the_frame_on_exif_rotated_images():
    """An image stored rotated, with EXIF orientation 6 and a polygon drawn in the displayed frame: after the
    data module's geometry, a model that looks at bright pixels must point inside the mask; the same pixels
    without EXIF applied must not (so the check can fail)."""
    g = pytest.importorskip("fxbench.data.geometry")
    shown = np.zeros((120, 200), dtype=np.uint8)  # displayed: 200 wide, 120 high
    shown[20:40, 150:180] = 255  # the bright "bone" in the top right corner
    stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90)  # what orientation 6 undoes
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="PNG", exif=exif.tobytes())
    polygon = [150, 20, 180, 20, 180, 40, 150, 40]  # COCO x, y in the displayed frame
    o = g.open_oriented(buf.getvalue())
    assert o.exif_orientation == 6 and o.size == (200, 120)
    x_ok = torch.from_numpy(g.canonical_image(o.image).astype(np.float32) / 255)[None, None]
    x_raw = torch.from_numpy(g.canonical_image(stored).astype(np.float32) / 255)[None, None]
    mask = torch.from_numpy(g.canonical_mask([polygon], width=200, height=120))[None, None]

    class Bright(torch.nn.Module):  # fracture logit = sum of x^2: saliency 2x, largest on the bright pixels
        def forward(self, x):
            z = (x**2).flatten(1).sum(1, keepdim=True)
            return torch.cat([-z, z], dim=1)

    x = torch.cat([x_ok, x_raw])
    ids = ["IMG0000001", "IMG0000002"]
    evalset = EvalSet(
        ids=ids,
        x=x,
        y=torch.ones(2, dtype=torch.int64),
        masks=torch.cat([mask, mask]),
        meta=pd.DataFrame(
            {
                "image_id": ids,
                "label": [1, 1],
                "hardware": False,
                "hand": True,
                "leg": False,
                "hip": False,
                "shoulder": False,
                "mixed": False,
            }
        ),
        dataset=DatasetInfo("synthetic", "0" * 64, "eval", 2, False),
    )
    _, result = run(wrap(Bright()), evalset, small_config(refs=("ref_mask",)), ctx_with())
    s = result.samples.set_index("image_id")
    assert s.loc["IMG0000001", "xai/saliency/pointing_game"] == 1.0
    assert s.loc["IMG0000001", "xai/saliency/relevance_mass_accuracy"] > 0.7
    assert s.loc["IMG0000002", "xai/saliency/pointing_game"] == 0.0
    assert s.loc["IMG0000002", "xai/saliency/relevance_mass_accuracy"] < 0.05


def test_tiny_timm_every_method_runs(tiny_model):
    """Every method of the spec on timm's test_resnet, Grad-CAM on its last stage: all supported."""
    net = tiny_timm()
    model = wrap(net, channels=1, mean=(0.5,), std=(0.25,), gradcam_layer=net.layer4)
    cfg = quick_config(
        model_metrics={"samples": 1, "metrics": {}},
        under_attack=None,
        gallery={**quick_config()["gallery"], "images": 0},
        methods=full_methods(),
    )
    cfg["methods"]["occlusion"] = {**cfg["methods"]["occlusion"], "window": 112, "stride": 112}
    cfg["methods"]["integrated_gradients"] = {**cfg["methods"]["integrated_gradients"], "n_steps": 2}
    cfg["methods"]["smoothgrad"] = {
        **cfg["methods"]["smoothgrad"],
        "nt_samples": 2,
        "nt_samples_batch_size": 2,
    }
    _, result = run(model, make_evalset(2), cfg, ctx_with())
    assert result.info["unsupported"] == {}
    assert len(result.samples) == 1 and result.files == {}
    for m in cfg["methods"]:
        assert f"xai/{m}/auc" in result.samples


@pytest.mark.slow
def test_through_the_runner_with_robustness_images(tmp_path, monkeypatch):
    """fxbench run with the explanation battery: shards go through the store (parquet + JSON), adversarial
    images come from the shard store, and the result file validates."""
    from fxbench.definition import BenchmarkDefinition
    from fxbench.results.resultfile import read_result
    from fxbench.run import run_submission
    from submission_kit import make_submission

    original = BenchmarkDefinition.battery_config

    def battery_config(self, battery, preset):
        if battery != "explanations":
            return original(self, battery, preset)
        return small_config(methods=("saliency", "gradcam"), refs=("ref_mask",), chunk_size=1)

    class FakeRobustness:  # stores an adversarial image for the first fractured image only
        name = "robustness"

        def configure(self, config):
            return config

        def shards(self, evalset, config):
            return ["chunk-000"]

        def run_shard(self, key, *, model, evalset, config, ctx):
            from fxbench.battery import ShardOutput

            i = int(evalset.y.nonzero()[0])
            adv = (1 - evalset.x[i]).contiguous()
            return ShardOutput(
                samples=pd.DataFrame({"image_id": evalset.ids}), tensors={f"adv/linf-4/{evalset.ids[i]}": adv}
            )

        def finalize(self, outputs, **kw):
            from fxbench.battery import BatteryResult

            return BatteryResult(samples=outputs["chunk-000"].samples, metrics=[])

    import fxbench.battery as battery_module

    monkeypatch.setattr(BenchmarkDefinition, "battery_config", battery_config)
    monkeypatch.setitem(battery_module.BATTERIES._items, "robustness", FakeRobustness)
    yaml_path = make_submission(tmp_path / "sub")
    res = run_submission(
        yaml_path,
        out=tmp_path / "out",
        preset="quick",
        device="cpu",
        limit=4,
        batteries=["robustness", "explanations"],
    )
    result = read_result(res.out_dir)
    m = result["metrics"]
    assert m["xai/ref_mask/relevance_mass_accuracy"]["value"] == pytest.approx(1.0)
    assert m["xai/ref_mask/relevance_mass_accuracy"]["n"] == 2
    assert "xai/saliency/pointing_game/adv-linf-4" in m
    assert result["components"]["explanations"]["under_attack"]["adversarial"] == 1
    assert result["files"]["gallery"] and all((res.out_dir / p).is_file() for p in result["files"]["gallery"])
    s = pd.read_parquet(res.out_dir / "samples.parquet")
    assert s.loc[s.label == 0, "xai/saliency/auc"].isna().all()
