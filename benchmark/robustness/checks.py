"""AutoAttack's own sanity checks (pyautoattack.checks), their warnings turned into fxbench flags."""

from __future__ import annotations

import torch
from pyautoattack import checks as aa_checks

from ..battery import Flag
from .counting import CountingModel

# Substring of an AutoAttack warning -> stable flag code shown on the leaderboard.
CODES = (
    ("randomized defense", "randomized-forward"),
    ("probability distribution", "softmax-output"),
    ("dynamic defense", "dynamic-forward"),
    ("zero gradient", "zero-gradients"),
    ("Square Attack has decreased", "gradient-masking-suspected"),
)


class FlagCollector:
    """A stand-in for the ``logger`` pyautoattack warns through: records each warning as a Flag."""

    def __init__(self) -> None:
        self.flags: list[Flag] = []

    def warning(self, msg: str, *args) -> None:
        msg = msg % args if args else msg
        code = next((c for key, c in CODES if key in msg), "autoattack-check")
        self.flags.append(Flag(code, f"AutoAttack check: {msg}"))

    # pyautoattack also logs at these levels; they carry no warning.
    def debug(self, *args, **kwargs) -> None: ...

    def info(self, *args, **kwargs) -> None: ...

    def unique(self) -> list[Flag]:
        seen: dict[str, Flag] = {}
        for f in self.flags:
            seen.setdefault(f.code, f)
        return list(seen.values())


def run_model_checks(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, log: FlagCollector) -> None:
    """Randomized forward, softmax-like output, dynamic behaviour (on the submission's canonical model) and
    zero gradients of the margin at the clean points."""
    aa_checks.check_randomized(model, x, y, bs=x.shape[0], logger=log)
    aa_checks.check_range_output(model, x, logger=log)
    for k in aa_checks.funcs:  # module-level counters that pyautoattack never resets between models
        aa_checks.funcs[k] = 0
    aa_checks.check_dynamic(model, x, False, logger=log)
    aa_checks.check_zero_gradients(_margin_gradient(model, x, y), logger=log)


def _margin_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        z = CountingModel(model)(x)  # keeps a constant model's output attached to x
        rows = torch.arange(x.shape[0], device=x.device)
        margin = z[rows, y] - z[rows, 1 - y]
        (grad,) = torch.autograd.grad(margin.sum(), [x])
    return grad.detach()


def square_check(acc_after: dict[str, float], *, alpha: float, log: FlagCollector) -> None:
    """AutoAttack's check that Square (run last) did not lower the white-box attacks' robust accuracy."""
    aa_checks.check_square_sr(acc_after, alpha=alpha, logger=log)
