"""Explanation metrics: one contract, ``score(inputs, params) -> Scores``, one registry.

Quantus 0.6 is the definition of every metric except coverage@p (the seed code's own measure). NaN policy,
applied to every metric before it runs: an empty mask or a non-finite map gives NaN with that reason. A
constant map (all pixels equal) gives NaN in v1 (``constant_maps: nan``); in v2 (``constant_maps: score``)
the localisation metrics score it by their stated rule (an all-zero map carries no mass and selects no
pixel: 0 on relevance mass, rank accuracy, coverage and the pointing game; 0.5 on AUC), see
docs/explanations.md. A NaN that Quantus itself returns is recorded as ``undefined (Quantus returned NaN)``.

Ties (v2, ``ties: share``): a metric that takes the top k pixels, or the maximum, gives each of the tied
pixels at the threshold an equal share (the expected value under a uniformly random tie break), so no score
depends on pixel order; only pixels with positive attribution are ever selected. v1 (``ties: raster``) keeps
Quantus's / the stable argsort's order. Tie-free maps get identical numbers under both rules (tested).

Model metrics (v2) run image by image with a seed per image (``MetricInputs.seeds``) and without Quantus's
batch normalisation, so an image's score never depends on its batch-mates.

Localisation metrics call the Quantus metric's ``evaluate_batch`` directly after our own checks instead of
``__call__``: ``__call__``'s input assertion builds a Python set of every attribution value (about 1 s per
metric per 48 images on a 2-core CPU, against 0.01 s for the metric itself). The test
tests/test_explanations_metrics.py checks the two routes give the same numbers.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import quantus
import torch
from pydantic import BaseModel, ConfigDict

from ..registry import Registry
from . import fast
from .quantus_calls import QUIET, call, clipped_uniform_noise, per_image, quantus_mprt

Explain = Callable[..., np.ndarray]  # Quantus explain_func: (model, inputs, targets, **kw) -> N x 1 x H x W


class MetricParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopKParams(MetricParams):
    k: int


class PointingParams(MetricParams):
    # None: Quantus's PointingGame (v1: no tolerance, a hit when any tied maximum is in the mask).
    # An int: Zhang et al.'s rule, a hit when the maximum lies within this many canonical pixels of the mask.
    tolerance_px: int | None = None


class AnatomyParams(MetricParams):
    threshold: float  # anatomy (foreground) = canonical pixels brighter than this; the padding is exactly 0


class FaithCorrParams(MetricParams):
    nr_runs: int
    subset_size: int
    perturb_baseline: float | Literal["black", "white", "mean", "uniform"] = (
        0.0  # Quantus "black" = image minimum
    )
    softmax: bool = False


class PixelFlippingParams(MetricParams):
    features_in_step: int
    perturb_baseline: float | Literal["black", "white", "mean", "uniform"] = 0.0
    softmax: bool = True
    # v2: the curve starts at the unperturbed image and is rescaled to (f - f(all removed)) /
    # (f(clean) - f(all removed)), so curves of different models share the scale [0, 1] at the ends.
    normalised: bool = False


class MPRTParams(MetricParams):
    layer_order: Literal["top_down", "bottom_up", "independent"] = "top_down"


class MaxSensitivityParams(MetricParams):
    nr_samples: int
    lower_bound: float
    clip: bool = False  # v2: the noisy image is clipped to [0, 1], the canonical range


@dataclass
class MetricInputs:
    """Numpy, channel-first: x (N,1,H,W) float32; maps (N,1,H,W) float32 >= 0; masks (N,1,H,W) bool."""

    x: np.ndarray
    maps: np.ndarray
    masks: np.ndarray
    model: torch.nn.Module | None = None
    explain: Explain | None = None  # only for metrics that re-explain (RandomLogit, MaxSensitivity)
    device: str = "cpu"
    batch_size: int = 64
    seed: int = 0
    seeds: np.ndarray | None = None  # one seed per image (v2): model metrics then run image by image
    ties: Literal["raster", "share"] = "raster"
    constant_maps: Literal["nan", "score"] = "nan"
    # Model metrics: True runs Quantus itself (the reference) even where fast.py reproduces it batched.
    reference: bool = False
    # The explanation draws random numbers (SmoothGrad): re-explaining in other batches changes its noise.
    explain_random: bool = False

    @cached_property
    def flat_maps(self) -> np.ndarray:
        return self.maps.reshape(len(self.maps), -1)

    @cached_property
    def order(self) -> np.ndarray:
        """Pixels by decreasing attribution; ties broken by pixel index (stable), for coverage@p."""
        return np.argsort(-self.flat_maps, axis=1, kind="stable")


@dataclass
class Scores:
    values: np.ndarray  # float64 (N,)
    reasons: list[str | None] = field(default_factory=list)  # why a value is NaN, else None


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    needs_model: bool  # model-based metrics are expensive: the spec picks methods and a sample count
    needs_explain: bool  # re-explains perturbed inputs, so only attribution methods (not references)
    params: type[MetricParams]
    fn: Callable[[MetricInputs, Any], np.ndarray]
    reduce: str = "mean"  # how the per-image scores become the metric (v3 enrichment: median, heavy-tailed)

    def __reduce__(self):
        # pickled by its registry name (its fn may be a closure): a parsed XaiConfig can cross processes
        return registered_metric, (self.name,)

    def score(self, inputs: MetricInputs, params: MetricParams) -> Scores:
        allow = inputs.constant_maps == "score" and not self.needs_model
        if allow:
            # v2: a map with a NaN or infinite pixel is scored as an all-zero map (no usable evidence: 0 on
            # the mass and top-k metrics), not dropped, so NaN gradients on hard images cannot lift a mean.
            # The battery counts such maps in info.nonfinite_maps and flags the result.
            bad = ~np.isfinite(inputs.maps.reshape(len(inputs.maps), -1)).all(axis=1)
            if bad.any():
                maps = inputs.maps.copy()
                maps[bad] = 0
                inputs = dataclasses.replace(inputs, maps=maps)
        reasons = invalid_reasons(inputs.maps, inputs.masks, allow_constant=allow)
        values = np.full(len(inputs.maps), np.nan)
        ok = np.array([r is None for r in reasons], dtype=bool)
        if ok.any():
            sub = inputs if ok.all() else _subset(inputs, ok)
            values[ok] = np.asarray(self.fn(sub, params), dtype=np.float64).reshape(-1)
        for i in np.flatnonzero(ok & ~np.isfinite(values)):
            reasons[i] = "undefined (Quantus returned NaN)"
        return Scores(values, reasons)


METRICS: Registry[Metric] = Registry("explanation metric")


def registered_metric(name: str) -> Metric:
    return METRICS.get(name)


def metric(
    name: str,
    *,
    higher_is_better: bool,
    needs_model: bool = False,
    needs_explain: bool = False,
    params: type[MetricParams] = MetricParams,
    reduce: str = "mean",
):
    def add(fn):
        METRICS.register(name, Metric(name, higher_is_better, needs_model, needs_explain, params, fn, reduce))
        return fn

    return add


def invalid_reasons(maps: np.ndarray, masks: np.ndarray, *, allow_constant: bool = False) -> list[str | None]:
    flat = maps.reshape(len(maps), -1)
    reasons: list[str | None] = []
    for a, s in zip(flat, masks.reshape(len(masks), -1)):
        if not s.any():
            reasons.append("empty mask")
        elif not np.isfinite(a).all():
            reasons.append("non-finite attribution")
        elif a.min() == a.max() and not allow_constant:
            reasons.append("constant attribution (all pixels equal)")
        else:
            reasons.append(None)
    return reasons


def _subset(inputs: MetricInputs, keep: np.ndarray) -> MetricInputs:
    return dataclasses.replace(
        inputs,
        x=inputs.x[keep],
        maps=inputs.maps[keep],
        masks=inputs.masks[keep],
        seeds=None if inputs.seeds is None else np.asarray(inputs.seeds)[keep],
    )


def _per_sample_max(maps: np.ndarray) -> np.ndarray:
    # Quantus's normalise_by_max, called on one sample at a time so a sample's score never depends on its
    # batch: on a whole batch it skips normalising only when *every* map is zero, so one all-zero map among
    # others was divided by its own max of 0 and became NaN.
    return np.concatenate(
        [quantus.normalise_func.normalise_by_max(maps[i : i + 1], normalise_axes=(1, 2, 3)) for i in range(len(maps))]
    ) if len(maps) else maps


def _quantus_batch(m, inp: MetricInputs, a: np.ndarray) -> np.ndarray:
    # AttributionLocalisation divides by x_batch[2:].size (a slice of the batch: 0 for batches of <= 2)
    # for its unused weighted ratio, then warns: harmless with weighted=False, silenced here.
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = m.evaluate_batch(x_batch=inp.x, a_batch=a, s_batch=inp.masks.astype(bool))
    # PointingGame returns a bool array: cast before any NaN can be written into it.
    return np.asarray(out, dtype=float)


def _localisation(quantus_metric: Callable[[Any], Any]):
    def fn(inp: MetricInputs, p) -> np.ndarray:
        return _quantus_batch(quantus_metric(p), inp, _per_sample_max(inp.maps.astype(np.float64)))

    return fn


def topk_hits(a: np.ndarray, s: np.ndarray, k: int, ties: str = "share") -> float:
    """Mask pixels among the k highest-attributed pixels of one flat map ``a`` (mask ``s``).

    ``share``: pixels above the k-th value count fully, the pixels tied at it share the remaining places
    equally (expected hits under a random tie break); only positive attribution selects a pixel.
    ``raster``: the stable argsort's order (v1)."""
    if ties == "raster":
        top = np.argsort(-a, kind="stable")[:k]
        return float(s[top].sum())
    if k <= 0:
        return 0.0
    t = np.partition(a, len(a) - k)[len(a) - k]  # the k-th largest value
    if t <= 0:  # fewer than k positive pixels: only those are selected
        return float(s[a > 0].sum())
    above = a > t
    tied = a == t
    return float(s[above].sum() + (k - above.sum()) * s[tied].sum() / tied.sum())


