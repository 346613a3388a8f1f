"""Overlay pictures for the leaderboard's gallery: image in gray, attribution heatmap, mask outline.

Deterministic: Agg backend, fixed size and dpi, no metadata (matplotlib would write its version), so two runs
give byte-identical PNGs.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display; set before pyplot is imported anywhere in this process
import numpy as np
from matplotlib.figure import Figure

from .config import Gallery


def overlay_png(
    image: np.ndarray, attribution: np.ndarray, mask: np.ndarray, *, title: str, style: Gallery
) -> bytes:
    """image, attribution, mask: H x W arrays (image in [0, 1], attribution >= 0, mask bool)."""
    fig = Figure(figsize=(style.size_inches, style.size_inches), dpi=style.dpi)
    ax = fig.add_axes((0, 0, 1, 0.9))
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    top = float(np.nanmax(attribution)) if np.isfinite(attribution).any() else 0.0
    heat = attribution / top if top > 0 else np.zeros_like(attribution)
    ax.imshow(heat, cmap=style.cmap, vmin=0, vmax=1, alpha=style.alpha, interpolation="nearest")
    if mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors="cyan", linewidths=1.0)
    ax.set_axis_off()
    fig.text(0.5, 0.95, title, ha="center", va="center", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=style.dpi, metadata={"Software": None})
    return buf.getvalue()
