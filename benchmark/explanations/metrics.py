"""Explanation metrics: one contract, ``score(inputs, params) -> Scores``, one registry.

Quantus 0.6 is the definition of every metric except coverage@p (the seed code's own measure). NaN policy,
applied to every metric before it runs: an empty mask, a non-finite map or a constant map (all pixels equal:
it carries no ranking, and Quantus would either assert or score it as a trivial hit) gives NaN with that
reason. A NaN that Quantus itself returns is recorded as ``undefined (Quantus returned NaN)``.

Localisation metrics call the Quantus metric's ``evaluate_batch`` directly after our own checks instead of
``__call__``: ``__call__``'s input assertion builds a Python set of every attribution value (about 1 s per
metric per 48 images on a 2-core CPU, against 0.01 s for the metric itself). The test
tests/test_explanations_metrics.py checks the two routes give the same numbers.
"""

from __future__ import annotations

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

Explain = Callable[..., np.ndarray]  # Quantus explain_func: (model, inputs, targets, **kw) -> N x 1 x H x W


class MetricParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopKParams(MetricParams):
    k: int


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


class MaxSensitivityParams(MetricParams):
    nr_samples: int
    lower_bound: float


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

    def score(self, inputs: MetricInputs, params: MetricParams) -> Scores:
        reasons = invalid_reasons(inputs.maps, inputs.masks)
        values = np.full(len(inputs.maps), np.nan)
        ok = np.array([r is None for r in reasons], dtype=bool)
        if ok.any():
            sub = inputs if ok.all() else _subset(inputs, ok)
            values[ok] = np.asarray(self.fn(sub, params), dtype=np.float64).reshape(-1)
        for i in np.flatnonzero(ok & ~np.isfinite(values)):
            reasons[i] = "undefined (Quantus returned NaN)"
        return Scores(values, reasons)


METRICS: Registry[Metric] = Registry("explanation metric")


def metric(
    name: str,
    *,
    higher_is_better: bool,
    needs_model: bool = False,
    needs_explain: bool = False,
    params: type[MetricParams] = MetricParams,
):
    def add(fn):
        METRICS.register(name, Metric(name, higher_is_better, needs_model, needs_explain, params, fn))
        return fn

    return add


def invalid_reasons(maps: np.ndarray, masks: np.ndarray) -> list[str | None]:
    flat = maps.reshape(len(maps), -1)
    reasons: list[str | None] = []
    for a, s in zip(flat, masks.reshape(len(masks), -1)):
        if not s.any():
            reasons.append("empty mask")
        elif not np.isfinite(a).all():
            reasons.append("non-finite attribution")
        elif a.min() == a.max():
            reasons.append("constant attribution (all pixels equal)")
        else:
            reasons.append(None)
    return reasons


def _subset(inputs: MetricInputs, keep: np.ndarray) -> MetricInputs:
    return MetricInputs(
        inputs.x[keep],
        inputs.maps[keep],
        inputs.masks[keep],
        inputs.model,
        inputs.explain,
        inputs.device,
        inputs.batch_size,
        inputs.seed,
    )


def _per_sample_max(maps: np.ndarray) -> np.ndarray:
    # What Quantus's normalise_by_max does, per sample, so a sample's score never depends on its batch.
    return quantus.normalise_func.normalise_by_max(maps, normalise_axes=(1, 2, 3))


def _localisation(quantus_metric: Callable[[Any], Any]):
    def fn(inp: MetricInputs, p) -> np.ndarray:
        m = quantus_metric(p)
        a = _per_sample_max(inp.maps.astype(np.float64))
        # AttributionLocalisation divides by x_batch[2:].size (a slice of the batch: 0 for batches of <= 2)
        # for its unused weighted ratio, then warns: harmless with weighted=False, silenced here.
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = m.evaluate_batch(x_batch=inp.x, a_batch=a, s_batch=inp.masks.astype(bool))
        # PointingGame returns a bool array: cast before any NaN can be written into it.
        return np.asarray(out, dtype=float)

    return fn