def _flat(inp: MetricInputs):
    return inp.maps.reshape(len(inp.maps), -1).astype(np.float64), inp.masks.reshape(len(inp.masks), -1)


def _rank_accuracy(inp: MetricInputs, p) -> np.ndarray:
    if inp.ties == "raster":  # v1: Quantus
        return _localisation(lambda p: quantus.RelevanceRankAccuracy(**QUIET))(inp, p)
    a, s = _flat(inp)
    return np.array([topk_hits(ai, si, int(si.sum())) / si.sum() for ai, si in zip(a, s)])


def _pointing_game(inp: MetricInputs, p: PointingParams) -> np.ndarray:
    if p.tolerance_px is None:  # v1: Quantus
        return _localisation(lambda p: quantus.PointingGame(weighted=False, **QUIET))(inp, p)
    from scipy.ndimage import distance_transform_edt

    out = []
    for a, s in zip(inp.maps[:, 0].astype(np.float64), inp.masks[:, 0].astype(bool)):
        near = distance_transform_edt(~s) <= p.tolerance_px if p.tolerance_px > 0 else s
        top = a.max()
        if top <= 0:  # points nowhere: no hit
            out.append(0.0)
            continue
        peak = a == top
        out.append(float((peak & near).sum() / peak.sum()))  # tied maxima share the hit
    return np.array(out)


