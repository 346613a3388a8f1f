"""Deterministic PNGs with matplotlib (Agg, fixed size and dpi, no metadata that changes between runs)."""

from __future__ import annotations

import io
import math
import textwrap
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.text import Text
from matplotlib.transforms import Bbox

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


def x_range(points: list[Point], *, margin: float = 0.1, lo: float = 0.0, hi: float = 1.0,
            extra: tuple[float, ...] = ()) -> tuple[float, float]:
    """The x-axis of a scatter: the points with their CIs (and ``extra`` values, e.g. a reference line) plus
    ``margin`` of that span on each side, within the score's range [lo, hi] (a localisation score of
    0.004-0.021 is unreadable on a fixed 0-1 axis)."""
    xs = [v for p in points for v in (p.x, p.x_lo, p.x_hi) if v is not None and math.isfinite(v)]
    xs += [v for v in extra if math.isfinite(v)]
    if not xs:
        return lo, hi
    a, b = min(xs), max(xs)
    pad = margin * (b - a) if b > a else max(abs(a) * margin, 0.01)
    return max(lo, a - pad), min(hi, b + pad)


# Where a point's label may go, in points from the point: beside it first, then further up or down. The
# first place that stays inside the axes and clear of the labels already placed is taken.
LABEL_OFFSETS = tuple((dx, dy) for step in (4, 14, 24, 34, 44, 54) for dy in (step, -step) for dx in (6, -6))


def place_labels(ax, points: list[Point], *, fontsize: float = 8) -> list:
    """Label each point without overlapping another label or a point (greedy, highest point first,
    deterministic), and never nearer to another point than to its own where the points allow it (in a cluster
    closer than a label's height they do not: the leader line then says whose label it is); a thin leader line
    joins a label moved away from its point. Returns the labels' display boxes."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    marker = 4.0 * ax.figure.dpi / 72  # half a marker's side in pixels: labels keep off the points too
    xy = ax.transData.transform([(p.x, p.y) for p in points]) if points else []
    dots = [Bbox.from_extents(x - marker, y - marker, x + marker, y + marker) for x, y in xy]
    boxes: list = []

    def fits(box, k: int, nearest_own: bool) -> bool:
        if not (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1):
            return False
        if any(box.overlaps(b) for b in boxes) or any(box.overlaps(d) for j, d in enumerate(dots) if j != k):
            return False
        if not nearest_own:
            return True
        # the label's nearest point must be its own (distance from the box, not its centre)
        gaps = [math.hypot(max(box.x0 - x, 0, x - box.x1), max(box.y0 - y, 0, y - box.y1)) for x, y in xy]
        return gaps[k] <= min(gaps)

    order = sorted(range(len(points)), key=lambda k: (-points[k].y, points[k].x, points[k].label))
    for k in order:
        p = points[k]
        chosen = None
        # points closer than a label's height cannot all have the nearest label: then the leader line says whose
        for dx, dy, nearest_own in [(dx, dy, True) for dx, dy in LABEL_OFFSETS] + [
                (dx, dy, False) for dx, dy in LABEL_OFFSETS if abs(dy) > 4]:
            far = abs(dy) > 4
            ann = ax.annotate(p.label, (p.x, p.y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                              ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top",
                              arrowprops={"arrowstyle": "-", "color": "#999", "lw": 0.5} if far else None)
            ann.update_positions(renderer)
            box = Text.get_window_extent(ann, renderer)  # the text alone, not its leader line
            if fits(box, k, nearest_own):
                chosen = box
                break
            ann.remove()
        if chosen is None:  # nowhere clear: beside the point, as before
            ann = ax.annotate(p.label, (p.x, p.y), textcoords="offset points", xytext=(6, 4), fontsize=fontsize)
            ann.update_positions(renderer)
            chosen = Text.get_window_extent(ann, renderer)
        boxes.append(chosen)
    return boxes


def scatter(points: list[Point], *, xlabel: str, ylabel: str, title: str,
            x_ref: tuple[float, str] | None = None, y_ref: tuple[float, str] | None = None) -> bytes:
    """One point per submission with CI bars on both axes, labelled by submission id without overlaps;
    ``x_ref`` / ``y_ref``: (value, label) of a reference line (the best trivial map, the constant classifier)."""
    with plt.rc_context({"font.size": 9}):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        x0, x1 = x_range(points, extra=(x_ref[0],) if x_ref else ())
        for p in points:
            ax.errorbar([p.x], [p.y], xerr=[[v] for v in _err(p, "x")], yerr=[[v] for v in _err(p, "y")],
                        marker="o", capsize=3, color="#1f5f8b", ecolor="#7fa7c4")
        if not points:
            ax.text(0.5, 0.5, "no submission has both scores", ha="center", va="center", transform=ax.transAxes)
        if x_ref is not None:
            ax.axvline(x_ref[0], color="#b3261e", linestyle="--", linewidth=1)
            right = x_ref[0] > (x0 + x1) / 2  # the label reads inwards, never off the axes
            ax.text(x_ref[0], 0.985, f" {x_ref[1]} ", color="#b3261e", fontsize=7, va="top",
                    ha="right" if right else "left", transform=ax.get_xaxis_transform())
        if y_ref is not None:
            ax.axhline(y_ref[0], color="#666", linestyle=":", linewidth=1)
            ax.text(0.995, y_ref[0], f"{y_ref[1]} ", color="#666", fontsize=7, va="bottom", ha="right",
                    transform=ax.get_yaxis_transform())
        ax.set_xlim(x0, x1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        fig.subplots_adjust(left=0.11, right=0.97, top=0.92, bottom=0.12)
        place_labels(ax, points)
        return _png(fig)
