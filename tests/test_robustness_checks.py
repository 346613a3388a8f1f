"""fxbench-AA reliability: flags, verification, determinism, the margin loss, the spec."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
import yaml
from conftest import LinearPixels, linear_model, make_evalset
from fxbench.errors import EvaluationBug, FxbenchError
from fxbench.models import wrap
from fxbench.paths import SPECS_DIR
from fxbench.registry import Registry
from fxbench.robustness import ATTACKS, AttackEntry, RobustnessBattery, adversarial_images, parse_config
from fxbench.robustness.cascade import verify_outcome
from fxbench.robustness.images import HEADLINE
from test_robustness import ctx, evalset_of, run, small_config, spec_config  # noqa: F401

PATCH = (slice(100, 110), slice(100, 110))


def patch_case(ys: list[int], shift: float):
    """z = sum(patch) - 50: grey images whose patch sits ``shift`` towards the label (margin 100 * shift);
    the worst L-inf perturbation of size eps lowers the margin by 100 * eps."""
    w = torch.zeros(1, 224, 224)
    w[0, PATCH[0], PATCH[1]] = 1
    x = torch.full((len(ys), 1, 224, 224), 0.5)
    for i, y in enumerate(ys):
        x[i, 0, PATCH[0], PATCH[1]] += shift if y else -shift
    return w.flatten(), evalset_of(x, ys)


class Constant(torch.nn.Module):
    def forward(self, x):
        return torch.tensor([[0.0, 1.0]]).expand(x.shape[0], 2)  # always "fracture", ignores x


class Quantised(torch.nn.Module):
    """A linear model behind input quantisation: round() has a zero gradient everywhere."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.inner = LinearPixels(w, b)

    def forward(self, x):
        return self.inner(torch.round(x * 1020) / 1020)


def codes(result) -> set[str]:
    return {f.code for f in result.flags}


def test_constant_model_robust_accuracy_equals_clean(tmp_path):
    evalset = make_evalset(n=6)
    cfg = small_config(budgets={"linf": [1, 4], "l2": [1.75]})
    result, _ = run(wrap(Constant()), evalset, cfg, tmp_path)
    clean = (evalset.y == 1).float().numpy()
    for b in ("linf-1", "linf-4", "l2-1.75"):
        assert (result.samples[f"robust/{b}/correct"].to_numpy() == clean).all()
        assert list(result.samples[f"robust/{b}/attack"]) == ["" if c else "clean" for c in clean]
        assert not result.samples[f"robust/{b}/broken"].any()
    assert "zero-gradients" in codes(result)
    assert "gradient-masking-suspected" not in codes(result)


def test_gradient_masking_is_flagged(tmp_path):
    w, evalset = patch_case([0, 1, 0, 1], shift=0.5 * 4 / 255)  # breakable at 4/255 with half the budget
    model = wrap(Quantised(w, -50.0))
    result, _ = run(model, evalset, small_config(budgets={"linf": [4], "l2": []}), tmp_path)
    attacks = set(result.samples["robust/linf-4/attack"])
    assert "square" in attacks and not attacks & {"apgd-ce", "apgd-margin", "fab"}
    assert {"gradient-masking-suspected", "zero-gradients"} <= codes(result)
    # The same function without the quantisation: white-box attacks break everything, no flag.
    plain, _ = run(linear_model(w, -50.0), evalset, small_config(budgets={"linf": [4], "l2": []}), tmp_path)
    assert set(plain.samples["robust/linf-4/attack"]) == {"apgd-ce"}
    assert not codes(plain) & {"gradient-masking-suspected", "zero-gradients"}


