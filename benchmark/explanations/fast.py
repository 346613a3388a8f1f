"""Batched torch paths for the model-querying metrics; Quantus 0.6 stays the definition and the reference.

Quantus evaluates FaithfulnessCorrelation and PixelFlipping one perturbation at a time (v2 also one image at
a time, each with its own seed), MaxSensitivity one noisy copy at a time and MPRT with a wasted
re-explanation of the trained model. The functions here compute the same per-image values from the same
inputs, with every perturbed copy of a batch evaluated in large forward passes on the model's device:

- the random draws are Quantus's own, made the same way from the same seed (``np.random.seed(seed)`` then
  ``np.random.choice`` / the metric's own ``perturb_func``), so the subsets and the noise are identical by
  construction, not by luck; the draws of different images run in threads (NumPy's legacy generator does
  the shuffle without the GIL), overlapping the device's work;
- the perturbation, the similarity and the norms are Quantus's (the metric object is built with the same
  parameters and its ``perturb_func`` / ``similarity_func`` / ``norm_*`` are called), only the loop over
  forward passes is replaced; PixelFlipping takes its order from the same ``np.argsort`` call, so ties fall
  the same way;
- numbers differ from Quantus's only where a batched float32 forward pass differs from a one-image one in
  the last bits (tests/test_explanations_fast.py states the tolerance).

A metric runs here only where this equality holds: v2 (per-image seeds, no normalisation across the batch),
a numeric perturbation baseline, and for MaxSensitivity an explanation that draws no random numbers
(SmoothGrad's noise would depend on the batch). Everything else, or ``FXBENCH_XAI_METRICS=quantus``, runs
Quantus itself; the battery records which path ran per map and metric (``info.metric_paths``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import quantus
import torch
from quantus.helpers import asserts, utils

# Perturbed copies per forward pass: ``fxbench.models.device`` owns the sizes (32 on the CPU, 1024 on CUDA,
# halved on out-of-memory), so the run's model check covers the batch size this path uses.
from ..models.device import forward_batch_size
from .quantus_calls import quantus_mprt

PATH_ENV = "FXBENCH_XAI_METRICS"  # "fast" (default) or "quantus": run the reference library itself
FAST_METRICS = ("faithfulness_correlation", "pixel_flipping", "max_sensitivity", "mprt")



def requested_path() -> str:
    v = os.environ.get(PATH_ENV, "fast").strip().lower() or "fast"
    if v not in ("fast", "quantus"):
        from ..errors import FxbenchError

        raise FxbenchError(f"{PATH_ENV}={v!r}: use 'fast' or 'quantus'")
    return v


def path_for(metric: str, inp, params) -> str:
    """``fast`` where this module reproduces Quantus for these inputs, else ``quantus``."""
    if metric not in FAST_METRICS or inp.reference or inp.seeds is None:
        return "quantus"  # v1: one seed per batch and Quantus's batch normalisation: left to Quantus
    if metric in ("faithfulness_correlation", "pixel_flipping"):
        b = params.perturb_baseline
        return "fast" if isinstance(b, (int, float)) and not isinstance(b, bool) else "quantus"
    if metric == "max_sensitivity":
        return "quantus" if inp.explain_random else "fast"
    return "fast"


# -- forward passes ----------------------------------------------------------------------------------------


class _Predictor:
    """Quantus's prediction model (its softmax rule: ``get_softmax_arg_model``), column ``target`` of its
    output as float32 numpy, over batches of perturbed copies; halves the batch on CUDA out-of-memory."""

    def __init__(self, model: torch.nn.Module, *, softmax: bool, device: str, target: int = 1):
        wrapped = utils.get_wrapped_model(model=model, channel_first=True, softmax=softmax, device=device)
        if wrapped.model.training:
            raise AttributeError("Torch model needs to be in the evaluation mode.")  # as Quantus
        self.net = wrapped.get_softmax_arg_model()
        self.device = torch.device(device)
        self.batch = forward_batch_size(self.device)
        self.target = target
        self.passes = 0

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        """x: M x C x H x W float32 on the device -> M float32 (the target column)."""
        out, i = [], 0
        with torch.no_grad():
            while i < len(x):
                try:
                    z = self.net(x[i : i + self.batch])
                except torch.OutOfMemoryError:
                    if self.device.type != "cuda" or self.batch == 1:
                        raise
                    torch.cuda.empty_cache()
                    self.batch //= 2
                    continue
                out.append(z[:, self.target].float().cpu())
                self.passes += len(z)
                i += self.batch
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def _pool(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, min(n, os.cpu_count() or 1, 16)))


# -- FaithfulnessCorrelation -------------------------------------------------------------------------------


def _subsets(seed: int, n_features: int, nr_runs: int, subset_size: int) -> np.ndarray:
    """Quantus's draws for one image: ``np.random.seed(seed)`` then ``nr_runs`` x ``np.random.choice``.
    A private RandomState seeded alike gives the same stream (and lets images draw in parallel)."""
    rs = np.random.RandomState(seed % (2**32))
    return np.stack([rs.choice(n_features, subset_size, replace=False) for _ in range(nr_runs)])


def faithfulness_correlation(inp, p) -> np.ndarray:
    """Quantus.FaithfulnessCorrelation(nr_runs, subset_size, perturb_baseline, normalise=False, abs=False)
    called image by image with ``np.random.seed(seed_i)``: Pearson correlation, over the runs, between the
    attribution summed on a random subset and the drop of the target output when the subset is replaced."""
    x, a = inp.x, inp.maps
    asserts.assert_value_smaller_than_input_size(x=x, value=p.subset_size, value_name="subset_size")
    m = quantus.FaithfulnessCorrelation(
        nr_runs=p.nr_runs, subset_size=p.subset_size, perturb_baseline=p.perturb_baseline,
        normalise=False, abs=False, return_aggregate=False, disable_warnings=True,
    )
    n = len(x)
    a = np.broadcast_to(utils.expand_attribution_channel(a, x), x.shape)
    for i in range(n):
        asserts.assert_attributions(x_batch=x[i : i + 1], a_batch=a[i : i + 1])
    a_flat = a.reshape(n, -1)
    n_feat = a_flat.shape[1]
    pred = _Predictor(inp.model, softmax=p.softmax, device=inp.device)
    device = pred.device
    xf = torch.as_tensor(x.reshape(n, -1), dtype=torch.float32, device=device)
    y = pred(xf.reshape(x.shape))
    base = float(np.float32(p.perturb_baseline))
    runs = p.nr_runs
    per_pass = max(1, pred.batch // runs)  # images whose runs share a forward pass
    out = np.full(n, np.nan)
    with _pool(n) as pool:
        draws = [pool.submit(_subsets, int(s), n_feat, runs, p.subset_size) for s in inp.seeds]
        for sl in _chunks(n, per_pass):
            idx = np.stack([draws[i].result() for i in range(sl.start, sl.stop)])  # k x R x S
            k = sl.stop - sl.start
            xs = xf[sl].repeat_interleave(runs, dim=0)  # (k R) x P, image-major
            xs.scatter_(1, torch.as_tensor(idx.reshape(k * runs, -1), device=device), base)
            y_pert = pred(xs.reshape(k * runs, *x.shape[1:])).reshape(k, runs)
            for j, i in enumerate(range(sl.start, sl.stop)):
                deltas = (y[i : i + 1, None] - y_pert[j][None]).astype(np.float32)  # 1 x R, float32 as Quantus
                sums = a_flat[i][idx[j]].sum(axis=-1)[None]  # 1 x R
                out[i] = np.asarray(m.similarity_func(a=sums, b=deltas, batched=True), dtype=float)[0]
    return out


# -- PixelFlipping -----------------------------------------------------------------------------------------


def pixel_flipping_curves(inp, p) -> np.ndarray:
    """Quantus.PixelFlipping(features_in_step, perturb_baseline, normalise=False, abs=False) curves: the
    target output after each step of replacing the most relevant pixels first (Quantus's argsort order)."""
    x, a = inp.x, inp.maps
    asserts.assert_features_in_step(features_in_step=p.features_in_step, input_shape=x.shape[2:])
    n = len(x)
    a = np.broadcast_to(utils.expand_attribution_channel(a, x), x.shape)
    for i in range(n):
        asserts.assert_attributions(x_batch=x[i : i + 1], a_batch=a[i : i + 1])
    a_flat = a.reshape(n, -1)
    n_feat = a_flat.shape[1]
    order = np.argsort(-a_flat, axis=1)  # Quantus's call: the same (unstable) sort, the same tie order
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n_feat)[None].repeat(n, 0), axis=1)
    steps = math.ceil(n_feat / p.features_in_step)
    pred = _Predictor(inp.model, softmax=p.softmax, device=inp.device)
    device = pred.device
    xf = torch.as_tensor(x.reshape(n, -1), dtype=torch.float32, device=device)
    rk = torch.as_tensor(rank, device=device)
    # step s replaces the pixels of rank < (s + 1) * features_in_step (cumulative, as Quantus's loop)
    limits = torch.arange(1, steps + 1, device=device) * p.features_in_step
    base = torch.tensor(float(np.float32(p.perturb_baseline)), dtype=torch.float32, device=device)
    curves = np.empty((n, steps), dtype=np.float32)
    pairs = [(i, s) for s in range(steps) for i in range(n)]  # step-major, as Quantus's loop batches them
    for sl in _chunks(len(pairs), pred.batch):
        ii = torch.as_tensor([pairs[q][0] for q in range(sl.start, sl.stop)], device=device)
        ss = torch.as_tensor([pairs[q][1] for q in range(sl.start, sl.stop)], device=device)
        xs = torch.where(rk[ii] < limits[ss][:, None], base, xf[ii])
        v = pred(xs.reshape(len(ii), *x.shape[1:]))
        for q, val in zip(range(sl.start, sl.stop), v):
            curves[pairs[q]] = val
    return curves.astype(float)