def anatomy_mask(x: np.ndarray, threshold: float) -> np.ndarray:
    """The anatomy (foreground): canonical pixels brighter than ``threshold``; the square padding is 0."""
    return x > threshold


def _relevance_mass(inp: MetricInputs, p) -> np.ndarray:
    a, s = _flat(inp)
    total = a.sum(axis=1)
    out = np.zeros(len(a))
    ok = total != 0
    if ok.any():  # an all-zero map carries no mass on the fracture: 0 (Quantus would divide 0 by 0)
        sub = _subset(inp, ok) if not ok.all() else inp
        out[ok] = _localisation(lambda p: quantus.RelevanceMassAccuracy(**QUIET))(sub, p)
    return out


def _auc_anatomy(inp: MetricInputs, p: AnatomyParams) -> np.ndarray:
    """Quantus's AUC over the anatomy pixels only: the black padding, never a fracture and never attributed
    by most maps, no longer counts as easy negatives."""
    m = quantus.AUC(**QUIET)
    out = []
    for x, a, s in zip(inp.x, inp.maps.astype(np.float64), inp.masks.astype(bool)):
        fg = anatomy_mask(x, p.threshold) | s  # a mask pixel always counts
        out.append(float(m.evaluate_batch(a_batch=a[fg][None], s_batch=s[fg][None])[0]))
    return np.array(out)