_quiet = {"disable_warnings": True}
metric("pointing_game", higher_is_better=True)(
    _localisation(lambda p: quantus.PointingGame(weighted=False, **_quiet))
)
metric("attribution_localisation", higher_is_better=True)(
    _localisation(lambda p: quantus.AttributionLocalisation(weighted=False, **_quiet))
)
metric("top_k_intersection", higher_is_better=True, params=TopKParams)(
    _localisation(lambda p: quantus.TopKIntersection(k=p.k, **_quiet))
)
metric("relevance_mass_accuracy", higher_is_better=True)(
    _localisation(lambda p: quantus.RelevanceMassAccuracy(**_quiet))
)
metric("relevance_rank_accuracy", higher_is_better=True)(
    _localisation(lambda p: quantus.RelevanceRankAccuracy(**_quiet))
)
metric("auc", higher_is_better=True)(_localisation(lambda p: quantus.AUC(**_quiet)))


def coverage(inp: MetricInputs, percent: float) -> np.ndarray:
    """Share of the mask covered by the top ``percent``% attributed pixels (chance: percent / 100)."""
    flat_masks = inp.masks.reshape(len(inp.masks), -1)
    k = round(flat_masks.shape[1] * percent / 100)
    top = inp.order[:, :k]
    hits = np.take_along_axis(flat_masks, top, axis=1).sum(axis=1)
    return hits / flat_masks.sum(axis=1)


for _p in (5, 15, 25, 50):
    metric(f"coverage_at_{_p}", higher_is_better=True)(lambda inp, params, _p=_p: coverage(inp, _p))


def _call(m, inp: MetricInputs, softmax: bool | None, explain: bool = False) -> list:
    np.random.seed(inp.seed)  # Quantus perturbs with NumPy's global generator
    torch.manual_seed(inp.seed)  # SmoothGrad noise when re-explaining
    kwargs = {"explain_func": inp.explain, "explain_func_kwargs": {}} if explain else {}
    return m(
        model=inp.model,
        x_batch=inp.x,
        y_batch=np.ones(len(inp.x), dtype=np.int64),
        a_batch=inp.maps,
        channel_first=True,
        softmax=softmax,
        device=inp.device,
        batch_size=inp.batch_size,
        **kwargs,
    )


@metric("faithfulness_correlation", higher_is_better=True, needs_model=True, params=FaithCorrParams)
def _faithfulness_correlation(inp: MetricInputs, p: FaithCorrParams) -> np.ndarray:
    m = quantus.FaithfulnessCorrelation(
        nr_runs=p.nr_runs,
        subset_size=p.subset_size,
        perturb_baseline=p.perturb_baseline,
        return_aggregate=False,
        **_quiet,
    )
    return np.asarray(_call(m, inp, p.softmax), dtype=float)


@metric("pixel_flipping", higher_is_better=False, needs_model=True, params=PixelFlippingParams)
def _pixel_flipping(inp: MetricInputs, p: PixelFlippingParams) -> np.ndarray:
    """Area under the curve of the fracture score as the most relevant pixels are replaced first (x axis:
    share of pixels removed, 0..1). Lower: the prediction falls faster, the map found what mattered."""
    m = quantus.PixelFlipping(
        features_in_step=p.features_in_step,
        perturb_baseline=p.perturb_baseline,
        return_auc_per_sample=False,
        **_quiet,
    )
    curves = np.asarray(_call(m, inp, p.softmax), dtype=float)
    # Quantus's calculate_auc uses np.trapz, removed in NumPy 2.x: same integral via np.trapezoid.
    return np.trapezoid(curves, dx=1.0 / max(curves.shape[1] - 1, 1), axis=1)


@metric("random_logit", higher_is_better=False, needs_model=True, needs_explain=True)
def _random_logit(inp: MetricInputs, p: MetricParams) -> np.ndarray:
    """SSIM between the map for the fracture logit and the map for the other logit: a map that does not
    change with the class explained is not explaining the class (lower is better)."""
    m = quantus.RandomLogit(num_classes=2, seed=inp.seed % (2**31), **_quiet)
    return np.asarray(_call(m, inp, False, explain=True), dtype=float)


@metric(
    "max_sensitivity",
    higher_is_better=False,
    needs_model=True,
    needs_explain=True,
    params=MaxSensitivityParams,
)
def _max_sensitivity(inp: MetricInputs, p: MaxSensitivityParams) -> np.ndarray:
    m = quantus.MaxSensitivity(nr_samples=p.nr_samples, lower_bound=p.lower_bound, normalise=False, **_quiet)
    return np.asarray(_call(m, inp, False, explain=True), dtype=float)