# -- MaxSensitivity ----------------------------------------------------------------------------------------


def max_sensitivity(inp, p, perturb_func: Callable | None) -> np.ndarray:
    """Quantus.MaxSensitivity(nr_samples, lower_bound, normalise=False[, perturb_func]) called image by image
    with ``np.random.seed(seed_i)``: the noise draws are Quantus's (its perturb_func, in its order); all noisy
    copies are then explained in large batches (only for explanations that draw no random numbers)."""
    extra = {"perturb_func": perturb_func} if perturb_func is not None else {}
    m = quantus.MaxSensitivity(
        nr_samples=p.nr_samples, lower_bound=p.lower_bound, normalise=False, disable_warnings=True, **extra
    )
    asserts.assert_explain_func(explain_func=inp.explain)
    x, a = inp.x, utils.expand_attribution_channel(inp.maps, inp.x)
    n, ns = len(x), p.nr_samples
    for i in range(n):  # Quantus's preprocessing of each one-image call
        asserts.assert_attributions(x_batch=x[i : i + 1], a_batch=a[i : i + 1])
    out = np.full(n, np.nan)
    per_call = max(1, 256 // ns)  # images whose noisy copies are explained together (bounds host memory)
    state = np.random.get_state()
    try:
        for sl in _chunks(n, per_call):
            noisy = []
            for i in range(sl.start, sl.stop):
                np.random.seed(int(inp.seeds[i]) % (2**32))
                xi = x[i : i + 1]
                flat = xi.reshape(1, -1)
                idx = np.tile(np.arange(0, xi[0].size), (1, 1))
                noisy += [m.perturb_func(arr=flat, indices=idx).reshape(xi.shape) for _ in range(ns)]
            xs = np.concatenate(noisy)
            targets = np.ones(len(xs), dtype=np.int64)
            maps = inp.explain(model=inp.model, inputs=xs, targets=targets, device=inp.device)
            maps = utils.expand_attribution_channel(np.asarray(maps), xs)
            for j, i in enumerate(range(sl.start, sl.stop)):
                a_i = a[i : i + 1].reshape(1, -1)
                sims = np.full((1, ns), np.nan)
                for k in range(ns):
                    ak = maps[j * ns + k : j * ns + k + 1]
                    asserts.assert_attributions(x_batch=xs[j * ns + k : j * ns + k + 1], a_batch=ak)
                    d = m.similarity_func(a=a_i, b=ak.reshape(1, -1))
                    sims[:, k] = m.norm_numerator(a=d) / m.norm_denominator(a=a_i)
                out[i] = m.max_func(sims, axis=1)[0]
    finally:
        np.random.set_state(state)
    return out


# -- MPRT --------------------------------------------------------------------------------------------------


def mprt(inp, p, seed: int) -> np.ndarray:
    """Quantus.MPRT(layer_order, seed, skip_layers=True, return_last_correlation=True, abs=False,
    normalise=False): the similarity between the given maps and the maps of the fully randomised model
    (Quantus's own layer generator, so the same weights). Quantus also re-explains the trained model, a
    result ``return_last_correlation`` throws away: skipped here (with two or more layers the generator
    re-seeds torch before each layer, so the randomised model's explanation sees the same RNG state)."""
    m = quantus.MPRT(
        layer_order=p.layer_order, seed=seed, skip_layers=True, return_last_correlation=True,
        abs=False, normalise=False, disable_warnings=True,
    )
    asserts.assert_explain_func(explain_func=inp.explain)
    wrapped = utils.get_wrapped_model(model=inp.model, channel_first=True, softmax=False, device=inp.device)
    n_layers = wrapped.random_layer_generator_length
    if n_layers == 0:
        raise IndexError("no layer with reset_parameters()")  # as Quantus (the caller reports it)
    if n_layers == 1 and inp.explain_random:  # the RNG would run on from the skipped explanation
        return quantus_mprt(inp, p)
    last = None
    for _, randomised in wrapped.get_random_layer_generator(order=m.layer_order, seed=m.seed):
        last = randomised  # the same model object, one more layer reset each time: all of them at the end
    x, a = inp.x, utils.expand_attribution_channel(inp.maps, inp.x)
    asserts.assert_attributions(x_batch=x, a_batch=a)  # Quantus's preprocessing of the (one) call
    y = np.ones(len(x), dtype=np.int64)
    out: list[float] = []
    bs = inp.batch_size  # Quantus's chunks: SmoothGrad's noise stream depends on them
    for sl in _chunks(len(x), bs):
        ar = inp.explain(model=last, inputs=x[sl], targets=y[sl], device=inp.device)
        ar = utils.expand_attribution_channel(np.asarray(ar), x[sl])
        asserts.assert_attributions(x_batch=x[sl], a_batch=ar)
        k = sl.stop - sl.start
        s = m.similarity_func(a[sl].reshape(k, -1), ar.reshape(k, -1), batched=True)
        out += [float(v) for v in np.asarray(s).tolist()]
    return np.asarray(out, dtype=float)