metric("pointing_game", higher_is_better=True, params=PointingParams)(_pointing_game)
metric("pointing_game_strict", higher_is_better=True, params=PointingParams)(_pointing_game)
metric("attribution_localisation", higher_is_better=True)(
    _localisation(lambda p: quantus.AttributionLocalisation(weighted=False, **QUIET))
)
metric("top_k_intersection", higher_is_better=True, params=TopKParams)(
    _localisation(lambda p: quantus.TopKIntersection(k=p.k, **QUIET))
)
metric("relevance_mass_accuracy", higher_is_better=True)(_relevance_mass)
metric("relevance_rank_accuracy", higher_is_better=True)(_rank_accuracy)
metric("auc", higher_is_better=True)(_localisation(lambda p: quantus.AUC(**QUIET)))
metric("auc_anatomy", higher_is_better=True, params=AnatomyParams)(_auc_anatomy)


def coverage(inp: MetricInputs, percent: float) -> np.ndarray:
    """Share of the mask covered by the top ``percent``% attributed pixels (chance: percent / 100)."""
    a, s = _flat(inp)
    k = round(s.shape[1] * percent / 100)
    if inp.ties == "raster":
        top = inp.order[:, :k]
        return np.take_along_axis(s, top, axis=1).sum(axis=1) / s.sum(axis=1)
    return np.array([topk_hits(ai, si, k) / si.sum() for ai, si in zip(a, s)])


for _p in (5, 15, 25, 50):
    metric(f"coverage_at_{_p}", higher_is_better=True)(lambda inp, params, _p=_p: coverage(inp, _p))


@metric("faithfulness_correlation", higher_is_better=True, needs_model=True, params=FaithCorrParams)
def _faithfulness_correlation(inp: MetricInputs, p: FaithCorrParams) -> np.ndarray:
    if fast.path_for("faithfulness_correlation", inp, p) == "fast":
        return fast.faithfulness_correlation(inp, p)
    m = quantus.FaithfulnessCorrelation(
        nr_runs=p.nr_runs,
        subset_size=p.subset_size,
        perturb_baseline=p.perturb_baseline,
        return_aggregate=False,
        **per_image(inp),
        **QUIET,
    )
    return np.asarray(call(m, inp, p.softmax), dtype=float)


def _forward(inp: MetricInputs, x: np.ndarray, softmax: bool) -> np.ndarray:
    with torch.no_grad():
        z = inp.model(torch.as_tensor(x, dtype=torch.float32, device=inp.device)).float()
        z = z.softmax(dim=1) if softmax else z
    return z[:, 1].cpu().double().numpy()