def test_margin_apgd_breaks_what_saturated_cross_entropy_cannot(tmp_path):
    """Logits scaled by 1000: softmax saturates in float32, so the cross-entropy gradient is exactly zero and
    APGD-CE cannot move; the margin loss keeps its gradient (the reason apgd-margin is in the cascade)."""
    w, evalset = patch_case([0, 1], shift=0.5 * 4 / 255)
    model = linear_model(1000 * w, -50_000.0)
    base = small_config(budgets={"linf": [4], "l2": []})
    ce_only = dict(base, attacks=[a for a in base["attacks"] if a["name"] == "apgd-ce"])
    result, _ = run(model, evalset, ce_only, tmp_path)
    assert not result.samples["robust/linf-4/broken"].any()
    result, _ = run(model, evalset, base, tmp_path)
    assert list(result.samples["robust/linf-4/attack"]) == ["apgd-margin", "apgd-margin"]


def _fake_registry(perturb) -> Registry:
    reg = Registry("attack")

    class Fake:
        def __init__(self, model, *, norm, eps, seed, device, logger, n_iter):
            self.eps = eps

        def perturb(self, x, y):
            return perturb(x, self.eps)

    reg.register("fake", AttackEntry(Fake, ("n_iter",)))
    return reg


@pytest.mark.parametrize("perturb, what", [
    (lambda x, eps: (x - 2 * eps).clamp(0, 1), "outside the budget"),
    (lambda x, eps: x - eps / 2, "outside [0, 1]"),
    (lambda x, eps: torch.full_like(x, float("nan")), "not finite"),
])
def test_verification_rejects_invalid_adversarial_examples(perturb, what, tmp_path):
    w, evalset = patch_case([1, 1], shift=0.5 * 4 / 255)
    evalset.x[:, :, 0, 0] = 0.0  # a pixel at the box edge, so x - eps/2 leaves [0, 1]
    cfg = small_config(budgets={"linf": [4], "l2": []}, attacks=[{"name": "fake", "n_iter": 1}])
    battery = RobustnessBattery(attacks=_fake_registry(perturb))
    with pytest.raises(EvaluationBug, match="fake at linf-4: image IMG8000000"):
        run(linear_model(w, -50.0), evalset, cfg, tmp_path, battery=battery)


def test_verification_rejects_an_example_that_is_classified_correctly(tmp_path):
    w, evalset = patch_case([1, 0], shift=0.5 * 4 / 255)
    model = linear_model(w, -50.0)
    cfg = small_config(budgets={"linf": [4], "l2": []})
    battery = RobustnessBattery()
    from fxbench.robustness.cascade import attack_chunk
    from fxbench.robustness.checks import FlagCollector
    from fxbench.robustness.counting import CountingModel

    conf = battery.config(cfg)
    outcome = attack_chunk(CountingModel(model), evalset.x, evalset.y, evalset.ids, cfg=conf,
                           registry=ATTACKS, seed=1, device=torch.device("cpu"), log=FlagCollector())
    assert sorted(outcome.norms["linf"].adv) == [0, 1]
    verify_outcome(model, evalset.x, outcome, cfg=conf, device=torch.device("cpu"))  # valid as is
    outcome.norms["linf"].adv[0] = evalset.x[0].clone() + 1e-7  # in budget, but not adversarial
    outcome.norms["linf"].dist[0] = float((outcome.norms["linf"].adv[0].double() - evalset.x[0].double()).abs().max())
    with pytest.raises(EvaluationBug, match="IMG8000000 .* classified correctly"):
        verify_outcome(model, evalset.x, outcome, cfg=conf, device=torch.device("cpu"))


