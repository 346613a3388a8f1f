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
    steps = {"apgd-ce": ("n_iter", 5), "apgd-margin": ("n_iter", 5), "fab": ("n_iter", 5),
             "square": ("n_queries", 20)}
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


# ---- the exact answer for z = w . x (class 1 iff z > 0; a tie z = 0 is class 0, like argmax) ----

def weights() -> torch.Tensor:
    w = torch.zeros(1, 224, 224, dtype=torch.float64)
    r, c = torch.meshgrid(torch.arange(10), torch.arange(10), indexing="ij")
    w[0, PATCH[0], PATCH[1]] = ((r + c) % 2 * 2 - 1).double()
    for (i, j), s in zip(CLIP, (1, 1, -1, -1)):
        w[0, i, j] = s
    return w


def exact_broken(w: torch.Tensor, x: torch.Tensor, y: int, norm: str, eps: float) -> bool:
    """Is there a perturbation of size eps inside [0, 1] that changes the prediction? Moving each pixel against
    the label, as far as the box allows: per pixel for L-inf; water-filling (delta_j = min(room_j, t |w_j|),
    sum delta^2 = eps^2) for L2."""
    w, x = w.flatten(), x.double().flatten()
    z = float(w @ x)
    toward_other = -1.0 if y == 1 else 1.0  # the direction of z that flips the label
    s = torch.sign(w) * toward_other
    room = torch.where(s > 0, 1 - x, x)[w != 0]
    a = w.abs()[w != 0]
    if norm == "linf":
        gain = float((a * torch.clamp(room, max=eps)).sum())
    else:  # bisection on t: here all |w_j| = 1
        lo, hi = 0.0, 1.0
        for _ in range(200):
            t = (lo + hi) / 2
            lo, hi = (t, hi) if float((torch.clamp(room, max=t) ** 2).sum()) < eps**2 else (lo, t)
        gain = float((a * torch.clamp(room, max=lo)).sum())
    z_worst = z + gain * toward_other
    return z_worst <= 0 if y == 1 else z_worst > 0


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
    """The patch shift at which the image breaks exactly at eps_crit (bisection on exact_broken)."""
    lo, hi = 0.0, 0.45
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if exact_broken(w, image(w, y, mid), y, norm, eps_crit) else (lo, mid)
    return hi


@pytest.fixture(scope="module")
def linear_case():
    """Images that break just below / just above each budget, both labels, plus two misclassified ones."""
    w = weights()
    xs, ys = [], []
    for y in (0, 1):
        for k in LINF:
            for f in (0.9, 1.1):
                xs.append(image(w, y, critical_shift(w, y, "linf", f * k / 255)))
                ys.append(y)
        for f in (0.95, 1.05):
            xs.append(image(w, y, critical_shift(w, y, "l2", f * L2)))
            ys.append(y)
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


@pytest.mark.parametrize("variant", ["two-logits", "single-logit", "three-channels", "normalised"])
def test_linear_model_robust_accuracy_is_exact(linear_case, variant, tmp_path):
    w, evalset, expected, clean_wrong = linear_case
    model = variants(w)[variant]
    result, _ = run(model, evalset, small_config(), tmp_path)
    s = result.samples
    assert list(s["image_id"]) == evalset.ids
    assert list(s[f"robust/linf-1/attack"] == "clean") == clean_wrong
    for budget, broken in expected.items():
        exact_correct = np.array([0.0 if b else 1.0 for b in broken])
        got = s[f"robust/{budget}/correct"].to_numpy()
        # never lower than the truth (verification guarantees it), and here every breakable point is found
        assert not (got < exact_correct).any(), f"{budget}: robust accuracy below the exact value"
        assert (got == exact_correct).all(), f"{budget}: an attack missed {list(np.flatnonzero(got != exact_correct))}"
        norms = s[f"robust/{budget}/norm"].to_numpy()
        eps = int(budget.split("-")[1]) / 255 if budget.startswith("linf") else L2
        hit = s[f"robust/{budget}/broken"].to_numpy(dtype=bool)
        assert np.all(norms[hit] <= eps + 1e-6) and np.all(np.isnan(norms[~hit]))


def test_linear_min_eps_and_kept_images_in_pixel_space(linear_case, tmp_path):
    w, evalset, expected, clean_wrong = linear_case
    model = variants(w)["normalised"]
    result, outputs = run(model, evalset, small_config(), tmp_path)
    s = result.samples
    for i in range(len(evalset)):
        first = next((k for k in LINF if expected[f"linf-{k}"][i]), None)
        want = 0.0 if clean_wrong[i] else (math.nan if first is None else float(first))
        got = s["robust/linf/min_eps_broken"][i]
        assert (math.isnan(want) and math.isnan(got)) or got == want, (i, got, want)
    tensors = {k: v for o in outputs.values() for k, v in o.tensors.items()}
    # Kept: fractured, correctly classified clean, broken at <= 4/255. Nothing else.
    want_keys = {f"adv/linf-4/{evalset.ids[i]}" for i in range(len(evalset))
                 if evalset.y[i] == 1 and not clean_wrong[i] and expected["linf-4"][i]}
    assert set(tensors) == want_keys and want_keys
    adv = adversarial_images(tensors, evalset.ids, evalset.x)
    delta = (adv - evalset.x).abs().flatten(1).amax(dim=1)
    kept = torch.tensor([f"adv/linf-4/{i}" in tensors for i in evalset.ids])
    assert (delta[~kept] == 0).all()
    # In canonical pixels: within 4/255 and each one needs more than 0.9 of its critical eps >= 0.9/255.
    assert (delta[kept] <= 4 / 255 + 1e-6).all() and (delta[kept] > 0.8 / 255).all()
    with torch.no_grad():
        assert (model(adv[kept]).argmax(1) != evalset.y[kept]).all()


def test_metric_definitions_and_info(linear_case, tmp_path):
    w, evalset, expected, clean_wrong = linear_case
    result, _ = run(variants(w)["two-logits"], evalset, small_config(), tmp_path)
    ids = {m.id: m for m in result.metrics}
    for b in [f"linf-{k}" for k in LINF] + [f"l2-{L2}"]:
        assert ids[f"robust/{b}/accuracy"].reduce == "mean"
        assert ids[f"robust/{b}/balanced_accuracy"].reduce == "balanced_accuracy"
        assert ids[f"robust/{b}/sensitivity"].where == {"label": 1}
        assert ids[f"robust/{b}/specificity"].where == {"label": 0}
        assert all(ids[f"robust/{b}/{m}"].higher_is_better for m in
                   ("accuracy", "balanced_accuracy", "sensitivity", "specificity"))
    curve = result.info["curve"]
    assert [c["budget"] for c in curve] == ["linf-1", "linf-2", "linf-4", "linf-8", "l2-1.75"]
    acc = [c["robust_accuracy"] for c in curve[:4]]
    assert acc == sorted(acc, reverse=True)
    assert acc[2] == pytest.approx(1 - np.mean([b or cw for b, cw in zip(expected["linf-4"], clean_wrong)]))
    # every broken point is attributed to exactly one attack at the budget where it first broke
    assert sum(result.info["broken_by_attack"].values()) == sum(
        int((result.samples[f"robust/{c['budget']}/broken"]).sum()) for c in curve if c["budget"] in ("linf-8", "l2-1.75"))
    assert result.info["passes"]["apgd-ce"]["bwd"] > 0
