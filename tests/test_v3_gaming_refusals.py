"""Issue 21, model side: the gaming submissions that are refused (exit 2) rather than flagged, and the
tolerances every consistency check now measures on the decision margin (fxbench.decision)."""

from __future__ import annotations

import hashlib
import textwrap

import pytest
import torch
from fxbench import decision
from fxbench.battery import RunContext
from fxbench.clean import CleanBattery
from fxbench.errors import ModelMisbehaviour, SubmissionError
from fxbench.models import check_model_outputs, wrap
from fxbench.models.margin_checks import margin_rules
from fxbench.robustness import RobustnessBattery
from fxbench.robustness.counting import CountingModel
from fxbench.robustness.gaming import finite_differences
from test_robustness import run
from test_v3_gaming_kit import (
    BatchSizes,
    RandomOffset,
    Scaled,
    _Reverse,
    exact_robust,
    honest_net,
    kit_evalset,
    v3_config,
)


class Offset(torch.nn.Module):
    """The honest logits plus a constant on both: no decision changes."""

    def __init__(self, offset: float, rounding: bool = False):
        super().__init__()
        self.inner, self.offset, self.rounding = honest_net(), offset, rounding

    def forward(self, x):
        x = torch.round(x * 1020) / 1020 if self.rounding else x
        return self.inner(x) + self.offset


def test_decision_tolerances_are_on_the_margin():
    z = torch.tensor([[-1.0, 1.0], [-0.5, 0.5], [-2.0, 2.0]])
    scale = decision.margin_scale(z)
    assert scale == 2.0  # the median |margin|
    tol, tol_offset = decision.margin_tolerance(z, 1e-5, scale), decision.margin_tolerance(z + 1000, 1e-5, scale)
    assert torch.allclose(tol, torch.tensor([2e-5, 2e-5, 4e-5], dtype=torch.float64), rtol=0.05)
    assert float((tol_offset - tol).max()) < 5e-4  # float32's own rounding at 1000 only (4 x 1000 x 2**-23)
    noisy = z + torch.tensor([[0.0, 3.0], [0.0, 0.0], [0.0, 0.0]])
    assert decision.logits_differ(z + 1e6, noisy + 1e6, 1e-5, scale).tolist() == [True, False, False]
    shifted = z + torch.tensor([[0.5, 0.5], [0.0, 0.0], [0.0, 0.0]])
    assert decision.logits_differ(z, shifted, 1e-3, scale).tolist() == [True, False, False]
    assert not decision.margin_differs(z, z + 0.5, 1e-3, scale).any()  # the same decisions, the same margins


def test_logits_float32_cannot_resolve_are_refused():
    z = honest_net()(kit_evalset().x).detach()
    for ok in (z, z * 1e4, z * 1e-4, z + 1000):
        decision.require_resolvable(ok, resolution=1e-3, where="here")
    with pytest.raises(ModelMisbehaviour, match="common offset far above their difference"):
        decision.require_resolvable(z + 1e6, resolution=1e-3, where="here")


class Reversed(torch.nn.Module):
    def __init__(self, offset: float):
        super().__init__()
        self.inner, self.offset = honest_net(), offset

    def forward(self, x):
        return self.inner(_Reverse.apply(x)) + self.offset


@pytest.mark.parametrize("net, v2_hidden", [(lambda c: Offset(c, rounding=True), True), (Reversed, False)])
def test_an_offset_no_longer_hides_finite_difference_mismatches(net, v2_hidden):
    """The issue's numbers: + 1000 on both logits took the input-rounding model's mismatches from 15/16 to 0/16
    under v2's tolerance (1e-5 x max |logit| / h). On the margin it changes nothing."""
    from fxbench.robustness.config import MarginChecks

    x = kit_evalset().x
    margin = MarginChecks(resolution=1e-3, repeat_rtol=1e-5, batch_rtol=1e-3, fd_rtol=1e-5)
    counts = {}
    for offset in (0.0, 1000.0):
        model = CountingModel(wrap(net(offset)))
        scale = decision.margin_scale(model(x).detach())
        v2 = len(finite_differences(model, x, step=1e-3, rtol=0.5, seed=0)[1])
        v3 = len(finite_differences(model, x, step=1e-3, rtol=0.5, seed=0, margin=margin, scale=scale)[1])
        counts[offset] = (v2, v3)
    assert counts[0.0][0] >= 6 and counts[0.0][1] >= 6, counts  # without the offset both catch it (of 8)
    assert counts[1000.0][1] >= 6, counts  # v3: still far above the flag's share (> 2 of 8)
    if v2_hidden:
        assert counts[1000.0][0] <= 2, counts  # v2: the offset hid them


