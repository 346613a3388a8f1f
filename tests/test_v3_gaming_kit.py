"""The red team's kit (issue 21), rebuilt: one honest linear classifier whose exact robust accuracy is known at
every L-inf budget, and the gaming submissions built around it, each a small torch module. The tests in this
file check the kit itself (the exact answer by hand, and that every gaming model makes the honest decisions on
the clean images); test_v3_gaming_*.py run the v3 battery against each mechanism.

The honest margin is s(x) = sum of the 10 x 10 patch - 100 * GREY: images are grey (128/255, on the uint8
grid like real radiographs, total variation ~0.001: "radiograph-like") with the patch moved by k/255 towards
the label, so s = +-100 k/255 and the L-inf distance to the boundary is |s| / ||w||_1 = k/255 (the box never
binds: 128/255 +- (20 + 64)/255 stays inside [0, 1]).
"""

from __future__ import annotations

import copy

import torch
import yaml
from conftest import LinearPixels
from fxbench import decision
from fxbench.models import wrap
from fxbench.paths import SPECS_DIR
from test_robustness import evalset_of

GREY = 128 / 255
PATCH = (slice(100, 110), slice(100, 110))
LABELS = [0, 1, 0, 1, 0, 1, 0, 1]
SHIFTS = [2, 2, 6, 6, 20, 20, 2, 6]  # in 1/255: each image breaks exactly at eps = shift / 255 (and above)


def weights() -> torch.Tensor:
    w = torch.zeros(1, 224, 224)
    w[0, PATCH[0], PATCH[1]] = 1.0
    return w.flatten()


def honest_net() -> LinearPixels:
    return LinearPixels(weights(), -100 * GREY)  # logits [-s/2, s/2]


def kit_evalset(labels=LABELS, shifts=SHIFTS):
    x = torch.full((len(labels), 1, 224, 224), GREY)
    for i, (y, k) in enumerate(zip(labels, shifts)):
        x[i, 0, PATCH[0], PATCH[1]] += (k if y else -k) / 255
    return evalset_of(x, list(labels))


def exact_robust(eps_255: float, labels=LABELS, shifts=SHIFTS) -> list[float]:
    """By hand: the worst perturbation moves s by 100 eps against the label; a tie (s = 0) is a fracture."""
    out = []
    for y, k in zip(labels, shifts):
        s, gain = 100 * k / 255 * (1 if y else -1), 100 * eps_255 / 255
        out.append(float(s - gain >= 0) if y else float(s + gain < 0))
    return out


