"""How reliable is each localisation metric? Noise resilience and reaction to randomised maps, per model and method.

    python scripts/metric_reliability.py [--models fxb-resnet10t-erm-v2,fxb-resnet10t-pgdat-v2,fxb-resnet10t-trades-v2]
        [--methods saliency,gradcam] [--data DIR] [--threads 2] [--sigmas 0,1,2,4,8,16] [--json OUT]

After MetaQuantus (Hedström et al., TMLR 2023): a metric is reliable when it is *resilient* to a minor
perturbation that should not change what the map says, and *reacts* to a disruptive one that destroys it. For
every localisation metric of the v3 spec (``full`` preset, at its common smoothing scale) on the fractured
images of the data (default: the embedded subset, 48 images):

- **noise resilience (NR)**: the image plus uniform noise of +-2/255 (half the attack budget; images whose
  prediction the noise changes are left out), maps recomputed; NR = Spearman correlation over images between
  the clean and the noisy scores (1: the metric orders the images the same way), and the mean |change|
  relative to the scores' spread over images (their SD; 0: no change);
- **reaction to randomisation (AR)**, two ways: (a) *shuffled map*: the map's own pixel values at random
  positions (same value distribution, no spatial information); (b) *randomised model*: the map of the model
  with every parameter re-initialised (MPRT's end point). AR = the paired effect size d_z of the drop
  (mean of clean - randomised over its SD) and the share of images the randomised map scores lower.
  A metric that does not react to a map with no spatial information measures something else.

Also the **scale dependence**: each metric's mean on the clean maps blurred at each ``--sigmas`` (Gaussian std,
canonical px; the v3 spec fixes 4). Seeds are fixed (noise, shuffles, re-initialisation): reruns agree.
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from fxbench import decision
from fxbench.api import load_submission
from fxbench.data import load_arrays
from fxbench.definition import load_definition
from fxbench.explanations import parse_config
from fxbench.explanations.maps import compute_maps, for_localisation, metric_inputs, smooth
from scipy.stats import spearmanr

NOISE = 2 / 255


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy with every module that has ``reset_parameters`` re-initialised (fixed seed)."""
    m = copy.deepcopy(model)
    torch.manual_seed(seed)
    for mod in m.modules():
        if hasattr(mod, "reset_parameters") and mod is not m:
            mod.reset_parameters()
    return m.eval()


def shuffled(maps: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    flat = maps.reshape(len(maps), -1)
    return torch.stack([f[torch.randperm(f.numel(), generator=g)] for f in flat]).reshape(maps.shape)


def scores(name, maps, x, masks, model, cfg, metrics, *, blur=True) -> dict[str, np.ndarray]:
    loc = for_localisation(name, maps, cfg) if blur else maps
    inp = metric_inputs(x, loc, masks, model, torch.device("cpu"), cfg, 0)
    return {m: cfg.localisation[m].metric.score(inp, cfg.localisation[m].params).values for m in metrics}


def d_z(a: np.ndarray, b: np.ndarray) -> float:
    d = a - b
    d = d[np.isfinite(d)]
    return float(d.mean() / d.std(ddof=1)) if d.size > 1 and d.std(ddof=1) > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="fxb-resnet10t-erm-v2,fxb-resnet10t-pgdat-v2,fxb-resnet10t-trades-v2")
    ap.add_argument("--methods", default="saliency,gradcam")
    ap.add_argument("--data", default=None, help="prepared dataset (default: fxbench's, else the embedded subset)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--sigmas", default="0,1,2,4,8,16")
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = parse_config(load_definition("v3").battery_config("explanations", "full"))
    metrics = list(cfg.localisation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = load_arrays(args.data)
    rows = (ev.y == 1).nonzero().flatten()
    x, masks = ev.x[rows].float(), ev.masks[rows].bool()
    g = torch.Generator().manual_seed(0)
    noisy = (x + NOISE * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
    print(f"data: {ev.dataset.name}, {len(rows)} fractured images; metrics at the v3 common scale "
          f"(sigma {cfg.smoothing.sigma_px:g} px)")
    out: dict = {"data": ev.dataset.name, "n_images": len(rows), "models": {}}
    for sid in args.models.split(","):
        model = load_submission(sid).model.eval()
        rand_model = randomised(model, seed=1)
        with torch.no_grad():
            same = decision.predict(model(x)) == decision.predict(model(noisy))
        out["models"][sid] = {}
        for name in args.methods.split(","):
            clean = compute_maps(name, model, x, masks, cfg, 0, torch.device("cpu"))[0]
            s0 = scores(name, clean, x, masks, model, cfg, metrics)
            sn = scores(name, compute_maps(name, model, noisy, masks, cfg, 0, torch.device("cpu"))[0], noisy, masks,
                        model, cfg, metrics)
            ss = scores(name, shuffled(clean, seed=2), x, masks, model, cfg, metrics)
            sr = scores(name, compute_maps(name, rand_model, x, masks, cfg, 0, torch.device("cpu"))[0], x, masks,
                        rand_model, cfg, metrics)
            rec = {}
            keep = same.numpy()
            for m in metrics:
                a, b = s0[m][keep], sn[m][keep]
                sd = float(np.nanstd(s0[m], ddof=1))
                rec[m] = {
                    "clean_mean": float(np.nanmean(s0[m])),
                    "nr_spearman": float(spearmanr(a, b, nan_policy="omit").statistic),
                    "nr_mean_change_over_sd": float(np.nanmean(np.abs(a - b)) / sd) if sd > 0 else float("nan"),
                    "ar_shuffled_dz": d_z(s0[m], ss[m]), "ar_shuffled_share": float(np.nanmean(s0[m] > ss[m])),
                    "ar_random_model_dz": d_z(s0[m], sr[m]), "ar_random_model_share": float(np.nanmean(s0[m] > sr[m])),
                    "shuffled_mean": float(np.nanmean(ss[m])), "random_model_mean": float(np.nanmean(sr[m])),
                }
            scale = {}
            for sigma in (float(v) for v in args.sigmas.split(",")):
                blurred = smooth(clean, sigma) if sigma > 0 else clean
                sc = scores(name, blurred, x, masks, model, cfg, metrics, blur=False)
                scale[f"{sigma:g}"] = {m: float(np.nanmean(v)) for m, v in sc.items()}
            out["models"][sid][name] = {"n_noise_kept": int(keep.sum()), "metrics": rec, "scale": scale}
            print(f"\n{sid} / {name} ({int(keep.sum())} of {len(keep)} images keep their prediction under the noise)")
            print("| metric | clean | NR: Spearman | NR: mean change / SD | AR shuffled: d_z (share lower) "
                  "| AR random model: d_z (share lower) |")
            print("| --- | --- | --- | --- | --- | --- |")
            for m, r in rec.items():
                print(f"| {m} | {r['clean_mean']:.3f} | {r['nr_spearman']:.2f} | {r['nr_mean_change_over_sd']:.2f} "
                      f"| {r['ar_shuffled_dz']:.2f} ({r['ar_shuffled_share']:.2f}) "
                      f"| {r['ar_random_model_dz']:.2f} ({r['ar_random_model_share']:.2f}) |")
            print("| scale (sigma px) | " + " | ".join(metrics) + " |")
            print("| --- |" + " --- |" * len(metrics))
            for sigma, vals in scale.items():
                print(f"| {sigma} | " + " | ".join(f"{vals[m]:.3f}" for m in metrics) + " |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
