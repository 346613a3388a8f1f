"""The run summary (issue 24): it leads with the two questions, each read against its trivial reference, keeps
the reference maps apart from the methods, and warns in plain words about a constant or at-chance model.
Tested on committed results: the constant reference, a robust baseline and a standard-trained one."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from fxbench.cli.run import print_summary, summary_blocks
from fxbench.results.summary import primary_metric, summarise, verdict
from rich.console import Console

V2 = Path(__file__).resolve().parents[1] / "leaderboard" / "results" / "v2"
EVAL = (801, 143)


def load(sid: str) -> dict:
    return json.loads((V2 / f"{sid}.json").read_text())


def text_of(result: dict) -> str:
    console = Console(record=True, width=200, color_system=None)
    run = SimpleNamespace(result=result, shards_run=1, shards_resumed=0, out_dir=Path("runs") / "x")
    print_summary(run, console)
    return console.export_text()


def test_the_constant_reference_is_called_what_it_is():
    r = load("fxb-reference-no-fracture")
    s = summarise(r, eval_counts=EVAL)
    # question 1 is robust *balanced* accuracy (v2 ranks by it), exactly the constant classifier's 0.5
    assert s.robust.score.id == "robust/linf-4/balanced_accuracy"
    assert s.robust.score.value == 0.5 and s.robust.verdict == "at"
    assert s.clean.verdict == "at"
    # its maps are all zero: every method loses to the best trivial map, by exactly that map's score
    edge = r["metrics"]["xai/ref_edge/relevance_mass_accuracy"]["value"]
    assert s.best_reference == "ref_edge" and s.methods
    for m in s.methods:
        assert m.verdict == "below" and m.score.value == 0.0
        assert m.difference.value == pytest.approx(-edge, abs=1e-12)
    # the warning says it plainly, and that the explanation scores mean nothing
    (w,) = s.warnings
    assert "answers 'no fracture' for every image" in w and "clean sensitivity 0.000" in w
    assert "explanation scores mean nothing" in w
    text = text_of(r)
    assert "warning: this model answers 'no fracture'" in text
    assert "flag zero-gradients" in text  # the flag it already had stays


def test_a_robust_baseline_leads_with_the_two_questions_against_their_references():
    r = load("fxb-resnet10t-pgdat-v2")
    m = r["metrics"]
    s = summarise(r, eval_counts=EVAL)
    rb = m["robust/linf-4/balanced_accuracy"]
    assert (s.robust.score.value, s.robust.score.ci_low, s.robust.score.ci_high) == \
        (rb["value"], rb["ci_low"], rb["ci_high"])
    assert s.robust.difference.value == pytest.approx(rb["value"] - 0.5)
    assert s.robust.difference.ci_low == pytest.approx(rb["ci_low"] - 0.5) and s.robust.verdict == "above"
    assert s.warnings == []

    # question 2: each method's relevance mass minus the best trivial map, per image, with the result's CI
    assert s.primary_metric == "relevance_mass_accuracy"
    assert [x.method for x in s.methods] == r["components"]["explanations"]["methods"]
    assert not any(x.method.startswith("ref_") for x in s.methods), "reference maps are listed apart"
    samples = pd.read_parquet(V2 / "fxb-resnet10t-pgdat-v2.parquet")
    edge = samples["xai/ref_edge/relevance_mass_accuracy"]
    for line in s.methods:
        mid = f"xai/{line.method}/relevance_mass_accuracy/vs-best-ref"
        assert (line.difference.value, line.difference.ci_low, line.difference.ci_high) == \
            (m[mid]["value"], m[mid]["ci_low"], m[mid]["ci_high"])
        # known answer: the best trivial map for relevance mass is the edge map on every image, so the paired
        # mean difference is the method's mean minus the edge map's mean over the same images
        own = samples[f"xai/{line.method}/relevance_mass_accuracy"]
        ok = own.notna() & edge.notna()
        assert line.difference.value == pytest.approx((own[ok] - edge[ok]).mean(), abs=1e-12)
        assert line.verdict == verdict(line.difference.ci_low, line.difference.ci_high)
    by = {x.method: x.verdict for x in s.methods}
    assert by["input_x_gradient"] == "above" and by["gradcam"] == "below" and by["saliency"] == "undecided"

    # reference maps: apart, the best trivial one named, the mask last as the ceiling (not a method)
    assert [x.label for x in s.references][-1] == "ref_mask"
    assert s.references[0].label == "ref_edge"

    blocks = summary_blocks(s)
    assert blocks[0][0].startswith("1. Does it still find the fracture under attack?")
    assert blocks[0][1][0][0] == "robust balanced accuracy, L-inf 4/255"
    assert "+0.112 [+0.070, +0.154], above" in blocks[0][1][0][3]
    assert blocks[1][0].startswith("2. Does it look at the fracture?") and "ref_edge = 0.009" in blocks[1][0]
    assert blocks[-1][0].startswith("Reference maps")
    text = text_of(r)
    assert text.index("1. Does it still") < text.index("2. Does it look") < text.index("in detail") \
        < text.index("Reference maps")
    # v1's robust accuracy is a detail, read against what a constant answer scores, never the headline
    assert "robust accuracy, L-inf 4/255" in text and "always 'no fracture' scores 0.821" in text


def test_a_model_an_attack_breaks_is_told_that_the_constant_model_ranks_above_it():
    s = summarise(load("fxb-resnet10t-erm-v2"), eval_counts=EVAL)
    assert s.robust.verdict == "below"
    assert any("is 0.000" in w and "constant classifier (0.500) ranks above" in w for w in s.warnings)
    assert all(x.verdict in ("above", "undecided") for x in s.methods)


def embedded_like(r: dict, value: float, lo: float, hi: float) -> dict:
    """A result as the embedded subset gives it (96 images, 48 fractured) with the given clean balanced
    accuracy, e.g. the README baseline's first run: 0.542 [0.448, 0.635]."""
    r = copy.deepcopy(r)
    r["benchmark"]["dataset"] |= {"n": 96, "n_fracture": 48, "leaderboard_eligible": False,
                                  "name": "fracatlas-v1-embedded"}
    r["metrics"]["clean/balanced_accuracy"] |= {"value": value, "ci_low": lo, "ci_high": hi, "n": 96}
    return r