def balanced(correct: list[float], labels=LABELS) -> float:
    pos = [c for c, y in zip(correct, labels) if y]
    neg = [c for c, y in zip(correct, labels) if not y]
    return (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per image: mean |difference| of neighbouring pixels, both directions (noise in [0, 1]: ~0.67; a
    radiograph, or an image with noise of +-16/255: < 0.1)."""
    return (x.diff(dim=-1).abs().flatten(1).mean(1) + x.diff(dim=-2).abs().flatten(1).mean(1))


def radiograph_like(x: torch.Tensor) -> torch.Tensor:
    return total_variation(x.detach()) < 0.1


def on_grid(x: torch.Tensor) -> torch.Tensor:
    return ((x * 255 - (x * 255).round()).abs() < 1e-3).flatten(1).all(dim=1)


def v3_config(*, preset: str = "quick", budgets=(4,), drop=(), **overrides) -> dict:
    """The v3 spec's preset with few steps (linear models need few), on chunks of 8."""
    spec = yaml.safe_load((SPECS_DIR / "v3" / "robustness.yaml").read_text())
    cfg = {"name": spec["name"], "version": spec["version"], **copy.deepcopy(spec[preset])}
    cfg.update(budgets={"linf": list(budgets), "l2": []}, chunk_size=8, batch_size=8)
    steps = {"apgd-ce": ("n_iter", 5), "apgd-margin": ("n_iter", 5), "fab": ("n_iter", 2),
             "square": ("n_queries", 20)}
    for a in cfg["attacks"]:
        a[steps[a["name"]][0]] = steps[a["name"]][1]
    cfg["attacks"] = [a for a in cfg["attacks"] if a["name"] not in drop]
    cfg["checks"]["transfer"]["points"] = 0
    cfg.update(overrides)
    return cfg


# ---- the honest classifier and its honest variants -----------------------------------------------------------

class Scaled(torch.nn.Module):
    """The issue's honest control: the honest logits x 1e4 (every decision and every margin's sign unchanged)."""

    def __init__(self, factor: float = 1e4):
        super().__init__()
        self.inner, self.factor = honest_net(), factor

    def forward(self, x):
        return self.inner(x) * self.factor


# ---- gaming submissions ------------------------------------------------------------------------------------

class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -g


class RoundedOffset(torch.nn.Module):
    """Input rounding (to 1/1020: a step of h = 0.001 crosses it) plus 1000 on both logits."""

    def __init__(self):
        super().__init__()
        self.inner = honest_net()

    def forward(self, x):
        return self.inner(torch.round(x * 1020) / 1020) + 1000.0


class ReversedOffset(torch.nn.Module):
    """The honest logits with the input gradient reversed, plus 1000 on both logits."""

    def __init__(self):
        super().__init__()
        self.inner = honest_net()

    def forward(self, x):
        return self.inner(_Reverse.apply(x)) + 1000.0


class Gated(torch.nn.Module):
    """Honest on noise-like inputs (total variation > 0.1, e.g. an eps = 1 random start); ``masked(x)`` on
    radiograph-like ones."""

    def __init__(self):
        super().__init__()
        self.inner = honest_net()

    def masked(self, x):
        raise NotImplementedError

    def forward(self, x):
        honest = self.inner(x)
        return torch.where(radiograph_like(x)[:, None], self.masked(x), honest)


class GatedRounding(Gated):
    def masked(self, x):
        return self.inner(torch.round(x * 1020) / 1020) + 1000.0


class GatedTanh(Gated):
    """Fracture logit 30 tanh(s / 0.01): the same decisions, smooth, and a gradient that is exactly 0 in
    float32 wherever |s| > 0.09."""

    def masked(self, x):
        s = self.inner(x)[:, 1:] * 2
        return torch.cat([torch.zeros_like(s), 30 * torch.tanh(s / 0.01)], dim=1)


class GatedOffGrid(Gated):
    """On the uint8 grid (real images): honest. Off it (attacked points): +-10, the sign of the honest answer at
    the nearest grid image."""

    def masked(self, x):
        s_grid = self.inner(torch.round(x * 255) / 255)[:, 1:] * 2
        off = torch.cat([torch.zeros_like(s_grid), 10 * torch.sign(s_grid)], dim=1)
        return torch.where(on_grid(x)[:, None], self.inner(x), off)


class GatedDetached(Gated):
    """Radiograph-like inputs get +-10 (the honest sign) as a constant: no gradient, and nothing for BPDA to
    differentiate through; noise gets the honest answer, so an attack starting from eps = 1 noise breaks it."""

    def masked(self, x):
        s = self.inner(x)[:, 1:] * 2
        return torch.cat([torch.zeros_like(s), 10 * torch.sign(s)], dim=1).detach()


class Ties(torch.nn.Module):
    """Logits [0, -relu(-s)]: every fracture call is an exact tie, with a zero gradient there."""

    def __init__(self):
        super().__init__()
        self.inner = honest_net()

    def forward(self, x):
        s = self.inner(x)[:, 1:] * 2
        return torch.cat([torch.zeros_like(s), -torch.relu(-s)], dim=1)


class BatchSizes(torch.nn.Module):
    """Honest at batch sizes 1, 4 and 32 (v2's validate and clean battery); at every other size, on
    radiograph-like inputs, +-10 with a zero gradient."""

    def __init__(self, honest_sizes=(1, 4, 32)):
        super().__init__()
        self.inner, self.honest_sizes = honest_net(), tuple(honest_sizes)

    def forward(self, x):
        z = self.inner(x)
        if x.shape[0] in self.honest_sizes:
            return z
        s = z[:, 1:] * 2
        fake = torch.cat([torch.zeros_like(s), 10 * torch.sign(s)], dim=1).detach()
        return torch.where(radiograph_like(x)[:, None], fake, z)


class RandomOffset(torch.nn.Module):
    """Fresh +-3 noise on the fracture logit at every call, plus 1e6 on both logits."""

    def __init__(self):
        super().__init__()
        self.inner = honest_net()

    def forward(self, x):
        z = self.inner(x)
        noise = torch.zeros_like(z)
        noise[:, 1] = (torch.rand(len(x), device=x.device) * 2 - 1) * 3
        return z + noise + 1e6


class GradientModeBias(torch.nn.Module):
    """When the input requires a gradient (an attack is watching), 5 is added to the fracture logit: a
    fractured image then looks unbroken to a gradient attack until s < -5, while it is scored broken at s < 0."""

    def __init__(self):
        super().__init__()
        self.inner = honest_net()

    def forward(self, x):
        z = self.inner(x)
        if torch.is_grad_enabled() and x.requires_grad:
            z = z + torch.tensor([[0.0, 5.0]], device=x.device)
        return z


class _OneRow(torch.autograd.Function):
    """Passes the gradient on one row of the patch only, which row depending on the input."""

    @staticmethod
    def forward(ctx, x):
        ctx.rows = ((x.detach().flatten(1).sum(1) * 1000).floor() % 10).long()
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        keep = torch.zeros_like(g)
        for i, r in enumerate(ctx.rows.tolist()):
            keep[i, :, PATCH[0].start + r, :] = 1
        return g * keep


class OneRowGradient(torch.nn.Module):
    """The honest logits with a true but partial gradient: one patch row per call, so each attack step can
    move a tenth of what it should and the loss is still falling when the steps run out."""

    def __init__(self):
        super().__init__()
        self.inner = honest_net()

    def forward(self, x):
        return self.inner(_OneRow.apply(x))


class Oscillating(torch.nn.Module):
    """The honest logits x (1 + 200 wave^2), wave = mean over the patch of sin(255 pi x): the same decisions
    everywhere and the honest margin on the uint8 grid (clean images, the ball's corners), but between grid
    points the margin swings to several times itself and its gradient is the wave's (a noisy landscape)."""

    def __init__(self):
        super().__init__()
        self.inner = honest_net()

    def forward(self, x):
        wave = torch.sin(255 * torch.pi * x[:, 0, PATCH[0], PATCH[1]]).flatten(1).mean(1, keepdim=True)
        return self.inner(x) * (1 + 200 * wave**2)


GAMING = {
    "rounded-offset": RoundedOffset, "reversed-offset": ReversedOffset, "gated-rounding": GatedRounding,
    "gated-tanh": GatedTanh, "gated-off-grid": GatedOffGrid, "gated-detached": GatedDetached, "ties": Ties,
    "batch-sizes": BatchSizes, "random-offset": RandomOffset, "gradient-mode-bias": GradientModeBias,
    "one-row-gradient": OneRowGradient, "oscillating": Oscillating,
}


# ---- the kit itself ---------------------------------------------------------------------------------------

def test_the_exact_answer_by_hand():
    """Robust accuracy at 4/255 by hand: images with shift 6 and 20 survive, shift 2 breaks (balanced 0.625);
    at 16/255 only shift 20, at 32/255 none."""
    assert exact_robust(4) == [0, 0, 1, 1, 1, 1, 0, 1] and balanced(exact_robust(4)) == 0.625
    assert exact_robust(16) == [0, 0, 0, 0, 1, 1, 0, 0] and exact_robust(32) == [0.0] * 8
    ev = kit_evalset()
    s = decision.margin(honest_net()(ev.x).detach())
    want = torch.tensor([100 * k / 255 * (1 if y else -1) for y, k in zip(LABELS, SHIFTS)])
    assert torch.allclose(s, want, atol=1e-4)
    assert on_grid(ev.x).all() and radiograph_like(ev.x).all()
    assert not radiograph_like(torch.rand(2, 1, 224, 224)).any()  # an eps = 1 start is noise


def test_every_gaming_model_makes_the_honest_decisions_on_clean_images():
    """(Except the random one: its +-3 noise flips the images whose margin is 0.78.)"""
    ev = kit_evalset()
    honest = decision.predict(wrap(honest_net())(ev.x).detach())
    assert honest.tolist() == LABELS
    for name, cls in GAMING.items():
        if name == "random-offset":
            continue
        with torch.no_grad():
            got = decision.predict(wrap(cls())(ev.x))
        assert got.tolist() == LABELS, name
