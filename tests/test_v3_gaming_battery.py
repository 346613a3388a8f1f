"""Issue 21, model side: every gaming submission of the red team, rebuilt around the kit's honest classifier
(test_v3_gaming_kit.py), is flagged unranked by the v3 robustness battery (or refused: test_v3_gaming_refusals),
and the honest control is not.

The cascade here runs without Square unless a test needs it: the issue's finding is that quick Square (50
queries) broke nothing on real radiographs, and on these 8 synthetic images even 20 queries find what the
gradient attacks miss, which would hide what the gradient checks must catch on their own.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import LinearPixels, make_evalset
from fxbench.models import wrap
from fxbench.paths import SPECS_DIR
from fxbench.robustness.attacks import SquareDecisionRule, follow_decision_rule
from fxbench.robustness.cascade import run_attack
from pyautoattack.square import SquareAttack
from test_robustness import LINF, assert_exact, run, small_config
from test_robustness import linear_case as linear_case  # noqa: F401 - a fixture
from test_robustness_checks import Constant
from test_v3_gaming_kit import (
    GatedDetached,
    GatedOffGrid,
    GatedRounding,
    GatedTanh,
    GradientModeBias,
    OneRowGradient,
    Oscillating,
    ReversedOffset,
    RoundedOffset,
    Scaled,
    Ties,
    balanced,
    exact_robust,
    honest_net,
    kit_evalset,
    v3_config,
)

UNRANKED = set(yaml.safe_load((SPECS_DIR / "v3" / "benchmark.yaml").read_text())["leaderboard"]["unranked_flags"])
V3_FLAGS = {"vanishing-gradients", "bpda-attack-succeeded", "silent-success", "incomplete-optimization",
            "unstable-predictions"}


def codes(result) -> set[str]:
    return {f.code for f in result.flags}


def robust(result) -> list[float]:
    return result.samples["robust/linf-4/correct"].tolist()


def test_v3_unranked_flags_are_declared_with_reasons():
    text = (SPECS_DIR / "v3" / "benchmark.yaml").read_text()
    assert UNRANKED >= V3_FLAGS | {"gradient-mismatch", "unbounded-attack-failed", "transfer-attack-succeeded",
                                   "gradient-masking-suspected"}
    assert "weak-black-box" not in UNRANKED and "zero-gradients" not in UNRANKED
    for code in UNRANKED:
        line = next(li for li in text.splitlines() if f"- {code}" in li)
        assert "#" in line, f"{code}: no comment saying why"


@pytest.mark.parametrize("factor", [1.0, 1e4, 1e-4])
def test_the_honest_control_gets_the_exact_answer_and_no_unranked_flag(factor, tmp_path):
    """The issue's control (logits x 1e4) and the plain and x 1e-4 classifier: every tolerance scales with the
    margin, so none of them trips a check, and the number is the one computed by hand, with and without Square."""
    ev = kit_evalset()
    for drop in (("square",), ()):
        result, _ = run(wrap(Scaled(factor)), ev, v3_config(drop=drop), tmp_path)
        assert robust(result) == exact_robust(4) and balanced(robust(result)) == 0.625
        assert not codes(result) & UNRANKED, codes(result)
        info = result.info["checks"]
        assert info["finite_differences"]["mismatched"] == 0
        assert info["vanishing_gradients"]["zero_where_correct"] == 0
        assert info["unbounded"]["survived_sweep"] == 0 and "bpda" not in info
        ind = info["indicators"]
        assert ind["traced"] == 4 and ind["silent_success"] == ind["incomplete"] == ind["unstable_flips"] == 0
        assert info["consistency"]["batch_sizes_audited"] >= 2


# Each mechanism: the model, and the unranked flags v3 must raise for it (at least these).
CAUGHT = {
    "rounded-offset": (RoundedOffset, {"gradient-mismatch", "vanishing-gradients", "bpda-attack-succeeded"}),
    "reversed-offset": (ReversedOffset, {"gradient-mismatch", "unbounded-attack-failed"}),
    "gated-rounding": (GatedRounding, {"vanishing-gradients", "bpda-attack-succeeded"}),
    "gated-tanh": (GatedTanh, {"vanishing-gradients", "bpda-attack-succeeded"}),
    "gated-off-grid": (GatedOffGrid, {"vanishing-gradients", "bpda-attack-succeeded"}),
    "gated-detached": (GatedDetached, {"vanishing-gradients", "unbounded-attack-failed"}),
    "ties": (Ties, {"vanishing-gradients"}),
    "one-row-gradient": (OneRowGradient, {"incomplete-optimization"}),
    "oscillating": (Oscillating, {"unstable-predictions"}),
}


@pytest.mark.parametrize("name", list(CAUGHT))
def test_each_gaming_mechanism_is_flagged_unranked(name, tmp_path):
    model_cls, expected = CAUGHT[name]
    result, _ = run(wrap(model_cls()), kit_evalset(), v3_config(drop=("square",)), tmp_path)
    assert expected <= codes(result) & UNRANKED, (name, codes(result))


@pytest.mark.parametrize("model_cls", [GatedRounding, GatedTanh, GatedDetached])
def test_v2_ranked_the_gated_models_above_the_truth(model_cls, tmp_path):
    """What the issue found: honest on noise, masked on radiograph-like inputs: robust balanced accuracy 1.000
    against the exact 0.625, and no flag that keeps the result out of the ranking (v2's unbounded check starts
    from eps = 1 noise, where the model is honest)."""
    from test_robustness_gaming import UNRANKED as V2_UNRANKED
    from test_robustness_gaming import v2_config

    cfg = v2_config(square=False, chunk_size=8, batch_size=8)
    result, _ = run(wrap(model_cls()), kit_evalset(), cfg, tmp_path)
    assert balanced(robust(result)) == 1.0 > balanced(exact_robust(4))
    assert not codes(result) & V2_UNRANKED and result.info["checks"]["unbounded"]["survived"] == 0


def test_bpda_breaks_what_the_masked_gradient_hid(tmp_path):
    """tanh(s / 0.01) saturates to a float32 gradient of exactly 0: the cascade leaves the three images that
    break at 2/255 unbroken; APGD through BPDA (tanh differentiated as the identity) breaks all three, and none
    of the five that are robust for real."""
    cfg = v3_config(drop=("square",))
    cfg["checks"]["bpda"]["points"] = 8
    result, _ = run(wrap(GatedTanh()), kit_evalset(), cfg, tmp_path)
    assert balanced(robust(result)) == 1.0
    bpda = result.info["checks"]["bpda"]
    wrong = [i for i, (got, want) in enumerate(zip(robust(result), exact_robust(4))) if got != want]
    assert len(wrong) == 3 and bpda == {"attacked": 8, "broken": 3, "replaced_ops": bpda["replaced_ops"]}
    assert bpda["replaced_ops"] > 0


def test_the_sweep_starts_from_the_clean_image(tmp_path):
    """A constant answer on radiograph-like inputs: v2's attack at eps = 1 starts from noise and breaks every
    point (survived 0); the v3 sweep starts at the clean image and finds no way out up to 64/255."""
    result, _ = run(wrap(GatedDetached()), kit_evalset(), v3_config(drop=("square",)), tmp_path)
    unb = result.info["checks"]["unbounded"]
    assert unb["survived"] == 0 and unb["survived_sweep"] == unb["attacked"] > 0
    flag = next(f for f in result.flags if f.code == "unbounded-attack-failed")
    assert "from the clean image" in flag.message and "64/255" in flag.message


def test_silent_success_is_flagged(tmp_path):
    """The model adds 5 to its fracture logit whenever an attack takes a gradient: fractured images that break
    at 2/255 look unbroken to APGD (it sees s + 5 > 0) while fxbench scores them broken (s < 0). The images
    without a fracture sit far from the boundary, so only this direction of the disagreement occurs."""
    labels, shifts = [0, 1, 0, 1, 1], [20, 2, 20, 6, 2]
    result, _ = run(wrap(GradientModeBias()), kit_evalset(labels, shifts), v3_config(drop=("square",)), tmp_path)
    assert robust(result) == [1.0] * 5 and exact_robust(4, labels, shifts) == [1, 0, 1, 1, 0]
    ind = result.info["checks"]["indicators"]
    # the first 4 points still robust are traced (quick: indicators.points = 4): images 0-3, of which image 1
    assert ind["traced"] == 4 and ind["silent_success"] == 1 and "silent-success" in codes(result) & UNRANKED
    assert ind["examples"][0]["image"] == "IMG8000001" and ind["examples"][0]["fresh_margin"] < 0


def test_incomplete_optimisation_traces_the_attack(tmp_path):
    result, _ = run(wrap(OneRowGradient()), kit_evalset(), v3_config(drop=("square",)), tmp_path)
    ind = result.info["checks"]["indicators"]
    assert ind["incomplete"] > 0.25 * ind["traced"] and ind["examples"]
    first, last, best = ind["examples"][0]["loss_first_last_best"]
    assert best < first and last == best  # still falling at the last step


def test_unstable_predictions(tmp_path):
    result, _ = run(wrap(Oscillating()), kit_evalset(), v3_config(drop=("square",)), tmp_path)
    assert result.info["checks"]["indicators"]["relative_change"] > 0.5
    honest, _ = run(wrap(honest_net()), kit_evalset(), v3_config(drop=("square",)), tmp_path)
    assert honest.info["checks"]["indicators"]["relative_change"] < 0.05


def test_square_decides_by_the_one_rule_a_tie_is_not_broken():
    """Logits [0, -relu(-s)]: a fractured image is an exact tie, which fxbench counts as a fracture (correct).
    pyautoattack's Square counts margin <= 0 as already fooled and stops attacking it; with the rule it goes on."""

    def square(model, n_queries=200):
        return SquareAttack(model, norm="Linf", eps=4 / 255, n_queries=n_queries, p_init=0.8, n_restarts=1, seed=0,
                            verbose=False, loss="margin", resc_schedule=True, device=torch.device("cpu"))

    fixed = torch.tensor([[0.0, 0.0], [0.0, -1.0], [1.0, 1.0]])
    ruled = follow_decision_rule(square(lambda x: fixed.clone()))
    assert isinstance(ruled, SquareDecisionRule) and ruled.seed == 0
    margin, loss = ruled.margin_and_loss(torch.zeros(3, 1), torch.tensor([1, 1, 0]))
    assert margin[0] > 0 and margin[1] < 0 and margin[2] == 0  # a tie: correct for a fracture, fooled otherwise
    assert torch.equal(margin, loss)
    ev = kit_evalset([1, 1, 1, 1], [2, 2, 1, 1])
    model = wrap(Ties())
    plain = run_attack(square(model), ev.x.clone(), ev.y.clone())
    ruled = run_attack(follow_decision_rule(square(model)), ev.x.clone(), ev.y.clone())
    assert int(ruled.broken.sum()) > int(plain.broken.sum())


