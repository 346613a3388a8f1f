"""The metric id grammar (fxbench.results.metric_ids): builders and parser agree, and every id the committed
catalogues hold follows it."""

from __future__ import annotations

import json

import pytest
from fxbench.paths import SPECS_DIR
from fxbench.results import metric_ids as ids
from fxbench.results.metric_ids import MetricId, parse, try_parse


def catalogue_entries():
    for version in ("v1", "v2"):
        raw = json.loads((SPECS_DIR / version / "metrics.json").read_text())
        for preset, metrics in raw.items():
            if isinstance(metrics, dict):
                for mid, d in metrics.items():
                    yield version, preset, mid, d


def test_every_catalogue_id_and_column_parses_and_round_trips():
    entries = list(catalogue_entries())
    assert len(entries) > 100  # both versions, both presets
    for version, preset, mid, d in entries:
        p = parse(mid)
        assert str(p) == mid, (version, preset, mid)
        assert str(parse(d["column"])) == d["column"]
        for key in d.get("where") or {}:
            if "/" in key:  # a per-sample column (xai/mask_tercile, xai/adv-linf-4/flipped)
                assert str(parse(key)) == key


def test_catalogue_families():
    seen = {parse(mid).family for _, _, mid, _ in catalogue_entries()}
    assert seen == {"clean", "robust", "xai"}
    v2 = {mid for v, p, mid, _ in catalogue_entries() if v == "v2" and p == "full"}
    assert {parse(m).threat for m in v2 if m.startswith("robust/")} >= {"linf-4", "l2-1.75"}


@pytest.mark.parametrize(("mid", "want"), [
    ("clean/accuracy", MetricId("clean", "accuracy")),
    ("clean/p_fracture", MetricId("clean", "p_fracture")),
    ("robust/linf-4/accuracy", MetricId("robust", "accuracy", threat="linf-4")),
    ("robust/l2-1.75/broken", MetricId("robust", "broken", threat="l2-1.75")),
    ("xai/saliency/pointing_game", MetricId("xai", "pointing_game", method="saliency")),
    ("xai/saliency/pointing_game/hardware", MetricId("xai", "pointing_game", method="saliency", variant="hardware")),
    ("xai/saliency/auc/region-hand", MetricId("xai", "auc", method="saliency", variant="region-hand")),
    ("xai/saliency/auc/vs-best-ref", MetricId("xai", "auc", method="saliency", variant="vs-best-ref")),
    ("xai/gradcam/auc/adv-linf-4", MetricId("xai", "auc", threat="linf-4", method="gradcam", variant="adv-linf-4")),
    ("xai/gradcam/auc/drop-linf-4", MetricId("xai", "auc", threat="linf-4", method="gradcam", variant="drop-linf-4")),
    ("xai/gradcam/auc/adv-linf-4/not_flipped",
     MetricId("xai", "auc", threat="linf-4", method="gradcam", variant="adv-linf-4/not_flipped")),
    ("xai/mask_px", MetricId("xai", "mask_px")),
    ("xai/adv-linf-4/flipped", MetricId("xai", "flipped", threat="linf-4")),
])
def test_parse(mid, want):
    assert parse(mid) == want
    assert str(want) == mid


def test_properties():
    assert parse("xai/saliency/auc").headline
    assert not parse("xai/saliency/auc/hardware").headline
    assert not parse("xai/adv-linf-4/flipped").headline  # a per-image column, not a method's score
    assert not parse("robust/linf-4/accuracy").headline
    assert parse("xai/saliency/auc/adv-linf-4").attack_part == "adv"
    assert parse("xai/saliency/auc/adv-linf-4/flipped").under_attack
    assert parse("xai/saliency/auc/drop-l2-1.75").attack_part == "drop"
    assert not parse("xai/saliency/auc/hardware").under_attack
    assert not parse("robust/linf-4/accuracy").under_attack


@pytest.mark.parametrize("bad", [
    "", "clean", "clean/", "clean/a/b", "robust/linf-4", "robust/linf/accuracy", "robust/linf-x/accuracy",
    "robust/l3-1/accuracy", "xai", "xai/Saliency/auc", "xai/saliency/auc/a/b", "xai/saliency/auc/hardware/x",
    "xai/saliency/auc/nan_reason", "xai/adv-linf-4", "xai/adv-foo/flipped", "other/thing", "xai/a b/auc",
    "clean/accuracy\n", None,
])
def test_parse_refuses(bad):
    with pytest.raises(ValueError):
        parse(bad)
    assert try_parse(bad) is None


def test_builders():
    assert ids.clean_id("auroc") == "clean/auroc"
    assert ids.robust_id("linf-8", "sensitivity") == "robust/linf-8/sensitivity"
    assert ids.xai_id("saliency", "auc") == "xai/saliency/auc"
    assert ids.xai_id("saliency", "auc", variant="mask-small") == "xai/saliency/auc/mask-small"
    assert ids.xai_id("ig", "auc", variant=ids.adv_variant("linf-4")) == "xai/ig/auc/adv-linf-4"
    assert ids.xai_id("ig", "auc", variant=ids.adv_variant("linf-4", "flipped")) == "xai/ig/auc/adv-linf-4/flipped"
    assert ids.xai_id("ig", "auc", variant=ids.drop_variant("l2-1.75")) == "xai/ig/auc/drop-l2-1.75"
    assert ids.xai_image_id("detected") == "xai/detected"
    assert ids.xai_image_id("flipped", threat="linf-4") == "xai/adv-linf-4/flipped"
    assert ids.reason_column("xai/ig/auc") == "xai/ig/auc/nan_reason"
    assert ids.threat_parts("l2-1.75") == ("l2", 1.75)
    assert sorted(["l2-0.5", "linf-8", "linf-1"], key=ids.threat_sort_key) == ["linf-1", "linf-8", "l2-0.5"]


@pytest.mark.parametrize("call", [
    lambda: ids.clean_id("Accuracy"),
    lambda: ids.clean_id("a/b"),
    lambda: ids.robust_id("linf", "accuracy"),
    lambda: ids.xai_id("adv-linf-4", "flipped"),  # a method never starts with adv-
    lambda: ids.xai_id("ig", "auc", variant="hardware/x"),
    lambda: ids.xai_id("ig", "nan_reason"),
    lambda: ids.adv_variant("linf-4", "both"),
])
def test_builders_refuse(call):
    with pytest.raises(ValueError):
        call()


def test_builders_and_parser_round_trip_on_the_battery_catalogue():
    """What the explanation battery defines (its own builders) parses back to the same parts."""
    from fxbench.definition import load_definition
    from fxbench.explanations.catalogue import expected_metrics

    for version in ("v1", "v2"):
        for preset in ("full", "quick"):
            for m in expected_metrics(load_definition(version).battery_config("explanations", preset)):
                p = parse(m.id)
                assert p.family == "xai" and p.method is not None and str(p) == m.id
                assert parse(m.column).method == p.method and parse(m.column).metric == p.metric


def test_the_per_norm_column_round_trips_and_is_the_only_one():
    from fxbench.results.metric_ids import parse, robust_norm_column

    col = robust_norm_column("linf", "min_eps_broken")
    assert col == "robust/linf/min_eps_broken" and str(parse(col)) == col and parse(col).threat is None
    with pytest.raises(ValueError):
        robust_norm_column("linf", "accuracy")
