"""Ways a submission could inflate its robustness number, each reproduced and shown caught (v2 battery)."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from conftest import LinearPixels, linear_model, make_evalset
from fxbench import decision
from fxbench.clean import CleanBattery
from fxbench.errors import EvaluationBug, FxbenchError, ModelMisbehaviour, SubmissionError
from fxbench.models import wrap
from fxbench.paths import SPECS_DIR
from fxbench.robustness import RobustnessBattery
from test_robustness import ctx, run
from test_robustness_checks import Constant, patch_case

UNRANKED = set(yaml.safe_load((SPECS_DIR / "v2" / "benchmark.yaml").read_text())["leaderboard"]["unranked_flags"])


def v2_config(*, surrogate: bool = False, square: bool = True, **overrides) -> dict:
    spec = yaml.safe_load((SPECS_DIR / "v2" / "robustness.yaml").read_text())
    cfg = {"name": spec["name"], "version": spec["version"], **copy.deepcopy(spec["quick"])}
    cfg.update(budgets={"linf": [4], "l2": []}, chunk_size=64, batch_size=64)
    steps = {"apgd-ce": ("n_iter", 5), "apgd-margin": ("n_iter", 5), "fab": ("n_iter", 2),
             "square": ("n_queries", 20)}
    for a in cfg["attacks"]:
        a[steps[a["name"]][0]] = steps[a["name"]][1]
    if not square:
        cfg["attacks"] = [a for a in cfg["attacks"] if a["name"] != "square"]
    if not surrogate:
        cfg["checks"]["transfer"]["points"] = 0
    cfg.update(overrides)
    return cfg


def codes(result) -> set[str]:
    return {f.code for f in result.flags}


def on_grid(x: torch.Tensor) -> torch.Tensor:
    """Per image: are all pixels multiples of 1/255 (a real radiograph) rather than an attacked point?"""
    return ((x * 255 - (x * 255).round()).abs() < 1e-3).flatten(1).all(dim=1)


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -g


class ReversedGradient(torch.nn.Module):
    """The same logits as the linear model, with the input gradient reversed by a custom backward."""

    def __init__(self, w, b):
        super().__init__()
        self.inner = LinearPixels(w, b)

    def forward(self, x):
        return self.inner(_Reverse.apply(x))


class _NaNOffGrid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.off = ~on_grid(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        g[ctx.off] = float("nan")  # NaN gradients only on smooth (attacked) inputs: sign(NaN) = 0 freezes APGD
        return g


class NaNGradientOffGrid(ReversedGradient):
    def forward(self, x):
        return self.inner(_NaNOffGrid.apply(x))


class NaNLogitsOffGrid(ReversedGradient):
    def forward(self, x):
        z = self.inner(x)
        return torch.where(on_grid(x)[:, None], z, torch.full_like(z, float("nan")))


class RandomOffGrid(ReversedGradient):
    def forward(self, x):
        z = self.inner(x)
        return torch.where(on_grid(x)[:, None], z, torch.randn_like(z) * 10)


class ReluLogit(torch.nn.Module):
    """A single logit relu(w . x + b): every image with a negative score ties the two canonical logits."""

    def __init__(self, w, b):
        super().__init__()
        self.inner = LinearPixels(w, b, two_logits=False)

    def forward(self, x):
        return torch.relu(self.inner(x))


def grid_case(ys, shift):
    """patch_case's images rounded to the 1/255 grid (real radiographs are uint8 / 255)."""
    w, ev = patch_case(ys, shift)
    ev.x.copy_((ev.x * 255).round() / 255)
    return w, ev


def test_unranked_flags_are_declared_with_reasons():
    text = (SPECS_DIR / "v2" / "benchmark.yaml").read_text()
    assert UNRANKED >= {"gradient-mismatch", "unbounded-attack-failed", "transfer-attack-succeeded",
                        "gradient-masking-suspected"}
    for code in UNRANKED:
        line = next(li for li in text.splitlines() if f"- {code}" in li)
        assert "#" in line, f"{code}: no comment saying why"


def test_one_decision_rule_a_tie_is_a_fracture():
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, -1e-7], [-1e-7, 0.0]])
    assert decision.predict(z).tolist() == [1, 1, 0, 1]
    with pytest.raises(ModelMisbehaviour, match="NaN or infinite logits for 1 of 2"):
        decision.predict(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]))


def test_tie_is_decided_the_same_way_by_clean_and_robustness(tmp_path):
    """relu(z), single logit: a negative score gives logits [0, 0]. v1 called it fracture clean and no fracture
    under attack (clean accuracy 0.50, robust 0.958); one rule gives robust accuracy <= clean accuracy."""
    w, evalset = grid_case([0, 1, 0, 1], shift=0.5 * 4 / 255)
    model = wrap(ReluLogit(w, -50.0), num_classes=1)
    clean = CleanBattery()
    c = ctx(tmp_path)
    cfg = {"batch_size": 4, "chunk_size": 4, "threshold": 0.5}
    cs = clean.finalize({k: clean.run_shard(k, model=model, evalset=evalset, config=cfg, ctx=c)
                         for k in clean.shards(evalset, cfg)}, model=model, evalset=evalset, config=cfg, ctx=c)
    assert cs.samples["clean/pred"].tolist() == [1, 1, 1, 1]  # ties and positives: all "fracture"
    result, _ = run(model, evalset, v2_config(), tmp_path)
    rob = result.samples
    assert (rob["robust/linf-4/attack"] == "clean").tolist() == (cs.samples["clean/correct"] == 0).tolist()
    assert rob["robust/linf-4/correct"].mean() <= cs.samples["clean/correct"].mean()
    with pytest.raises(FxbenchError, match="one decision rule"):
        clean.run_shard("chunk-000", model=model, evalset=evalset, config=dict(cfg, threshold=0.4), ctx=c)