def test_an_at_chance_first_run_is_warned_and_told_what_96_images_can_show():
    s = summarise(embedded_like(load("fxb-resnet10t-pgdat"), 0.542, 0.448, 0.635), eval_counts=EVAL)
    assert s.clean.verdict == "undecided"
    assert any("cannot be told from chance (0.500) at n = 96" in w for w in s.warnings)
    (note,) = [n for n in s.notes if n.startswith("96 images")]
    half = (0.635 - 0.448) / 2
    # balanced accuracy's standard error goes as sqrt(1/n_fracture + 1/n_normal): 48/48 here, 143/658 there
    scaled = half * math.sqrt((1 / 143 + 1 / 658) / (1 / 48 + 1 / 48))
    assert f"+-{half:.2f}" in note and f"above about {0.5 + half:.2f}" in note and f"+-{scaled:.2f}" in note
    assert f"{scaled:.2f}" == "0.04"  # what the committed 801-image results show: e.g. 0.696 [0.654, 0.737]
    # a run that is clearly above chance on 96 images gets the note but no warning
    ok = summarise(embedded_like(load("fxb-resnet10t-pgdat"), 0.635, 0.542, 0.729), eval_counts=EVAL)
    assert ok.clean.verdict == "above" and not any("chance" in w for w in ok.warnings)


def test_the_primary_localisation_metric_is_read_from_the_results_own_definition():
    r = load("fxb-resnet10t-pgdat-v2")
    assert primary_metric(r) == "relevance_mass_accuracy"  # v2: not declared, relevance mass
    v3 = copy.deepcopy(r)
    v3["benchmark"]["config"]["batteries"]["explanations"]["primary"] = "pointing_game"
    s = summarise(v3)
    assert s.primary_metric == "pointing_game" and s.best_reference == "ref_centre"
    line = next(x for x in s.methods if x.method == "saliency")
    assert line.difference.value == r["metrics"]["xai/saliency/pointing_game/vs-best-ref"]["value"]
    v3["benchmark"]["config"]["batteries"]["explanations"]["primary"] = "no_such_metric"
    assert primary_metric(v3) == "relevance_mass_accuracy"


def test_small_n_prints_no_ci_and_v1_results_fall_back_to_their_headline():
    r = load("fxb-resnet10t-pgdat-v2")
    for mid in r["metrics"]:
        r["metrics"][mid]["n"] = 8
    s = summarise(r)
    assert s.robust.verdict == "no-ci" and all(x.verdict == "no-ci" for x in s.methods)
    v1 = json.loads((V2.parent / "v1" / "fxb-resnet10t-pgdat.json").read_text())
    s1 = summarise(v1)
    assert s1.robust is not None and s1.robust.score.value is not None
