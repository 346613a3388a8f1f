"""Deterministic PNGs with matplotlib (Agg, fixed size and dpi, no metadata that changes between runs)."""

from __future__ import annotations

import io
import math
import textwrap
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DPI = 100
PNG_METADATA = {"Software": None}  # the default names the matplotlib version


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    x_lo: float | None = None
    x_hi: float | None = None
    y_lo: float | None = None
    y_hi: float | None = None
    label: str = ""


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata=PNG_METADATA)
    plt.close(fig)
    return buf.getvalue()


def _err(p: Point, axis: str) -> tuple[float, float]:
    v, lo, hi = (p.x, p.x_lo, p.x_hi) if axis == "x" else (p.y, p.y_lo, p.y_hi)
    return (0.0 if lo is None else v - lo, 0.0 if hi is None else hi - v)


def robustness_curve(points: list[Point], *, title: str, ylabel: str = "accuracy") -> bytes:
    """Accuracy against the L-inf budget (x in 1/255 units; 0 = clean), with CI bars."""
    with plt.rc_context({"font.size": 9}):
        fig, ax = plt.subplots(figsize=(5, 3.4))
        if points:
            xs = [p.x for p in points]
            ys = [p.y for p in points]
            yerr = list(zip(*[_err(p, "y") for p in points]))
            ax.errorbar(xs, ys, yerr=yerr, marker="o", capsize=3, color="#1f5f8b")
            ax.set_xticks(xs, [p.label for p in points])
        else:
            ax.text(0.5, 0.5, "no robustness scores", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylim(0, 1)
        ax.set_xlabel("L-inf budget (eps x 255)")
        ax.set_ylabel(ylabel)
        lines = textwrap.wrap(title, 60) or [""]  # a long submission name wraps instead of being cut off
        ax.set_title("\n".join(lines[:3]))
        ax.grid(alpha=0.3)
        top = 0.9 - 0.055 * (min(len(lines), 3) - 1)
        fig.subplots_adjust(left=0.13, right=0.97, top=top, bottom=0.15)  # fixed: tight_layout is slow
        return _png(fig)


def x_range(points: list[Point], *, margin: float = 0.1, lo: float = 0.0, hi: float = 1.0) -> tuple[float, float]:
    """The x-axis of a scatter: the points with their CIs plus ``margin`` of that span on each side, within
    the score's range [lo, hi] (a localisation score of 0.004-0.021 is unreadable on a fixed 0-1 axis)."""
    xs = [v for p in points for v in (p.x, p.x_lo, p.x_hi) if v is not None and math.isfinite(v)]
    if not xs:
        return lo, hi
    a, b = min(xs), max(xs)
    pad = margin * (b - a) if b > a else max(abs(a) * margin, 0.01)
    return max(lo, a - pad), min(hi, b + pad)


def scatter(points: list[Point], *, xlabel: str, ylabel: str, title: str) -> bytes:
    """One point per submission with CI bars on both axes, labelled by submission id."""
    with plt.rc_context({"font.size": 9}):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        x0, x1 = x_range(points)
        for k, p in enumerate(points):
            ax.errorbar([p.x], [p.y], xerr=[[v] for v in _err(p, "x")], yerr=[[v] for v in _err(p, "y")],
                        marker="o", capsize=3, color="#1f5f8b", ecolor="#7fa7c4")
            right = p.x > (x0 + x1) / 2  # labels point inwards: the axis ends near the outermost points
            ax.annotate(p.label, (p.x, p.y), textcoords="offset points", ha="right" if right else "left",
                        xytext=(-5 if right else 5, 5 if k % 2 == 0 else -12), fontsize=8)  # alternate: near points stay legible
        if not points:
            ax.text(0.5, 0.5, "no submission has both scores", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlim(x0, x1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        fig.subplots_adjust(left=0.11, right=0.97, top=0.92, bottom=0.12)
        return _png(fig)
