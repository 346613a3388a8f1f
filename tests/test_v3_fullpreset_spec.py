"""fxbench-AA v3's full preset: what it asks for, what it costs, and that v2 specs still mean what they did."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import yaml
from fxbench.definition import load_definition
from fxbench.errors import FxbenchError
from fxbench.paths import SPECS_DIR
from fxbench.robustness import RobustnessBattery
from fxbench.robustness.attacks import ATTACKS
from fxbench.robustness.config import checks_here, parse_config, strength
from fxbench.robustness.floor import bounds, floor_seconds

RATES = {"fwd_s_per_image": 1.0, "fwd_bwd_s_per_image": 3.0}  # a forward + backward ~ 3 forwards


def spec(version: str, preset: str) -> dict:
    raw = yaml.safe_load((SPECS_DIR / version / "robustness.yaml").read_text())
    return {"name": raw["name"], "version": raw["version"], **copy.deepcopy(raw[preset])}


def test_v3_full_runs_autoattack_at_the_headline_and_l2_and_labels_the_other_points_white_box():
    cfg = parse_config(spec("v3", "full"), registry=ATTACKS)
    by_budget = {b.id: strength(cfg, b, ATTACKS) for b in cfg.budgets}
    assert by_budget == {"linf-1": "white-box", "linf-2": "white-box", "linf-4": "autoattack",
                         "linf-8": "white-box", "l2-1.75": "autoattack"}
    square = {a.name: a.options for a in cfg.attacks}["square"]
    assert square["n_queries"] == 5000  # AutoAttack's Square where it runs
    assert [a.name for a in cfg.attacks_for(cfg.budget("linf-2"))] == ["apgd-ce", "apgd-margin"]
    assert cfg.shard_by == "norm" and cfg.chunk_size >= 801 and cfg.batch_size >= 801  # one stream per split
    assert cfg.constant_model == "analytic"


def test_v3_full_costs_about_half_of_v2_per_point_that_stays_robust():
    """Priced by the floor code (the passes an image robust everywhere needs), the numbers in the spec's comment."""
    v2 = parse_config(spec("v2", "full"), registry=ATTACKS)
    v3 = parse_config(spec("v3", "full"), registry=ATTACKS)
    per_point = {}
    for name, cfg in (("v2", v2), ("v3", v3)):
        attacks = replace(cfg, checks=None)  # the checks' size is fixed per chunk, not per point
        one, two = bounds(attacks, 1000)["upper"], bounds(attacks, 2000)["upper"]  # minus the clean pass
        per_point[name] = (floor_seconds(two, RATES) - floor_seconds(one, RATES)) / 1000
    # Square 5,001 queries, FAB 100 gradient steps + 101 forwards once per norm, APGD 101 steps per attack
    fab, apgd, clean = 100 * 3 + 101, 2 * 101 * 3, 1
    assert per_point["v2"] == pytest.approx(5 * 5001 + 2 * fab + 5 * apgd + clean)
    assert per_point["v3"] == pytest.approx(2 * 5001 + 2 * fab + 5 * apgd + 2 * clean)  # a clean pass per norm
    assert 0.47 < per_point["v3"] / per_point["v2"] < 0.49


def test_v2_configs_parse_to_the_old_behaviour():
    for preset in ("quick", "full"):
        cfg = parse_config(spec("v2", preset), registry=ATTACKS)
        assert cfg.shard_by == "chunk" and cfg.attacks_at == () and cfg.search_dtype == ()
        assert cfg.constant_model == "attack" and cfg.search_dtype_for("cuda") == "float32"
        assert all(cfg.attacks_for(b) == cfg.attacks for b in cfg.budgets)
        assert checks_here(cfg, None) is cfg.checks
    d = load_definition("v2")
    assert d.config_hash("full") == load_definition("v2").config_hash("full")  # unchanged by v3's keys


@pytest.mark.parametrize("key, value, match", [
    ("shard_by", "budget", "shard_by"),
    ("attacks_at", {"linf-3": ["apgd-ce"]}, "attacks_at"),
    ("attacks_at", {"linf-4": ["pgd"]}, "attacks_at.linf-4"),
    ("attacks_at", {"linf-4": []}, "attacks_at.linf-4"),
    ("search_dtype", {"cuda": "float16"}, "search_dtype"),
    ("search_dtype", {"cuda": "bfloat16"}, "search_margin_rtol"),
    ("constant_model", "skip", "constant_model"),
])
def test_bad_v3_keys_are_refused_with_the_key_named(key, value, match):
    cfg = spec("v3", "full")
    if key == "search_dtype":  # the reduced-precision search's tolerance is what the bfloat16 case checks
        cfg.pop("search_margin_rtol", None)
    cfg[key] = value
    with pytest.raises(FxbenchError, match=match):
        parse_config(cfg, registry=ATTACKS)


def test_the_checks_run_where_their_budget_runs():
    cfg = parse_config(spec("v3", "full"), registry=ATTACKS)
    linf, l2 = cfg.by_norm("linf"), cfg.by_norm("l2")
    assert checks_here(cfg, l2) is None  # nothing of the checks depends on L2
    here = checks_here(cfg, linf)
    assert (here.fd_points, here.unbounded_points, here.transfer_points) == (
        cfg.checks.fd_points, cfg.checks.unbounded_points, cfg.checks.transfer_points)


def test_v3_shards_are_one_per_chunk_and_norm():
    from conftest import make_evalset

    b = RobustnessBattery()
    ev = make_evalset(n=5)
    assert b.shards(ev, b.configure(spec("v3", "full"))) == ["chunk-000-linf", "chunk-000-l2"]
    assert b.shards(ev, b.configure({**spec("v3", "quick"), "chunk_size": 3})) == ["chunk-000-linf",
                                                                                   "chunk-001-linf"]
    assert b.shards(ev, b.configure({**spec("v2", "quick"), "chunk_size": 3})) == ["chunk-000", "chunk-001"]
    with pytest.raises(FxbenchError, match="unknown shard"):
        b.run_shard("chunk-000-l3", model=None, evalset=ev, config=b.configure(spec("v3", "full")), ctx=None)
