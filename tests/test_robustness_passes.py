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
from tolerance import PerImage, fp32_sum_tol


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


CASES = [(APGDAttack, "ce", "Linf", 0.1 / 255), (APGDMargin, None, "L2", 0.05)]


def _runs(cls, loss, norm, eps, per_image: bool):
    model, x, y = _case()
    net = PerImage(model) if per_image else model
    kwargs = dict(n_iter=8, norm=norm, n_restarts=1, eps=eps, seed=5, rho=0.75, device="cpu", logger=_Log())
    if loss:
        kwargs["loss"] = loss
    lib, ours = cls(net, **kwargs), cls(CountingModel(net), **kwargs)
    lib.init_hyperparam(x)
    ours.init_hyperparam(x)
    torch.manual_seed(5)
    best_l, acc_l, loss_l, _ = lib.attack_single_run(x.clone(), y.clone())
    torch.manual_seed(5)
    best_o, acc_o, loss_o, adv_o, broke_at = attack_single_run(ours, x.clone(), y.clone())
    assert 0 < int(acc_o.sum()) < len(x), "the case must have robust and broken points"
    with torch.no_grad():  # broken points: adversarial by fxbench's rule
        assert ((model(adv_o[~acc_o]) @ torch.tensor([-1.0, 1.0]) >= 0).long() != y[~acc_o]).all()
    return model, x, (best_l, acc_l, loss_l), (best_o, acc_o, loss_o, broke_at), ours


@pytest.mark.parametrize("cls, loss, norm, eps", CASES)
def test_early_stopping_apgd_matches_the_library_on_points_that_stay_robust(cls, loss, norm, eps):
    """Bit for bit, on any CPU: the model sees each image alone (tolerance.PerImage), so an image's logits
    and gradient do not depend on the batch it is in, and dropping broken points must leave every robust
    point's trajectory, highest-loss point and loss exactly the library's. The rest of the arithmetic is
    elementwise (order-free) or a per-image reduction over the rows of a batch of >= 2 rows, which ATen
    never splits across threads (it splits the rows), so it runs in the same order in both. Not for a batch
    of ONE row: ATen then splits that row's sum over threads (another order), hence the >= 2 robust points
    below. Why no tolerance can replace this on the batched model: see the next test."""
    _, _, (best_l, acc_l, loss_l), (best_o, acc_o, loss_o, broke_at), ours = _runs(cls, loss, norm, eps, True)
    robust = acc_o
    assert int(robust.sum()) >= 2  # our batch never shrinks to one row (see the docstring)
    assert torch.equal(acc_l, acc_o)
    assert torch.equal(best_l[robust], best_o[robust])
    assert torch.equal(loss_l[robust], loss_o[robust])
    # Passes: one per point and step until it broke, n_iter + 1 for the robust ones, nothing more.
    steps = torch.where(broke_at >= 0, broke_at + 1, torch.full_like(broke_at, 8 + 1))
    passes = ours.model.totals()["other"]
    assert passes["bwd"] == passes["fwd_grad"] == int(steps.sum()) < 9 * len(acc_o)


@pytest.mark.parametrize("cls, loss, norm, eps", CASES)
def test_early_stopping_apgd_keeps_the_librarys_robust_set_and_loss_with_batch_dependent_kernels(
    cls, loss, norm, eps
):
    """The batched model, as the battery runs it: the library attacks all 6 images in every pass, we attack
    only the unbroken ones, and MKL/oneDNN may pick another kernel (summation order) per batch size: on an
    Intel Xeon the points of the L2 case differ by up to 3e-5 per pixel. Measured here by forcing another
    kernel (our model run per image, or oneDNN off): the points agree to rounding (3-5e-7 in L2 norm after
    1-4 steps) until a step whose loss gain over the best so far is itself at rounding level (late steps
    gain ~3e-8 on logits ~0.19, 1-2 ulp); the two runs then keep different iterates as the best, a step
    apart (1-7e-4 in L2 norm, 7e-5 per pixel at L2; at Linf a flipped sign(grad) pixel, up to 2 eps). A
    wrong implementation moves the points by as little (L2 norm): step size 1.9 eps instead of 2 eps
    3.4-4.2e-4, momentum 0.8 instead of 0.75 3.7-5.3e-4. No tolerance on these points both passes every CPU
    and catches such errors: the points are compared bit for bit in the test above; here what stays exact
    across kernels (the robust set) and within rounding (the loss)."""
    model, x, (best_l, acc_l, loss_l), (best_o, acc_o, loss_o, _), _ = _runs(cls, loss, norm, eps, False)
    robust = acc_o
    # Loss tolerance, from the arithmetic of the logits z_k = sum_i W_ki f_i + b_k + shift_k (the head: 96
    # features, bias, the shift that centres this case's logits: 98 terms). Two float32 orders of that sum
    # differ by at most 2 gamma_97 S_k (tests/tolerance.py), S_k = sum_i |W_ki f_i| + |b_k| + |shift_k|; the
    # margin z_other - z_y, and CE (derivative <= 1 in each logit), by at most the sum over both logits: S_0 +
    # S_1 ~ 1.8 here (0.45 of it the shift): 2 * 97 * 2**-24 * 1.8 = 2.1e-5. The layers below the head add, to
    # first order, their features' relative rounding times S; its typical size sqrt(sum of all accumulation
    # lengths) u ~ sqrt(5100) u = 72 u (15 convolutions, fan-in <= 1728, and the pools) lies within the head's
    # worst case 194 u, so the budget covers the whole network in practice (not a worst-case proof). Measured
    # under other kernels: <= 1.2e-7. It fails an L2 attack stopped after its first step (the last 7 steps
    # gain 6.7e-5) or one that makes no step; at Linf CE gains only ~1e-6 after step 1: a check of gross
    # errors only there.
    with torch.no_grad():
        feats = {}
        head = model.net.net.fc
        hook = head.register_forward_hook(lambda m, i, o: feats.update(f=i[0]))
        model(best_l)
        hook.remove()
    abs_sum = feats["f"].abs() @ head.weight.abs().t() + head.bias.abs() + model.net.shift.abs()  # S_k
    loss_tol = torch.tensor([sum(fp32_sum_tol(98, float(s)) for s in row) for row in abs_sum])
    # The robust set is exact: every point's best loss lies farther from the decision threshold (margin 0, CE
    # log 2) than the loss can move with the kernel. Checked, not assumed: robust L2 margins <= -2.7e-4,
    # robust Linf CE <= log 2 - 3.3e-5.
    threshold = 0.0 if loss is None else float(torch.log(torch.tensor(2.0)))
    assert ((loss_l - threshold).abs() > loss_tol).all()
    assert torch.equal(acc_l, acc_o)
    diff = (loss_l[robust] - loss_o[robust]).abs()
    assert (diff <= loss_tol[robust]).all(), (diff, loss_tol[robust])


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
