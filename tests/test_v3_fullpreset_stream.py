"""v3's passes issued as few, large calls: one stream per attack and budget over the whole split, shards per norm
(independent, so any order gives the same numbers), and a constant model answered analytically."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from conftest import LinearPixels, linear_model
from fxbench.models import wrap
from fxbench.paths import SPECS_DIR
from fxbench.robustness import RobustnessBattery
from fxbench.robustness.config import Budget
from fxbench.robustness.floor import required_calls
from test_robustness import ctx, run
from test_robustness_checks import Constant, patch_case

STEPS = {"apgd-ce": ("n_iter", 5), "apgd-margin": ("n_iter", 5), "fab": ("n_iter", 2), "square": ("n_queries", 20)}
ATTACK_PHASES = ("apgd-ce", "apgd-margin", "fab", "square")


def v3_config(preset: str = "full", **overrides) -> dict:
    """The v3 spec with few steps (cheap on a CPU) and no transfer surrogate; everything else as specified."""
    raw = yaml.safe_load((SPECS_DIR / "v3" / "robustness.yaml").read_text())
    cfg = {"name": raw["name"], "version": raw["version"], **copy.deepcopy(raw[preset])}
    for a in cfg["attacks"]:
        a[STEPS[a["name"]][0]] = STEPS[a["name"]][1]
    cfg["checks"]["transfer"]["points"] = 0
    cfg.pop("search_dtype", None)
    cfg.update(overrides)
    return cfg


# shifts (1/255): robust at linf-1 only / at linf-1, 2 / at 1, 2, 4 / everywhere (margin 100 * shift; the worst
# L-inf change at eps lowers it by 100 * eps); every shift <= 0.175 breaks at L2 = 1.75 (gain 10 * eps)
SHIFTS = [1.5, 3.0, 6.0, 12.0]


def case(n_per_shift: int = 3):
    ys = [i % 2 for i in range(n_per_shift * len(SHIFTS))]
    w, ev = patch_case(ys, shift=0.0)
    for i in range(len(ys)):
        s = SHIFTS[i // n_per_shift] / 255
        ev.x[i, 0, 100:110, 100:110] = 0.5 + (s if ys[i] else -s)
    return linear_model(w, -50.0), ev


def expected_correct(budget: str, shift: float) -> float:
    if budget == "l2-1.75":
        return 0.0 if shift / 255 <= 0.175 else 1.0
    return 1.0 if shift > float(budget.split("-")[1]) else 0.0


def attack_calls(info: dict) -> dict[str, int]:
    return {p: c["calls"] for p, c in info["calls"]["by_attack"].items()}


def test_one_call_per_step_or_query_over_the_whole_split_where_chunks_pay_once_per_chunk(tmp_path):
    model, ev = case()
    v3, _ = run(model, ev, v3_config(), tmp_path / "v3")
    required = required_calls(RobustnessBattery().configure(v3_config()), v3.info["steps"])
    assert v3.info["calls"]["by_attack"].keys() == set(ATTACK_PHASES)
    for phase in ("apgd-ce", "apgd-margin", "fab"):
        assert attack_calls(v3.info)[phase] == required[phase]  # exactly the stream's iterations
    # Square: its queries, plus the one forward pass that decides its successes
    assert attack_calls(v3.info)["square"] == required["square"] + 1
    # The same spec cut into 4 chunks of 3 images (v2's layout): every stream is paid once per chunk that still
    # has points for it (APGD at linf-1: all 4 chunks; FAB and Square at linf-4: the 2 robust chunks).
    chunked, _ = run(model, ev, v3_config(chunk_size=3, batch_size=3, shard_by="chunk"), tmp_path / "v2")
    one, four = attack_calls(v3.info), attack_calls(chunked.info)
    assert all(four[p] >= 2 * one[p] - 2 for p in ATTACK_PHASES), (one, four)
    assert sum(four.values()) >= 2.2 * sum(one.values())  # measured: 188 calls against 77
    # both layouts compute the exact answer of the linear model
    for result in (v3, chunked):
        for b in ("linf-1", "linf-2", "linf-4", "linf-8", "l2-1.75"):
            got = result.samples[f"robust/{b}/correct"].tolist()
            assert got == [expected_correct(b, SHIFTS[i // 3]) for i in range(len(got))], b


def test_white_box_points_run_no_square_and_say_so(tmp_path):
    model, ev = case()
    result, _ = run(model, ev, v3_config(), tmp_path)
    curve = {c["budget"]: c for c in result.info["curve"]}
    assert curve["linf-2"]["attacks"] == ["apgd-ce", "apgd-margin"] and curve["linf-2"]["strength"] == "white-box"
    assert curve["linf-4"]["strength"] == "autoattack" and "square" in curve["linf-4"]["broken_by"]
    assert set(result.info["steps"]["linf-8"]) == {"apgd-ce", "apgd-margin"}
    assert "square" not in result.info["steps"]["linf-1"]


def test_norm_shards_are_independent_so_any_order_gives_the_same_numbers(tmp_path):
    """Ray may run the two norms' shards at once or in either order: nothing passes between them."""
    model, ev = case(2)
    battery, cfg = RobustnessBattery(), v3_config()
    keys = battery.shards(ev, cfg)
    assert keys == ["chunk-000-linf", "chunk-000-l2"]
    c = ctx(tmp_path)
    backwards = {k: battery.run_shard(k, model=model, evalset=ev, config=cfg, ctx=c) for k in reversed(keys)}
    forwards = run(model, ev, cfg, tmp_path / "f")[1]
    for k in keys:
        assert backwards[k].samples.equals(forwards[k].samples)
        assert backwards[k].tensors.keys() == forwards[k].tensors.keys()
        assert all(torch.equal(backwards[k].tensors[t], forwards[k].tensors[t]) for t in backwards[k].tensors)
    a = battery.finalize(backwards, model=model, evalset=ev, config=cfg, ctx=c)
    b = battery.finalize(forwards, model=model, evalset=ev, config=cfg, ctx=c)
    assert a.samples.equals(b.samples) and list(a.samples["image_id"]) == ev.ids
    assert forwards["chunk-000-l2"].tensors == {}  # the attacked images (headline: L-inf) live in one shard