def test_an_honest_offset_of_1000_is_neither_refused_nor_flagged(tmp_path):
    from test_v3_gaming_battery import UNRANKED

    result, _ = run(wrap(Offset(1000.0)), kit_evalset(), v3_config(drop=("square",)), tmp_path)
    assert result.samples["robust/linf-4/correct"].tolist() == exact_robust(4)
    assert not {f.code for f in result.flags} & UNRANKED


def test_random_outputs_are_refused_by_the_model_check_and_the_battery(tmp_path):
    """Fresh +-3 noise on the fracture logit and 1e6 on both: v2's check saw 'two passes identical'."""
    model = wrap(RandomOffset())
    check_model_outputs(model, device="cpu", version="v2")  # the finding: accepted
    with pytest.raises(ModelMisbehaviour, match="margin resolution"):
        check_model_outputs(model, device="cpu")
    with pytest.raises(ModelMisbehaviour, match="different logits for the same|common offset"):
        run(model, kit_evalset(), v3_config(), tmp_path)


def test_random_outputs_without_an_offset_are_refused_too():
    class Random(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = honest_net()

        def forward(self, x):
            z = self.inner(x)
            return z + torch.stack([torch.zeros(len(x)), torch.rand(len(x)) * 6 - 3], dim=1)

    with pytest.raises(ModelMisbehaviour, match="'deterministic' failed: .*two passes"):
        check_model_outputs(wrap(Random()), device="cpu")


RANDOM_PY = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(1, 2)

    def forward(self, x):
        z = self.head(x.mean(dim=(1, 2, 3)).unsqueeze(1))
        noise = torch.zeros_like(z)
        noise[:, 1] = torch.rand(len(x)) * 6 - 3
        return z + noise + 1e6


def build():
    return Net()
"""


def random_submission(folder):
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "model.py").write_text(RANDOM_PY)
    torch.manual_seed(0)
    net = torch.nn.Linear(1, 2)
    save_file({f"head.{k}": v.contiguous() for k, v in net.state_dict().items()}, str(folder / "w.safetensors"))
    sha = hashlib.sha256((folder / "w.safetensors").read_bytes()).hexdigest()
    (folder / "model.yaml").write_text(textwrap.dedent(f"""\
        id: random-offset
        name: Random outputs with an offset
        authors: ["fxbench tests"]
        license: CC-BY-4.0
        model: {{entrypoint: model.py:build}}
        checkpoint: {{path: w.safetensors, sha256: {sha}}}
        input: {{size: 224, channels: 1, mean: [0.5], std: [0.25]}}
        output: {{num_classes: 2, fracture_index: 1}}
        training: {{adversarial: false, method: ERM}}
        """))
    return folder / "model.yaml"


def test_random_outputs_exit_2_in_validate_and_run(tmp_path, cli):
    from test_validate_cli import refused

    yaml_path = random_submission(tmp_path / "sub")
    r = cli("validate", yaml_path, "--trust-code")
    assert r.exit_code == 2 and "margin resolution" in r.stdout + r.stderr, r
    refused(cli("run", yaml_path, "--trust-code", "--limit", "4", "--out", tmp_path / "out", "--quiet"),
            "margin resolution")
    assert not (tmp_path / "out" / "random-offset").exists()


def test_validate_checks_odd_batch_sizes_on_radiographs():
    """Honest at batch sizes 1, 4 and 32, +-10 at every other size on radiograph-like inputs: v2's check (noise,
    the spec's sizes) said "batch independent"; v3 checks real radiographs at 3, 5 and 7 too."""
    model = wrap(BatchSizes())
    check_model_outputs(model, device="cpu", batch_sizes=(4, 32), version="v2")
    with pytest.raises(ModelMisbehaviour, match=r"radiographs, image 0 alone vs in a batch of 3"):
        check_model_outputs(model, device="cpu", batch_sizes=(4, 32))
    assert margin_rules("quick", device="cpu", version="v2") is None
    rules = margin_rules("quick", device="cpu", version="v3")
    assert rules.odd_batch_sizes == (3, 5, 7) and rules.radiographs == 8


def test_the_battery_audits_every_batch_size_the_attacks_used(tmp_path):
    """Honest alone and at the chunk's size (8, the clean pass), and at 4 and 32; +-10 with a zero gradient at
    the sizes the attacks happen to use (the points still robust): refused, naming the size."""
    with pytest.raises(ModelMisbehaviour, match=r"in a batch of [^8]\d* \(during \w"):
        run(wrap(BatchSizes(honest_sizes=(1, 4, 8, 32))), kit_evalset(), v3_config(drop=("square",)), tmp_path)


class OnlyAt(torch.nn.Module):
    """Honest except at the given batch sizes, where the fracture logit moves by 2."""

    def __init__(self, sizes):
        super().__init__()
        self.inner, self.sizes = honest_net(), tuple(sizes)

    def forward(self, x):
        z = self.inner(x)
        return z + torch.tensor([[0.0, 2.0]]) if x.shape[0] in self.sizes else z


def test_the_clean_battery_and_the_robustness_battery_see_the_same_model(tmp_path):
    """A model that answers differently only in the clean battery's batches (of 4 here): the robustness
    battery's clean pass compares every image with the clean battery's p(fracture)."""
    ev = kit_evalset()
    model = wrap(OnlyAt((4,)))
    ctx = RunContext(device=torch.device("cpu"), seed=0, preset="quick", work_dir=tmp_path)
    clean = CleanBattery()
    cfg = {"batch_size": 4, "chunk_size": 8, "threshold": 0.5}
    ctx.previous["clean"] = clean.finalize({k: clean.run_shard(k, model=model, evalset=ev, config=cfg, ctx=ctx)
                                            for k in clean.shards(ev, cfg)}, model=model, evalset=ev, config=cfg,
                                           ctx=ctx)
    battery = RobustnessBattery()
    rcfg = v3_config(drop=("square", "fab"))
    with pytest.raises(ModelMisbehaviour, match="in the clean battery but"):
        battery.run_shard(battery.shards(ev, rcfg)[0], model=model, evalset=ev, config=rcfg, ctx=ctx)
    honest = wrap(honest_net())
    ctx.previous["clean"] = clean.finalize({k: clean.run_shard(k, model=honest, evalset=ev, config=cfg, ctx=ctx)
                                            for k in clean.shards(ev, cfg)}, model=honest, evalset=ev, config=cfg,
                                           ctx=ctx)
    out = battery.run_shard(battery.shards(ev, rcfg)[0], model=honest, evalset=ev, config=rcfg, ctx=ctx)
    assert out.info["checks"]["consistency"]["compared_with_clean"] == 8


def test_a_model_that_answers_differently_when_an_attack_watches_is_refused(tmp_path):
    """+5 on the fracture logit when the input requires a gradient: APGD 'breaks' a non-fractured image at
    s + 5 >= 0 that fxbench scores correct (s < 0). Before v3 this surfaced as fxbench's own EvaluationBug."""
    from test_v3_gaming_kit import GradientModeBias

    with pytest.raises(ModelMisbehaviour, match="depends on whether an attack is watching") as err:
        run(wrap(GradientModeBias()), kit_evalset([0, 1], [2, 20]), v3_config(drop=("square",)), tmp_path)
    assert isinstance(err.value, SubmissionError)


def test_the_scaled_control_passes_the_model_check():
    for factor in (1e4, 1e-4):
        check_model_outputs(wrap(Scaled(factor)), device="cpu")
