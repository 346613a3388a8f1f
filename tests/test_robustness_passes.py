"""Passes spent only where they change the answer: APGD stops broken points without changing robust ones."""

from __future__ import annotations

import pytest
import torch
from conftest import make_evalset, tiny_timm
from fxbench.models import wrap
from fxbench.robustness import APGDMargin
from fxbench.robustness.apgd import attack_single_run
from fxbench.robustness.counting import CountingModel
from pyautoattack.autopgd_base import APGDAttack
from test_robustness_checks import Shifted


class _Log:
    def warning(self, *a, **k): ...


def _case():
    """A small conv net shifted so that about half of the points break within a few steps."""
    net = tiny_timm()
    x = make_evalset(n=6).x
    with torch.no_grad():
        z = wrap(net, mean=(0.5,), std=(0.25,))(x)
    model = wrap(Shifted(net, torch.tensor([-float((z[:, 0] - z[:, 1]).median()), 0.0])), mean=(0.5,),
                 std=(0.25,))
    with torch.no_grad():
        y = (model(x) @ torch.tensor([-1.0, 1.0]) >= 0).long()
    return model, x, y


@pytest.mark.parametrize("cls, loss, norm, eps", [(APGDAttack, "ce", "Linf", 0.1 / 255),
                                                 (APGDMargin, None, "L2", 0.05)])