def test_a_constant_model_is_answered_analytically_without_an_attack(tmp_path):
    model = wrap(Constant(), mean=(0.0,), std=(1.0,))  # always "fracture"
    _, ev = case(2)
    result, outputs = run(model, ev, v3_config(), tmp_path)
    for b in ("linf-1", "linf-2", "linf-4", "linf-8", "l2-1.75"):
        assert result.samples[f"robust/{b}/correct"].tolist() == [float(y) for y in ev.y.tolist()]
    assert not set(result.info["passes"]) & set(ATTACK_PHASES)  # no attack ran
    assert result.info["constant"]["shards"] == 2 and result.info["constant"]["logits"] == [0.0, 1.0]
    assert all(rec["points"] == 0 for per in result.info["steps"].values() for rec in per.values())


class ConstantOnGrey(torch.nn.Module):
    """Constant on the grey test images and anywhere near them, but not elsewhere: z = w . relu(x - 0.9)."""

    def __init__(self, w):
        super().__init__()
        self.inner = LinearPixels(w, 0.0)

    def forward(self, x):
        return self.inner(torch.relu(x - 0.9)) + torch.tensor([0.0, 1.0])


def test_a_model_constant_only_near_the_images_is_attacked_as_usual(tmp_path):
    """The gaming path: identical logits and a zero gradient on every clean image, but not everywhere in the box;
    the uniform-noise probe sees it and the cascade attacks it (and finds it robust: 8/255 cannot reach 0.9)."""
    model, ev = case(2)
    gaming = wrap(ConstantOnGrey(model.net.w.detach().reshape(1, 224, 224)), mean=(0.0,), std=(1.0,))
    result, _ = run(gaming, ev, v3_config(), tmp_path)
    assert "constant" not in result.info
    assert {"apgd-ce", "apgd-margin"} <= set(result.info["passes"])


@pytest.mark.parametrize("shard_by", ["chunk", "norm"])
def test_every_attack_at_every_budget_sees_only_its_budget(shard_by, tmp_path):
    """attacks_at is applied per budget in both layouts; FAB still runs once per norm."""
    model, ev = case(2)
    cfg = v3_config(shard_by=shard_by, attacks_at={"linf-1": ["fab"], "linf-2": ["fab"], "linf-4": ["apgd-ce"],
                                                    "linf-8": ["square"], "l2-1.75": ["apgd-margin"]})
    result, _ = run(model, ev, cfg, tmp_path)
    assert {b: set(per) for b, per in result.info["steps"].items()} == {
        "linf-1": {"fab"}, "linf-2": {"fab"}, "linf-4": {"apgd-ce"}, "linf-8": {"square"},
        "l2-1.75": {"apgd-margin"}}
    assert result.info["steps"]["linf-2"]["fab"]["steps"] == 0  # FAB's points reused from linf-1
    assert Budget("linf", 4.0).id == "linf-4"
