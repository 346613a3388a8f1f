"""Localisation scores of one map on the attacked images of a shard (and, v3, on the noise control).

v2 (cascade points): per metric the score on the attacked image (``adv-<attack>``) and the drop clean -
attacked (``drop-<attack>``). v3 with a noise control: the score on the attacked image, on the noise control
(``noise-<attack>``), attacked - noise (``adv_minus_noise-<attack>``: what the attack's direction adds to
mere noise) and noise - clean (``noise_minus_clean-<attack>``). Maps on the perturbed images use the clean
image's seed, so random maps and SmoothGrad noise are paired and a difference is the perturbation's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..results.metric_ids import adv_variant, attack_variant, drop_variant, reason_column
from .attacked import AttackedInputs
from .catalogue import attack_columns, column
from .config import XaiConfig
from .maps import compute_maps, for_localisation, metric_inputs
from .methods import UnsupportedMethod
from .metrics import Scores
from .selection import sub_seed


def _scores_on(name, model, images, masks, rows, cfg: XaiConfig, seed, device, n: int, missing) -> dict[str, Scores]:
    """Per under-attack metric: the scores of ``images[rows]`` spread over the shard's n rows (NaN elsewhere,
    with the reason in ``missing``)."""
    maps, _ = compute_maps(name, model, images[rows], masks[rows], cfg, sub_seed(seed, name), device)
    inputs = metric_inputs(images[rows], for_localisation(name, maps, cfg), masks[rows], model, device, cfg,
                           sub_seed(seed, name, "metrics"))
    out = {}
    for metric in cfg.under_attack.metrics:
        choice = cfg.localisation[metric]
        part = choice.metric.score(inputs, choice.params)
        values = np.full(n, np.nan)
        values[rows] = part.values
        reasons = list(missing)
        for j, r in zip(rows, part.reasons):
            reasons[j] = r
        out[metric] = Scores(values, reasons)
    return out


def _difference(a: Scores, b: Scores) -> Scores:
    """a - b per image; a NaN on either side gives NaN with that side's reason."""
    return Scores(a.values - b.values, [ra or rb for ra, rb in zip(a.reasons, b.reasons)])


def score_under_attack(
    name: str, model, adv: AttackedInputs, masks, cfg: XaiConfig, cols, seed: int, device, info: dict[str, Any]
) -> None:
    """Put the under-attack columns of map ``name`` into ``cols`` (the shard's ``battery.Columns``)."""
    tag, missing = adv.attack, adv.missing
    keep = adv.scored(cfg.under_attack.clean_fallback)
    if not keep.any():
        for col in attack_columns(name, cfg):
            cols.put(col, Scores(np.full(cols.n, np.nan), list(missing)))
        return
    rows = np.flatnonzero(keep)
    try:
        attacked = _scores_on(name, model, adv.x, masks, rows, cfg, seed, device, cols.n, missing)
        noise = None
        if adv.noise is not None:
            noise = _scores_on(name, model, adv.noise, masks, rows, cfg, seed, device, cols.n, missing)
    except UnsupportedMethod as e:
        info["unsupported"][f"{name}/{adv_variant(tag)}"] = e.reason
        for col in attack_columns(name, cfg):
            cols.missing(col, f"unsupported: {e.reason}")
        return
    for metric in cfg.under_attack.metrics:
        a = attacked[metric]
        cols.put(column(name, metric, adv_variant(tag)), a)
        clean_col = column(name, metric)
        clean = Scores(np.asarray(cols.data[clean_col], dtype=np.float64),
                       list(cols.data.get(reason_column(clean_col), [None] * cols.n)))
        if noise is None:  # v2: the drop clean - attacked
            cols.put(column(name, metric, drop_variant(tag)), _difference(clean, a))
            continue
        nz = noise[metric]
        cols.put(column(name, metric, attack_variant("noise", tag)), nz)
        cols.put(column(name, metric, attack_variant("adv_minus_noise", tag)), _difference(a, nz))
        cols.put(column(name, metric, attack_variant("noise_minus_clean", tag)), _difference(nz, clean))