def test_reversed_gradient_is_flagged_and_unranked(tmp_path):
    """The issue's case: same logits, reversed gradient. Every point is breakable (exact robust accuracy 0)."""
    w, evalset = grid_case([0, 1, 0, 1], shift=0.5 * 4 / 255)
    result, _ = run(wrap(ReversedGradient(w, -50.0)), evalset, v2_config(square=False), tmp_path)
    assert "gradient-mismatch" in codes(result) & UNRANKED
    assert result.info["checks"]["finite_differences"]["mismatched"] > 0
    honest, _ = run(linear_model(w, -50.0), evalset, v2_config(square=False), tmp_path)
    assert honest.samples["robust/linf-4/correct"].sum() == 0 and not codes(honest) & UNRANKED


def test_unbounded_attack_must_reach_zero(tmp_path):
    """Robust at 4/255 for real (margin 50, gain 1.6), but breakable at eps = 1; with the gradient reversed the
    white-box attack never gets there although images of both classes exist."""
    w, evalset = grid_case([0, 1, 0, 1], shift=0.5)  # patch at 0 or 1
    result, _ = run(wrap(ReversedGradient(w, -50.0)), evalset, v2_config(square=False), tmp_path)
    assert result.samples["robust/linf-4/correct"].tolist() == [1.0] * 4  # honest at 4/255
    assert "unbounded-attack-failed" in codes(result) & UNRANKED
    honest, _ = run(linear_model(w, -50.0), evalset, v2_config(square=False), tmp_path)
    assert honest.info["checks"]["unbounded"] == {"eps": 1.0, "attacked": 4, "survived": 0}
    assert not codes(honest) & UNRANKED


def test_transfer_from_a_surrogate_is_flagged(tmp_path):
    w, evalset = grid_case([0, 1, 0, 1], shift=0.5 * 4 / 255)
    cfg = v2_config(square=False, surrogate=True)
    cfg["checks"]["finite_differences"]["points"] = 0  # only the transfer check speaks here
    cfg["checks"]["unbounded"]["points"] = 0
    battery = RobustnessBattery(surrogate=linear_model(w, -50.0))
    result, _ = run(wrap(ReversedGradient(w, -50.0)), evalset, cfg, tmp_path, battery=battery)
    assert result.info["checks"]["transfer"]["broken"] == 4
    assert "transfer-attack-succeeded" in codes(result) & UNRANKED


@pytest.mark.parametrize("model_cls, match", [
    (NaNGradientOffGrid, "input gradient is NaN or infinite"),
    (NaNLogitsOffGrid, "NaN or infinite logits"),
    (RandomOffGrid, "different logits for the same"),
])
def test_misbehaviour_on_attacked_inputs_is_the_submissions_fault(model_cls, match, tmp_path):
    w, evalset = grid_case([0, 1, 0, 1], shift=0.5 * 4 / 255)
    with pytest.raises(ModelMisbehaviour, match=match) as err:
        run(wrap(model_cls(w, -50.0)), evalset, v2_config(), tmp_path)
    assert isinstance(err.value, SubmissionError) and not isinstance(err.value, EvaluationBug)


def test_nan_logits_on_clean_images_are_refused(tmp_path):
    w, evalset = grid_case([0, 1], shift=0.01)
    evalset.x[1, 0, 0, 0] += 0.5 / 255  # off the grid: this image gets NaN logits
    clean = CleanBattery()
    cfg = {"batch_size": 2, "chunk_size": 2, "threshold": 0.5}
    with pytest.raises(ModelMisbehaviour, match="on clean evaluation images"):
        clean.run_shard("chunk-000", model=wrap(NaNLogitsOffGrid(w, -50.0)), evalset=evalset, config=cfg,
                        ctx=ctx(tmp_path))
    with pytest.raises(ModelMisbehaviour, match="NaN or infinite logits"):
        run(wrap(NaNLogitsOffGrid(w, -50.0)), evalset, v2_config(), tmp_path)


def test_constant_model_is_not_refused_and_stays_exact(tmp_path):
    evalset = make_evalset(n=6)
    result, _ = run(wrap(Constant()), evalset, v2_config(), tmp_path)
    clean = (evalset.y == 1).float().numpy()
    assert (result.samples["robust/linf-4/correct"].to_numpy() == clean).all()
    assert not codes(result) & UNRANKED  # honest: it never predicts the other class, nothing to unmask
    assert result.info["checks"]["unbounded"]["survived"] == 0


def test_model_checks_run_once_per_run(tmp_path):
    w, evalset = grid_case([0, 1, 0, 1], shift=0.5 * 4 / 255)
    _, outputs = run(linear_model(w, -50.0), evalset, v2_config(chunk_size=2, batch_size=2), tmp_path)
    assert "check-model" in outputs["chunk-000"].info["passes"]
    assert "check-model" not in outputs["chunk-001"].info["passes"]
