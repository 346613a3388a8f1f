"""The leaderboard's gallery: which images, their maps, and the pictures (image in gray, attribution heatmap,
mask outline).

``gallery_files`` is what ``finalize`` writes under ``gallery/``: v1 one overlay per image and map, v2
(``choice: mask_size_quantiles``) clean and attacked image side by side. Deterministic: Agg backend, fixed
size and dpi, no metadata (matplotlib would write its version), so two runs give byte-identical PNGs.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display; set before pyplot is imported anywhere in this process
import numpy as np
import torch
from matplotlib.figure import Figure

from ..battery import EvalSet, RunContext
from .attacked import attacked_point
from .config import Gallery, XaiConfig
from .maps import compute_maps, for_localisation, metric_inputs, p_fracture
from .methods import UnsupportedMethod
from .metrics import METRICS
from .perturbed import perturbed_inputs
from .selection import BATTERY, first_fractured_ids, fractured_rows, sub_seed


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


def _heat_rgba(attribution: np.ndarray, cmap: str, alpha: float) -> np.ndarray:
    """The map normalised to its maximum, coloured, with opacity growing with the value: zero attribution is
    fully transparent, so the radiograph is never darkened where the map says nothing."""
    import matplotlib as mpl

    top = float(np.nanmax(attribution)) if np.isfinite(attribution).any() else 0.0
    heat = np.clip(attribution / top, 0, 1) if top > 0 else np.zeros_like(attribution, dtype=float)
    rgba = mpl.colormaps[cmap](heat)
    rgba[..., 3] = alpha * heat
    return rgba


def panels_png(panels: list[dict], *, style: Gallery, suptitle: str) -> bytes:
    """v2 gallery picture: one panel per entry (clean, then the attacked image), each ``style.size_px``
    pixels wide, with the mask outline, a colour bar of the normalised attribution and its own title.

    ``panels``: dicts with ``image``, ``attribution``, ``mask`` (H x W) and ``title``."""
    import matplotlib as mpl

    px = style.size_px or 448
    dpi = style.dpi
    w_in, h_in = px / dpi, px / dpi
    bar_in = 0.9
    fig = Figure(figsize=(len(panels) * (w_in + bar_in), h_in + 0.9), dpi=dpi)
    total_w = len(panels) * (w_in + bar_in)
    total_h = h_in + 0.9
    for k, p in enumerate(panels):
        left = k * (w_in + bar_in) / total_w
        ax = fig.add_axes((left, 0.2 / total_h, w_in / total_w, h_in / total_h))
        ax.imshow(p["image"], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.imshow(_heat_rgba(p["attribution"], style.cmap, style.alpha), interpolation="nearest")
        m = p["mask"]
        if m.any() and not m.all():
            ax.contour(m.astype(float), levels=[0.5], colors="cyan", linewidths=1.2)
        ax.set_axis_off()
        ax.set_title(p["title"], fontsize=9)
        cax = fig.add_axes((left + (w_in + 0.1) / total_w, 0.2 / total_h, 0.15 / total_w, h_in / total_h))
        sm = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(0, 1), cmap=style.cmap)
        cb = fig.colorbar(sm, cax=cax)
        cb.set_label("attribution / its maximum", fontsize=7)
        cb.ax.tick_params(labelsize=7)
    fig.text(0.5, 1 - 0.25 / total_h, suptitle, ha="center", va="center", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def choose_images(ids: list[str], mask_px: list[int], n: int, exclude: list[str]) -> list[str]:
    """The documented gallery rule (v2): the fractured images sorted by mask size (ties by id), excluded ids
    removed, then ``n`` of them at evenly spaced quantiles (position (k + 0.5) / n): small to large masks,
    independent of any model, so every submission shows the same images."""
    pool = sorted((p, i) for i, p in zip(ids, mask_px) if i not in set(exclude))
    if not pool or n <= 0:
        return []
    n = min(n, len(pool))
    return [pool[int((k + 0.5) * len(pool) / n)][1] for k in range(n)]


def gallery_files(
    model, evalset: EvalSet, cfg: XaiConfig, ctx: RunContext, *, skip: set[str], device: torch.device
) -> dict[str, bytes]:
    """Relative path -> PNG for every chosen image and map (``skip``: the methods reported unsupported)."""
    if cfg.gallery.choice == "mask_size_quantiles":
        return _gallery_v2(model, evalset, cfg, ctx, skip, device)
    ids = first_fractured_ids(evalset, cfg.gallery.images)
    if not ids:
        return {}
    rows = [evalset.ids.index(i) for i in ids]
    x, masks = evalset.x[rows].float(), evalset.masks[rows].bool()
    seed = ctx.shard_seed(BATTERY, "gallery")
    files = {}
    for name in cfg.maps:
        if name in skip:
            continue
        try:
            maps = compute_maps(name, model, x, masks, cfg, sub_seed(seed, name), device)[0].numpy()
        except UnsupportedMethod:
            continue
        for j, image_id in enumerate(ids):
            files[f"gallery/{image_id}/{name}.png"] = overlay_png(
                x[j, 0].numpy(), maps[j, 0], masks[j, 0].numpy(), title=f"{image_id}  {name}", style=cfg.gallery
            )
    return files


def _gallery_v2(
    model, evalset: EvalSet, cfg: XaiConfig, ctx: RunContext, skip: set[str], device: torch.device
) -> dict[str, bytes]:
    """Per chosen image and map: clean and attacked image side by side (the attacked one where the
    robustness battery stored it), titles with P(fracture) and the map's relevance mass on that image;
    references under ``gallery/<id>/references/``, apart from the methods."""
    rows_fr = fractured_rows(evalset)
    ids = [evalset.ids[i] for i in rows_fr]
    px = [int(evalset.masks[i].sum()) for i in rows_fr]
    chosen = choose_images(ids, px, cfg.gallery.images, cfg.gallery.exclude)
    if not chosen:
        return {}
    rows = [evalset.ids.index(i) for i in chosen]
    x, masks = evalset.x[rows].float(), evalset.masks[rows].bool()
    seed = ctx.shard_seed(BATTERY, "gallery")
    tag = cfg.under_attack.attack if cfg.under_attack is not None else None
    if tag and cfg.under_attack.points == "fixed_step":  # v3: the battery's own point (None: misclassified)
        pts, _ = perturbed_inputs(model, ctx.seed, chosen, x, cfg, device)
        adv = [pts.x[j] if ok else None for j, ok in enumerate(pts.attacked)]
    else:
        tensors = ctx.load_tensors("robustness") if tag else {}
        adv = [attacked_point(tensors, tag, i) if tag else None for i in chosen]
    p_clean = p_fracture(model, x, device)
    rma = METRICS.get("relevance_mass_accuracy")
    files = {}
    for name in cfg.maps:
        if name in skip or name == "ref_mask":
            continue
        try:
            maps = for_localisation(name, compute_maps(name, model, x, masks, cfg, sub_seed(seed, name), device)[0], cfg)
        except UnsupportedMethod:
            continue
        score = rma.score(metric_inputs(x, maps, masks, model, device, cfg, 0), None).values
        folder = "references/" if name in cfg.references else ""
        for j, image_id in enumerate(chosen):
            m = masks[j, 0].numpy()
            panels = [{
                "image": x[j, 0].numpy(), "attribution": maps[j, 0].numpy(), "mask": m,
                "title": f"clean  P(fracture) {p_clean[j]:.2f}  rel. mass {score[j]:.2f}",
            }]
            if adv[j] is not None:
                xa = adv[j].detach().to("cpu", torch.float32).reshape(1, *x.shape[1:])
                ma = for_localisation(
                    name, compute_maps(name, model, xa, masks[j : j + 1], cfg, sub_seed(seed, name), device)[0], cfg)
                sa = rma.score(metric_inputs(xa, ma, masks[j : j + 1], model, device, cfg, 0), None).values
                panels.append({
                    "image": xa[0, 0].numpy(), "attribution": ma[0, 0].numpy(), "mask": m,
                    "title": f"attacked ({tag})  P(fracture) {p_fracture(model, xa, device)[0]:.2f}  "
                    f"rel. mass {sa[0]:.2f}",
                })
            files[f"gallery/{image_id}/{folder}{name}.png"] = panels_png(
                panels, style=cfg.gallery, suptitle=f"{image_id}  {name}  (mask {int(m.sum())} px, cyan)"
            )
    return files