def test_early_stopping_apgd_matches_the_library_on_points_that_stay_robust(cls, loss, norm, eps):
    model, x, y = _case()
    kwargs = dict(n_iter=8, norm=norm, n_restarts=1, eps=eps, seed=5, rho=0.75, device="cpu", logger=_Log())
    if loss:
        kwargs["loss"] = loss
    lib, ours = cls(model, **kwargs), cls(CountingModel(model), **kwargs)
    lib.init_hyperparam(x)
    ours.init_hyperparam(x)
    torch.manual_seed(5)
    best_l, acc_l, loss_l, _ = lib.attack_single_run(x.clone(), y.clone())
    torch.manual_seed(5)
    best_o, acc_o, loss_o, adv_o, broke_at = attack_single_run(ours, x.clone(), y.clone())
    robust = acc_o
    assert 0 < int(robust.sum()) < len(x), "the case must have robust and broken points"
    assert torch.equal(acc_l, acc_o)
    assert torch.allclose(best_l[robust], best_o[robust], atol=1e-6)
    assert torch.allclose(loss_l[robust], loss_o[robust], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert ((model(adv_o[~robust]) @ torch.tensor([-1.0, 1.0]) >= 0).long() != y[~robust]).all()
    # Passes: one per point and step until it broke, n_iter + 1 for the robust ones, nothing more.
    steps = torch.where(broke_at >= 0, broke_at + 1, torch.full_like(broke_at, 8 + 1))
    passes = ours.model.totals()["other"]
    assert passes["bwd"] == passes["fwd_grad"] == int(steps.sum()) < 9 * len(x)


def test_passes_done_stay_within_the_floor_and_fab_runs_once_per_norm(tmp_path):
    """Linear model, three L-inf budgets: points robust everywhere reach FAB at each budget; FAB runs at the first
    budget only (no random start: its points do not depend on eps), with one backward per step."""
    from fxbench.robustness.floor import ratios
    from test_robustness import run
    from test_robustness_checks import patch_case
    from test_robustness_gaming import v2_config

    w, evalset = patch_case([0, 1, 0, 1, 0, 1], shift=0.5)  # margin 50: robust at every budget
    evalset.x[:2] = 0.5  # z = 0: a tie, breakable by any step (label 1 is the tie's class)
    from conftest import linear_model

    cfg = v2_config(budgets={"linf": [1, 2, 4], "l2": []})
    result, _ = run(linear_model(w, -50.0), evalset, cfg, tmp_path)
    info = result.info
    fab_steps = {b: info_b["fab"] for b, info_b in _steps(result).items()}
    assert fab_steps["linf-1"]["steps"] > 0 and fab_steps["linf-2"]["steps"] == fab_steps["linf-4"]["steps"] == 0
    assert info["passes"]["fab"]["bwd"] == info["passes"]["fab"]["fwd_grad"]  # one backward per step
    r = ratios(info["passes"], info["passes_required"])
    assert r["apgd-ce"]["ratio"] == 1.0 and r["apgd-margin"]["ratio"] == 1.0
    assert r["total"]["ratio"] <= 1.2, r


def _steps(result) -> dict:
    return result.info["steps"]


def test_every_correct_fractured_image_keeps_its_attacked_point_across_batches(tmp_path):
    from conftest import linear_model
    from test_robustness import run
    from test_robustness_checks import patch_case
    from test_robustness_gaming import v2_config

    w, evalset = patch_case([1, 1, 0, 1, 1, 1], shift=0.5)  # robust everywhere
    cfg = v2_config(square=False, batch_size=2, chunk_size=6)
    result, outputs = run(linear_model(w, -50.0), evalset, cfg, tmp_path)
    kept = outputs["chunk-000"].tensors
    assert set(kept) == {f"adv/linf-4/{evalset.ids[i]}" for i in (0, 1, 3, 4, 5)}
    for i in (0, 1, 3, 4, 5):
        d = (kept[f"adv/linf-4/{evalset.ids[i]}"] - evalset.x[i]).abs().max()
        assert 0 < d <= 4 / 255 + 1e-6


def test_time_floor_prices_the_required_passes_at_the_measured_rates():
    from fxbench.robustness.floor import time_floor

    rates = {"fwd_s_per_image": 0.001, "fwd_bwd_s_per_image": 0.003}
    required = {"apgd-ce": {"fwd": 100, "fwd_grad": 100, "bwd": 100},  # 100 x 3 ms
                "square": {"fwd": 500, "fwd_grad": 0, "bwd": 0},  # 500 x 1 ms
                "fab": {"fwd": 0, "fwd_grad": 0, "bwd": 0}}
    got = time_floor(required, {"apgd-ce": 0.6, "square": 0.5, "fab": 0.0}, rates)
    assert got["apgd-ce"] == {"wall_s": 0.6, "floor_s": 0.3, "ratio": 2.0}
    assert got["square"] == {"wall_s": 0.5, "floor_s": 0.5, "ratio": 1.0}
    assert got["fab"]["ratio"] is None  # nothing required: no ratio
    assert got["total"] == {"wall_s": 1.1, "floor_s": 0.8, "ratio": 1.38}


def test_every_run_records_wall_floor_and_ratio_per_attack(tmp_path):
    """The rates are measured in the run, on its device and batch size; the floor in the result is the passes
    required at those rates (recomputed here from the recorded numbers)."""
    from conftest import linear_model
    from fxbench.robustness.floor import time_floor
    from test_robustness import run
    from test_robustness_checks import patch_case
    from test_robustness_gaming import v2_config

    w, evalset = patch_case([0, 1, 0, 1, 0, 1], shift=0.5)
    result, _ = run(linear_model(w, -50.0), evalset, v2_config(square=False), tmp_path)
    tf = result.info["time_floor"]
    rates = tf["rates"]
    assert rates["device"] == "cpu" and rates["fwd_s_per_image"] > 0 and rates["fwd_bwd_s_per_image"] > 0
    again = time_floor(result.info["passes_required"], result.info["seconds_by_attack"], rates)
    assert {k: v for k, v in tf.items() if k != "rates"} == again
    assert tf["apgd-ce"]["floor_s"] > 0 and tf["apgd-ce"]["ratio"] is not None


def test_floor_prices_a_second_backward_through_one_forward_at_the_backward_cost_alone():
    """FAB's gradient of each logit: two backward passes through one forward. The extra one costs
    (forward + backward) - forward, not a whole forward + backward."""
    from fxbench.robustness.floor import floor_seconds

    rates = {"fwd_s_per_image": 0.001, "fwd_bwd_s_per_image": 0.003}
    assert floor_seconds({"fwd": 10, "fwd_grad": 10, "bwd": 20}, rates) == pytest.approx(10 * 0.003 + 10 * 0.002)
    assert floor_seconds({"fwd": 30, "fwd_grad": 10, "bwd": 10}, rates) == pytest.approx(20 * 0.001 + 10 * 0.003)
