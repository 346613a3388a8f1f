"""v3 localisation metrics that a position prior cannot win: the shuffled AUC (the primary endpoint) and the
enrichment of relevance mass. Registered in ``metrics.METRICS`` like every other metric.

**Shuffled AUC** (after Borji et al.'s shuffled AUC for saliency maps). The AUC of v1/v2 asks whether the map
ranks this image's fracture pixels above its other pixels; because fractures lie near the centre of the frame
(docs/explanations.md), a map that knows only that wins. Here the negatives are not this image's other pixels
but *the places where fractures lie in other images*: the training split's fracture density (``prior.py``),
each pixel weighted by it. Per image, with positives P = the mask's pixels (equal weight), d the prior::

    sAUC = (1 / |P|) sum_{p in P} sum_q d(q) (1[a_p > a_q] + 1/2 1[a_p = a_q])

A map that depends on position alone (any function of the pixel's coordinates, the same on every image) scores
exactly 1/2 on average over images whose masks follow the prior: summing over images turns the positives'
distribution into the prior itself, and sum_{p,q} d(p) d(q) K(f_p, f_q) = 1/2 for any f since K(u, v) +
K(v, u) = 1 (tests/test_v3_xai_endpoint.py checks it with a Gaussian that beats v2's AUC-in-anatomy). Every
constant map, the all-zero one included, scores exactly 1/2. Rank-based: unchanged by any increasing transform
of the map. Per image it depends on that image's map and mask and on the committed prior only.

**Enrichment** = (map mass inside the mask / total mass) / (mask pixels / all pixels): how many times more
mass the mask holds than a uniform map puts there. 1 = chance (the uniform map, exactly), the mask itself
1 / (mask share); an all-zero map 0 (no mass, as relevance mass). Heavy-tailed (a small mask can give
hundreds), so the metric is the **median** over images (``reduce="median"``).
"""

from __future__ import annotations

import numpy as np

from .metrics import MetricInputs, MetricParams, metric
from .prior import PriorParams, prior_of


class ShuffledAucParams(MetricParams):
    prior: PriorParams  # the negatives' density: the training split's fracture pixels


def shuffled_auc(a: np.ndarray, s: np.ndarray, d: np.ndarray) -> float:
    """One image: flat map ``a``, flat bool mask ``s``, flat negative density ``d`` (sums to 1)."""
    values, inv = np.unique(a, return_inverse=True)
    w = np.bincount(inv.ravel(), weights=d, minlength=len(values))
    below = np.cumsum(w) - w  # density strictly below each distinct value
    score = (below + 0.5 * w) / w.sum()  # ties count half; a constant map: exactly 1/2
    return float(score[inv.ravel()[s]].mean())


def enrichment(a: np.ndarray, s: np.ndarray) -> float:
    """One image: flat non-negative map ``a``, flat bool mask ``s``."""
    total = a.sum()
    if total <= 0:
        return 0.0  # no mass, none on the fracture
    return float((a[s].sum() / total) / s.mean())


def _flat(inp: MetricInputs) -> tuple[np.ndarray, np.ndarray]:
    n = len(inp.maps)
    return inp.maps.reshape(n, -1).astype(np.float64), inp.masks.reshape(n, -1).astype(bool)


@metric("shuffled_auc", higher_is_better=True, params=ShuffledAucParams)
def _shuffled_auc(inp: MetricInputs, p: ShuffledAucParams) -> np.ndarray:
    d = prior_of(p.prior).ravel()
    a, s = _flat(inp)
    if a.shape[1] != d.size:
        raise ValueError(f"shuffled_auc: maps of {a.shape[1]} pixels, prior of {d.size}")
    return np.array([shuffled_auc(ai, si, d) for ai, si in zip(a, s)])


@metric("enrichment", higher_is_better=True, reduce="median")
def _enrichment(inp: MetricInputs, p: MetricParams) -> np.ndarray:
    a, s = _flat(inp)
    return np.array([enrichment(ai, si) for ai, si in zip(a, s)])