class Shifted(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, shift: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("shift", shift)

    def forward(self, x):
        return self.net(x) + self.shift


def test_shards_are_deterministic_and_resume_to_identical_numbers(tmp_path):
    """A small conv net whose margins are tiny (logits shifted to the median), labelled with its own clean
    predictions: every point is attacked and APGD's random start decides the adversarial images."""
    from conftest import tiny_timm

    net = tiny_timm()
    x = make_evalset(n=4).x
    with torch.no_grad():
        z = wrap(net, mean=(0.5,), std=(0.25,))(x)
    model = wrap(Shifted(net, torch.tensor([-float((z[:, 0] - z[:, 1]).median()), 0.0])), mean=(0.5,), std=(0.25,))
    with torch.no_grad():
        evalset = evalset_of(x, model(x).argmax(1).tolist())
    cfg = small_config(budgets={"linf": [1, 8], "l2": []}, chunk_size=2, batch_size=2, headline="linf-8",
                       keep_adversarial_label=int(evalset.y[2]))
    cfg["attacks"] = [a for a in cfg["attacks"] if a["name"] != "fab"]
    battery = RobustnessBattery()
    assert battery.shards(evalset, cfg) == ["chunk-000", "chunk-001"]
    _, first = run(model, evalset, cfg, tmp_path, seed=3)
    again = battery.run_shard("chunk-001", model=model, evalset=evalset, config=cfg, ctx=ctx(tmp_path, 3))
    assert first["chunk-001"].tensors, "nothing broke: the test would not compare adversarial images"
    pd.testing.assert_frame_equal(first["chunk-001"].samples, again.samples)
    assert first["chunk-001"].tensors.keys() == again.tensors.keys()
    for k, v in again.tensors.items():
        assert torch.equal(first["chunk-001"].tensors[k], v)
    assert first["chunk-001"].info["breaks"] == again.info["breaks"]
    assert list(first["chunk-000"].samples["image_id"]) == evalset.ids[:2]


def test_unknown_shard_and_bad_spec_values_are_user_errors(tmp_path):
    battery = RobustnessBattery()
    evalset = make_evalset(n=2)
    with pytest.raises(FxbenchError, match="unknown shard 'chunk-009'"):
        battery.run_shard("chunk-009", model=wrap(Constant()), evalset=evalset, config=small_config(),
                          ctx=ctx(tmp_path))
    bad = [
        ({"budgets": {"linf": [4, 2]}}, "budgets.linf' must be strictly ascending"),
        ({"budgets": {"linf": [1], "l1": [3]}}, "'budgets' must map linf and/or l2"),
        ({"headline": "linf-3"}, "'headline' 'linf-3' is not one of the budgets"),
        ({"attacks": [{"name": "apgd-dlr", "n_iter": 1}]}, "Unknown attack 'apgd-dlr'"),
        ({"attacks": [{"name": "square", "n_queries": 1}]}, r"attacks\[0\] \(square\): missing options"),
        ({"chunk_size": 0}, "'chunk_size' must be a positive integer"),
    ]
    for override, message in bad:
        with pytest.raises(FxbenchError, match=message):
            parse_config(small_config(**override), registry=ATTACKS)


def test_adversarial_images_helper():
    clean = torch.rand(3, 1, 224, 224)
    adv = torch.rand(1, 224, 224)
    out = adversarial_images({"adv/linf-4/b": adv, "adv/linf-8/c": adv}, ["a", "b", "c"], clean)
    assert torch.equal(out[0], clean[0]) and torch.equal(out[1], adv) and torch.equal(out[2], clean[2])
    with pytest.raises(ValueError, match="shape"):
        adversarial_images({"adv/linf-4/a": torch.rand(1, 8, 8)}, ["a"], clean[:1])


def test_spec_full_preset_is_the_battery():
    spec = yaml.safe_load((SPECS_DIR / "v1" / "robustness.yaml").read_text())
    assert (spec["name"], spec["version"]) == ("fxbench-AA", 1)
    full = parse_config(spec_config("full"), registry=ATTACKS)
    quick = parse_config(spec_config("quick"), registry=ATTACKS)
    assert [b.id for b in full.budgets] == ["linf-1", "linf-2", "linf-4", "linf-8", "l2-1.75"]
    assert full.headline == quick.headline == HEADLINE
    assert [a.name for a in full.attacks] == [a.name for a in quick.attacks] == [
        "apgd-ce", "apgd-margin", "fab", "square"]
    opts = {a.name: a.options for a in full.attacks}
    assert opts["apgd-ce"]["n_iter"] == opts["apgd-margin"]["n_iter"] == opts["fab"]["n_iter"] == 100
    assert opts["square"]["n_queries"] == 5000
    assert dataclasses.replace(full, attacks=()) != dataclasses.replace(quick, attacks=())
