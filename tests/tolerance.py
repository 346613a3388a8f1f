"""Float32 tolerances derived from the arithmetic, not from one machine's observed difference.

Two kernels that add the same n float32 terms in different orders (another CPU's SIMD width, MKL/oneDNN
blocking chosen by the batch size, a reduction split over threads) each stay within gamma_(n-1) * sum|terms|
of the exact sum (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., section 4.2: recursive
summation; pairwise and blocked orders are tighter), with gamma_k = k u / (1 - k u) and u = 2**-24 the unit
roundoff of float32 (half its machine epsilon 2**-23). Two such orders therefore differ by at most twice that.

Where a comparison is instead exact (the same kernel on the same shapes, so the same order), the test says so
and compares with torch.equal / ==, not with a tolerance; ``PerImage`` makes a model's kernels the same for an
image whatever its batch.
"""

from __future__ import annotations

import torch

U32 = 2.0**-24  # float32 unit roundoff: |fl(a op b) - (a op b)| <= U32 |a op b|


def gamma(k: int, u: float = U32) -> float:
    if k * u >= 1:
        raise ValueError(f"gamma_{k} undefined in this precision (k u >= 1)")
    return k * u / (1 - k * u)


def fp32_sum_tol(n_terms: int, abs_sum: float) -> float:
    """Largest difference between two float32 evaluation orders of one sum of ``n_terms`` terms whose
    absolute values add up to ``abs_sum`` (for a dot product: sum |a_i b_i|): 2 gamma_(n-1) abs_sum."""
    return 2.0 * gamma(max(n_terms - 1, 0)) * abs_sum


def numpy_pairwise_depth(n: int) -> int:
    """Most additions any one term goes through in NumPy's float reduction along a contiguous axis
    (numpy/_core/src/umath/loops_utils.h.src, pairwise_sum): below 8 terms a plain loop; up to 128 terms
    eight running sums (n/8 - 1 additions each), combined in 3 levels, then the n % 8 leftovers one by one;
    above, the two halves (the first rounded down to a multiple of 8) summed alike and added."""
    if n < 8:
        return max(n - 1, 0)
    if n <= 128:
        return (n // 8 - 1) + 3 + n % 8
    half = n // 2
    half -= half % 8
    return 1 + max(numpy_pairwise_depth(half), numpy_pairwise_depth(n - half))


def numpy_fp32_ratio_rtol(n_terms: int) -> float:
    """Relative error of a ratio of two float32 NumPy sums of non-negative terms (each <= gamma_depth
    relative, the division one rounding more) against the same ratio in float64, plus one rounding per term
    when the terms were first scaled in float32 (a common factor, up to u on each sum)."""
    return 2 * gamma(numpy_pairwise_depth(n_terms)) + 3 * U32


class PerImage(torch.nn.Module):
    """``model`` evaluated one image at a time: an image's outputs and input gradient then come from the
    same kernels in the same order whichever batch it arrives in. Otherwise a batch-size-dependent kernel
    (MKL/oneDNN on another CPU) changes the summation order, and through a ReLU's or max-pool's discrete
    choices a gradient can move by far more than rounding (measured: 3% of an input gradient of tests'
    tiny_timm at one integrated-gradients step with oneDNN off). For tests whose claim is "does not depend
    on the batch" or "equals the reference, which groups the passes otherwise": they can then compare bit
    for bit on any CPU."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.training = model.training  # Quantus and the battery refuse a model in training mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model(x[i : i + 1]) for i in range(x.shape[0])])