@metric("pixel_flipping", higher_is_better=False, needs_model=True, params=PixelFlippingParams)
def _pixel_flipping(inp: MetricInputs, p: PixelFlippingParams) -> np.ndarray:
    """Area under the curve of the fracture score as the most relevant pixels are replaced first (x axis:
    share of pixels removed, 0..1). Lower: the prediction falls faster, the map found what mattered."""
    m = quantus.PixelFlipping(
        features_in_step=p.features_in_step,
        perturb_baseline=p.perturb_baseline,
        return_auc_per_sample=False,
        **per_image(inp),
        **QUIET,
    )
    if fast.path_for("pixel_flipping", inp, p) == "fast":
        curves = fast.pixel_flipping_curves(inp, p)
    else:
        curves = np.asarray(call(m, inp, p.softmax, random=False), dtype=float)
    if p.normalised:
        if not isinstance(p.perturb_baseline, float):
            raise ValueError("pixel_flipping: normalised curves need a numeric perturb_baseline")
        clean = _forward(inp, inp.x, p.softmax)
        gone = _forward(inp, np.full_like(inp.x, p.perturb_baseline), p.softmax)
        curves = np.concatenate([clean[:, None], curves], axis=1)
        span = clean - gone
        with np.errstate(divide="ignore", invalid="ignore"):
            curves = (curves - gone[:, None]) / span[:, None]
        curves[np.abs(span) < 1e-6] = np.nan  # the score does not move when every pixel is removed
    # Quantus's calculate_auc uses np.trapz, removed in NumPy 2.x: same integral via np.trapezoid.
    return np.trapezoid(curves, dx=1.0 / max(curves.shape[1] - 1, 1), axis=1)


@metric("random_logit", higher_is_better=False, needs_model=True, needs_explain=True)
def _random_logit(inp: MetricInputs, p: MetricParams) -> np.ndarray:
    """SSIM between the map for the fracture logit and the map for the other logit: a map that does not
    change with the class explained is not explaining the class (lower is better). v1 only: on a two-logit
    model the other logit's gradient is about minus the fracture one, so abs maps score ~1 by construction."""
    m = quantus.RandomLogit(num_classes=2, seed=inp.seed % (2**31), **QUIET)
    return np.asarray(call(m, inp, False, explain=True), dtype=float)


@metric("mprt", higher_is_better=False, needs_model=True, needs_explain=True, params=MPRTParams)
def _mprt(inp: MetricInputs, p: MPRTParams) -> np.ndarray:
    """Quantus's model parameter randomisation test: Spearman correlation between the map of the trained
    model and the map of the model with every layer re-initialised (cascading from the top). A map that
    survives losing the weights is not explaining the model (lower is better)."""
    try:
        if fast.path_for("mprt", inp, p) == "fast":
            return fast.mprt(inp, p, seed=inp.seed % (2**31))
        return quantus_mprt(inp, p)
    except IndexError:  # Quantus found no module with reset_parameters() to randomise
        from .methods import UnsupportedMethod

        raise UnsupportedMethod("mprt: the model has no layer with reset_parameters() to randomise") from None


@metric(
    "max_sensitivity",
    higher_is_better=False,
    needs_model=True,
    needs_explain=True,
    params=MaxSensitivityParams,
)
def _max_sensitivity(inp: MetricInputs, p: MaxSensitivityParams) -> np.ndarray:
    if fast.path_for("max_sensitivity", inp, p) == "fast":
        return fast.max_sensitivity(inp, p, clipped_uniform_noise if p.clip else None)
    extra = {"perturb_func": clipped_uniform_noise} if p.clip else {}
    m = quantus.MaxSensitivity(
        nr_samples=p.nr_samples, lower_bound=p.lower_bound, normalise=False, **extra, **QUIET
    )
    return np.asarray(call(m, inp, False, explain=True), dtype=float)
