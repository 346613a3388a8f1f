"""fxbench-AA on models whose worst-case perturbation is known exactly."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import LinearPixels, linear_model
from fxbench.battery import DatasetInfo, EvalSet, RunContext
from fxbench.models import wrap
from fxbench.paths import SPECS_DIR
from fxbench.robustness import RobustnessBattery, adversarial_images

LINF = [1, 2, 4, 8]
L2 = 1.75
PATCH = (slice(100, 110), slice(100, 110))  # w = +-1 (checkerboard) on a 10 x 10 patch
CLIP = [(30, 30), (30, 31), (31, 30), (31, 31)]  # w = +1, +1, -1, -1 with 0.002 of room: the box binds
ROOM = 0.002



def spec_config(preset: str = "quick", **overrides) -> dict:
    spec = yaml.safe_load((SPECS_DIR / "v1" / "robustness.yaml").read_text())
    cfg = {"name": spec["name"], "version": spec["version"], **copy.deepcopy(spec[preset])}
    cfg.update(overrides)
    return cfg


def small_config(**overrides) -> dict:
    """The quick preset with fewer steps: enough for linear models, fast on a CPU."""
    cfg = spec_config(budgets={"linf": LINF, "l2": [L2]}, chunk_size=64, batch_size=64)
    steps = {"apgd-ce": ("n_iter", 3), "apgd-margin": ("n_iter", 3), "fab": ("n_iter", 2),
             "square": ("n_queries", 10)}
    for a in cfg["attacks"]:
        key, value = steps[a["name"]]
        a[key] = value
    cfg.update(overrides)
    return cfg


def ctx(tmp_path, seed: int = 0) -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=seed, preset="quick", work_dir=tmp_path)


def run(model, evalset, config, tmp_path, battery=None, seed: int = 0):
    battery = battery or RobustnessBattery()
    c = ctx(tmp_path, seed)
    outputs = {k: battery.run_shard(k, model=model, evalset=evalset, config=config, ctx=c)
               for k in battery.shards(evalset, config)}
    return battery.finalize(outputs, model=model, evalset=evalset, config=config, ctx=c), outputs


def evalset_of(x: torch.Tensor, y: list[int]) -> EvalSet:
    n = len(y)
    ids = [f"IMG{8000000 + i:07d}" for i in range(n)]
    meta = pd.DataFrame({"image_id": ids, "label": y})
    info = DatasetInfo(name="synthetic", fingerprint="0" * 64, split="eval", n=n, leaderboard_eligible=False)
    yt = torch.tensor(y, dtype=torch.int64)
    return EvalSet(ids=ids, x=x, y=yt, masks=torch.zeros_like(x, dtype=torch.bool), meta=meta, dataset=info)


# ---- the exact answer for z = w . x (class 1 iff z >= 0: fxbench.decision's rule, a tie is a fracture) ----

def weights() -> torch.Tensor:
    w = torch.zeros(1, 224, 224, dtype=torch.float64)
    r, c = torch.meshgrid(torch.arange(10), torch.arange(10), indexing="ij")
    w[0, PATCH[0], PATCH[1]] = ((r + c) % 2 * 2 - 1).double()
    for (i, j), s in zip(CLIP, (1, 1, -1, -1)):
        w[0, i, j] = s
    return w


def worst_gain(w: torch.Tensor, x: torch.Tensor, y: int, norm: str, eps: float) -> float:
    """The largest change of z towards the other class within eps and the box [0, 1]: each pixel moves
    against the label as far as the box allows, per pixel for L-inf; for L2 by water-filling
    (delta_j = min(room_j, t), sum delta^2 = eps^2; all |w_j| = 1 here)."""
    w, x = w.flatten(), x.double().flatten()
    s = torch.sign(w) * (-1.0 if y == 1 else 1.0)
    room = torch.where(s > 0, 1 - x, x)[w != 0]
    if norm == "linf":
        return float(torch.clamp(room, max=eps).sum())
    lo, hi = 0.0, 1.0
    for _ in range(100):
        t = (lo + hi) / 2
        lo, hi = (t, hi) if float((torch.clamp(room, max=t) ** 2).sum()) < eps**2 else (lo, t)
    return float(torch.clamp(room, max=lo).sum())


def exact_broken(w: torch.Tensor, x: torch.Tensor, y: int, norm: str, eps: float) -> bool:
    """Class 1 iff z >= 0 (a tie is a fracture): is the label lost at the worst case?"""
    z = float(w.flatten() @ x.double().flatten())
    return z - worst_gain(w, x, y, norm, eps) < 0 if y == 1 else z + worst_gain(w, x, y, norm, eps) >= 0


def image(w: torch.Tensor, y: int, shift: float) -> torch.Tensor:
    """Grey 0.5 image; the patch moved by ``shift`` along the label's side; box-limited pixels at the CLIP
    positions with ROOM left against the label."""
    x = torch.full((1, 224, 224), 0.5, dtype=torch.float64)
    side = 1.0 if y == 1 else -1.0
    x[0, PATCH[0], PATCH[1]] += side * shift * w[0, PATCH[0], PATCH[1]]
    for i, j in CLIP:
        toward_other = -side * float(w[0, i, j])  # the direction that helps the attack
        x[0, i, j] = ROOM if toward_other < 0 else 1 - ROOM
    return x


def critical_shift(w: torch.Tensor, y: int, norm: str, eps_crit: float) -> float:
    """The patch shift at which the image breaks exactly at eps_crit: z grows by 100 per unit of shift (the
    patch's sum of w^2) and the attack's best gain does not depend on the shift (the patch never hits the box).
    """
    x0 = image(w, y, 0.0)
    side = 1.0 if y == 1 else -1.0
    return (worst_gain(w, x0, y, norm, eps_crit) - side * float(w.flatten() @ x0.flatten())) / 100


@pytest.fixture(scope="module")
def linear_case():
    """Per budget one image that breaks just below it and one just above (alternating labels), plus one
    misclassified image per label."""
    w = weights()
    xs, ys = [], []
    for k, eps in enumerate([e / 255 for e in LINF]):
        for f, y in ((0.9, k % 2), (1.1, 1 - k % 2)):
            xs.append(image(w, y, critical_shift(w, y, "linf", f * eps)))
            ys.append(y)
    for f, y in ((0.95, 1), (1.05, 0)):
        xs.append(image(w, y, critical_shift(w, y, "l2", f * L2)))
        ys.append(y)
    for y in (0, 1):
        xs.append(image(w, 1 - y, 0.1))  # the other class's image, labelled y: misclassified clean
        ys.append(y)
    x = torch.stack(xs).float()
    expected = {}
    for k in LINF:
        expected[f"linf-{k}"] = [exact_broken(w, xi, yi, "linf", k / 255) for xi, yi in zip(x, ys)]
    expected[f"l2-{L2}"] = [exact_broken(w, xi, yi, "l2", L2) for xi, yi in zip(x, ys)]
    clean_wrong = [exact_broken(w, xi, yi, "linf", 0.0) for xi, yi in zip(x, ys)]
    return w.float(), evalset_of(x, ys), expected, clean_wrong


class LinearRGB(torch.nn.Module):
    """z = sum over 3 identical channels of (w/3) . x_c: the same function of the canonical pixels."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.inner = LinearPixels(torch.cat([w.flatten() / 3] * 3))

    def forward(self, x):
        return self.inner(x)


def variants(w: torch.Tensor) -> dict:
    n = w.flatten()
    return {
        "two-logits": linear_model(n),
        "single-logit": linear_model(n, two_logits=False),
        "three-channels": wrap(LinearRGB(n), channels=3, mean=(0.0,) * 3, std=(1.0,) * 3),
        # Normalised inside the wrapper: z = (w/4) . (x - 0.5)/0.25 + sum(w)/2 = w . x. Attacking the
        # normalised input with the same eps would be 4x weaker in pixels (the notebook trap).
        "normalised": wrap(LinearPixels(n / 4, b=float(n.sum()) / 2), channels=1, mean=(0.5,), std=(0.25,)),
    }


def assert_exact(samples: pd.DataFrame, expected: dict, budgets: list[str]) -> None:
    for budget in budgets:
        exact_correct = np.array([0.0 if b else 1.0 for b in expected[budget]])
        got = samples[f"robust/{budget}/correct"].to_numpy()
        # Never below the truth (verification guarantees it); here every breakable point must be found too.
        assert not (got < exact_correct).any(), f"{budget}: robust accuracy below the exact value"
        missed = list(np.flatnonzero(got != exact_correct))
        assert not missed, f"{budget}: the attacks missed images {missed}"
        eps = int(budget.split("-")[1]) / 255 if budget.startswith("linf") else L2
        hit = samples[f"robust/{budget}/broken"].to_numpy(dtype=bool)
        norms = samples[f"robust/{budget}/norm"].to_numpy()
        assert np.all(norms[hit] <= eps + 1e-6) and np.all(np.isnan(norms[~hit]))


@pytest.fixture(scope="module")
def two_logit_run(linear_case, tmp_path_factory):
    w, evalset, _, _ = linear_case
    return run(variants(w)["two-logits"], evalset, small_config(), tmp_path_factory.mktemp("rb"))


def test_linear_model_robust_accuracy_is_exact(linear_case, two_logit_run):
    _, evalset, expected, clean_wrong = linear_case
    result, _ = two_logit_run
    s = result.samples
    assert list(s["image_id"]) == evalset.ids
    assert list(s["robust/linf-1/attack"] == "clean") == clean_wrong
    assert sum(clean_wrong) == 2 and all(0 < sum(v) < len(v) for v in expected.values())
    assert_exact(s, expected, list(expected))
    for i in range(len(evalset)):
        first = next((k for k in LINF if expected[f"linf-{k}"][i]), None)
        want = 0.0 if clean_wrong[i] else (math.nan if first is None else float(first))
        got = s["robust/linf/min_eps_broken"][i]
        assert (math.isnan(want) and math.isnan(got)) or got == want, (i, got, want)


@pytest.mark.parametrize("variant", ["single-logit", "three-channels", "normalised"])
def test_linear_variants_are_attacked_in_canonical_pixels(linear_case, variant, tmp_path):
    """Same function of the canonical pixels, so the same exact answer: in particular the normalised model
    must not be attacked with eps in its normalised input space (that would be a 4x smaller budget)."""
    w, evalset, expected, clean_wrong = linear_case
    model = variants(w)[variant]
    cfg = small_config(budgets={"linf": [2, 4], "l2": []})
    cfg["attacks"] = [a for a in cfg["attacks"] if a["name"] != "fab"]  # FAB is the slow one on a CPU
    result, outputs = run(model, evalset, cfg, tmp_path)
    assert_exact(result.samples, expected, ["linf-2", "linf-4"])
    tensors = {k: v for o in outputs.values() for k, v in o.tensors.items()}
    # Kept: every fractured image classified correctly clean, broken at <= 4/255 or not (the explanation
    # battery scores both); nothing for misclassified or non-fractured images.
    want_keys = {f"adv/linf-4/{evalset.ids[i]}" for i in range(len(evalset))
                 if evalset.y[i] == 1 and not clean_wrong[i]}
    assert set(tensors) == want_keys
    adv = adversarial_images(tensors, evalset.ids, evalset.x)
    delta = (adv - evalset.x).abs().flatten(1).amax(dim=1)
    kept = torch.tensor([f"adv/linf-4/{i}" in tensors for i in evalset.ids])
    broken = torch.tensor(list(result.samples["robust/linf-4/broken"]))
    assert (kept & broken).any() and (kept & ~broken).any()
    assert (delta[~kept] == 0).all()
    # In canonical pixels: within 4/255, and more than 0.9 of the smallest critical eps (1/255) is needed.
    assert (delta[kept] <= 4 / 255 + 1e-6).all() and (delta[kept & broken] > 0.85 / 255).all()
    with torch.no_grad():
        pred = (model(adv) @ torch.tensor([-1.0, 1.0]) >= 0).long()
    assert (pred[kept & broken] != evalset.y[kept & broken]).all()
    # Robust ones: the attack's final point, still classified correctly, and moved (APGD-CE's best loss).
    assert (pred[kept & ~broken] == evalset.y[kept & ~broken]).all() and (delta[kept & ~broken] > 0).all()


def test_metric_definitions_and_info(linear_case, two_logit_run):
    _, _, expected, clean_wrong = linear_case
    result, _ = two_logit_run
    ids = {m.id: m for m in result.metrics}
    budgets = [f"linf-{k}" for k in LINF] + [f"l2-{L2}"]
    assert len(ids) == 4 * len(budgets)
    for b in budgets:
        assert ids[f"robust/{b}/accuracy"].reduce == "mean"
        assert ids[f"robust/{b}/accuracy"].column == f"robust/{b}/correct"
        assert ids[f"robust/{b}/balanced_accuracy"].reduce == "balanced_accuracy"
        assert ids[f"robust/{b}/sensitivity"].where == {"label": 1}
        assert ids[f"robust/{b}/specificity"].where == {"label": 0}
        assert all(m.higher_is_better for m in ids.values())
    curve = result.info["curve"]
    assert [c["budget"] for c in curve] == budgets
    acc = [c["robust_accuracy"] for c in curve[:4]]
    assert acc == sorted(acc, reverse=True)
    assert acc[2] == pytest.approx(1 - np.mean([b or c for b, c in zip(expected["linf-4"], clean_wrong)]))
    # Each broken point is counted once, for the attack and budget where it first broke.
    s = result.samples
    assert sum(result.info["broken_by_attack"].values()) == int(s["robust/linf-8/broken"].sum()) + int(
        s[f"robust/l2-{L2}/broken"].sum())
    assert result.info["passes"]["apgd-ce"]["bwd"] > 0