def test_the_constant_classifier_stays_exact_and_ranked(tmp_path):
    """A zero gradient is honest for a model that predicts one class: no vanishing-gradients flag."""
    evalset = make_evalset(n=6)
    result, _ = run(wrap(Constant()), evalset, v3_config(), tmp_path)
    assert (result.samples["robust/linf-4/correct"].to_numpy() == (evalset.y == 1).float().numpy()).all()
    assert not codes(result) & UNRANKED
    assert result.info["checks"]["vanishing_gradients"]["predicts_both_classes"] is False


def test_quick_square_is_flagged_as_a_smoke_test(tmp_path):
    """v3's quick preset runs no black-box attack: its scope flag says so. A preset that runs Square with fewer
    queries than `checks.black_box.min_queries` gets the weak-black-box flag; one with enough does not."""
    ev = kit_evalset()
    quick, _ = run(wrap(honest_net()), ev, v3_config(), tmp_path / "quick")
    assert "weak-black-box" not in codes(quick)
    scope = next(f for f in quick.flags if f.code == "robustness-scope")
    assert "black-box" in scope.message and "full preset" in scope.message

    def with_square() -> dict:
        full = yaml.safe_load((SPECS_DIR / "v3" / "robustness.yaml").read_text())["full"]
        cfg = v3_config()
        square = next(a for a in full["attacks"] if a["name"] == "square")
        cfg["attacks"].append({**square, "n_queries": 20})
        cfg["attacks_at"] = {"linf-4": ["apgd-margin", "square"]}
        return cfg

    weak, _ = run(wrap(honest_net()), ev, with_square(), tmp_path / "weak")
    flag = next(f for f in weak.flags if f.code == "weak-black-box")
    assert "square (20 queries)" in flag.message and "full preset" in flag.message
    enough = with_square()
    enough["checks"]["black_box"]["min_queries"] = 20  # the full preset's 5,000 queries, in small
    result, _ = run(wrap(honest_net()), ev, enough, tmp_path / "enough")
    assert "weak-black-box" not in codes(result)


def test_known_answers_at_every_budget_with_the_v3_checks(linear_case, tmp_path):  # noqa: F811
    """The exact robust accuracy of the linear model at 1, 2, 4 and 8/255 (test_robustness's case) with every
    v3 check on: the same numbers, and not one unranked flag."""
    w, evalset, expected, _ = linear_case
    spec = yaml.safe_load((SPECS_DIR / "v3" / "robustness.yaml").read_text())
    cfg = small_config(budgets={"linf": LINF, "l2": []}, checks=spec["quick"]["checks"])
    cfg["checks"]["transfer"]["points"] = 0
    result, _ = run(wrap(LinearPixels(w.flatten())), evalset, cfg, tmp_path)
    assert_exact(result.samples, expected, [f"linf-{k}" for k in LINF])
    assert not codes(result) & UNRANKED, codes(result)
