"""The explanation battery after its split (issue 19): one typed config parsed once, shard keys through
fxbench.battery, attacked inputs as a typed object, the catalogue as a pure function of the config, and the
same numbers whether the battery gets the spec's mapping or the parsed config."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import linear_model, make_evalset
from fxbench.battery import RunContext, ShardOutput, chunk_keys
from fxbench.definition import load_definition
from fxbench.errors import FxbenchError
from fxbench.explanations import ExplanationBattery, XaiConfig, parse_config
from fxbench.explanations import battery as battery_module
from fxbench.explanations.attacked import AttackedInputs, load_attacked
from fxbench.explanations.catalogue import expected_metrics
from fxbench.paths import SPECS_DIR
from fxbench.robustness.images import adv_key


def small_config() -> dict:
    spec = yaml.safe_load((SPECS_DIR / "v1" / "explanations.yaml").read_text())
    cfg = {"name": spec["name"], "version": spec["version"], **copy.deepcopy(spec["quick"])}
    cfg["methods"] = {"saliency": spec["full"]["methods"].get("saliency", cfg["methods"].get("saliency"))}
    cfg["references"] = {r: cfg["references"][r] for r in ("ref_mask", "ref_edge")}
    cfg["model_metrics"] = {"samples": 2, "metrics": {}}
    cfg["under_attack"] = {"attack": "linf-4", "methods": ["saliency", "ref_edge"],
                           "metrics": ["pointing_game", "relevance_mass_accuracy"]}
    cfg["gallery"] = {**cfg["gallery"], "images": 1, "dpi": 30, "size_inches": 1.5}
    cfg["chunk_size"] = 1
    return cfg


def ctx(tensors=None, previous=None) -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=0, preset="quick", work_dir=Path("."),
                      previous=previous or {}, _tensor_loader=lambda battery: dict(tensors or {}))


def test_importable_from_the_package_and_the_module():
    assert battery_module.ExplanationBattery is ExplanationBattery


def test_parse_once_configure_and_pickle():
    for version in ("v1", "v2"):
        raw = load_definition(version).battery_config("explanations", "quick")
        cfg = ExplanationBattery().configure(raw)
        assert isinstance(cfg, XaiConfig) and cfg == parse_config(raw)
        assert parse_config(cfg) is cfg  # a parsed config is passed through, never re-parsed
        assert pickle.loads(pickle.dumps(cfg)) == cfg  # crosses processes (executors) as it is
        ids = [m.id for m in expected_metrics(cfg)]
        assert ids == [m.id for m in ExplanationBattery().expected_metrics(raw)]


def test_shard_keys_come_from_fxbench_battery_and_unknown_keys_are_bugs():
    evalset = make_evalset(6)  # three fractured images
    b, cfg = ExplanationBattery(), parse_config(small_config())
    assert b.shards(evalset, cfg) == chunk_keys(3)
    model = linear_model(torch.ones(1, 224, 224))
    for key in ("chunk-003", "chunk-x", "shard-000"):
        with pytest.raises(FxbenchError, match="explanations: unknown shard"):
            b.run_shard(key, model=model, evalset=evalset, config=cfg, ctx=ctx())


def test_attacked_inputs_are_typed():
    evalset = make_evalset(4)
    raw = small_config()
    cfg = parse_config({**raw, "under_attack": {**raw["under_attack"], "clean_fallback": False}})  # v2's rule
    rows = [1, 3]
    ids = [evalset.ids[i] for i in rows]
    x = evalset.x[rows].float()
    point = (x[0] * 0.5).clone()
    robust = ShardOutput(samples=pd.DataFrame({"image_id": ids, "robust/linf-4/broken": [True, np.nan]}))
    adv, status = load_attacked(ctx({adv_key("linf-4", ids[0]): point}, {"robustness": robust}), ids, x, cfg)
    assert isinstance(adv, AttackedInputs) and adv.attack == "linf-4"
    assert adv.attacked == [True, False] and adv.missing[0] is None and "no attacked point" in adv.missing[1]
    assert torch.equal(adv.x[0], point) and torch.equal(adv.x[1], x[1])
    assert adv.flipped[0] == 1.0 and np.isnan(adv.flipped[1])
    assert status["status"] == "computed" and status["adversarial"] == 1 and status["not_scored"] == 1
    assert list(adv.scored(clean_fallback=False)) == [True, False]
    assert list(adv.scored(clean_fallback=True)) == [True, True]
    assert load_attacked(ctx(), ids, x, cfg) == (None, {"status": "skipped", "reason":
                                                        "the robustness battery stored no 'adv/linf-4/*' images"})


def test_same_numbers_from_the_mapping_and_the_parsed_config():
    evalset = make_evalset(4)
    w = torch.zeros(1, 224, 224)
    w[0, 40:80, 60:90] = 1.0
    model = linear_model(w)
    raw = small_config()
    point = evalset.x[1].float() * 0.9
    tensors = {adv_key("linf-4", evalset.ids[1]): point}

    def run(config):
        b = ExplanationBattery()
        c = ctx(tensors, {"robustness": ShardOutput(samples=pd.DataFrame(
            {"image_id": list(evalset.ids), "robust/linf-4/broken": [False] * len(evalset)}))})
        outs = {k: b.run_shard(k, model=model, evalset=evalset, config=config, ctx=c)
                for k in b.shards(evalset, config)}
        return b.finalize(outs, model=model, evalset=evalset, config=config, ctx=c)

    a, b = run(raw), run(ExplanationBattery().configure(raw))
    pd.testing.assert_frame_equal(a.samples, b.samples)
    assert [m.id for m in a.metrics] == [m.id for m in b.metrics] and a.files == b.files
    assert a.info["under_attack"]["status"] == "computed"
