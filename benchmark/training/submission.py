"""A trained baseline -> a complete submission folder: model.yaml, fp16 safetensors, model card, training log.

Everything is written into a temporary folder beside the target and swapped into place whole
(fxbench.io.replace_dir), so a failed or interrupted write never leaves a half submission.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from ..io import atomic_write_json, atomic_write_text, replace_dir, save_safetensors, sha256_file
from .config import TrainConfig
from .loop import TrainOutcome

WEIGHTS = "weights.safetensors"
LOG = "training_log.json"
CURVES = "learning_curves.png"
AUTHORS = ["fxbench baselines"]
EXTRA_DATA = "ImageNet-pretrained"  # model.yaml training.extra_data of a baseline fine-tuned from ImageNet weights
IMBALANCE = {
    "class_weighted_ce": "class-weighted cross-entropy, w_c = N / (2 N_c)",
    "none": "none (plain cross-entropy)",
}


def model_yaml(outcome: TrainOutcome, *, sha256: str) -> dict:
    c = outcome.config
    training: dict = {"adversarial": c.is_adversarial, "method": c.method}
    if c.is_adversarial:
        training.update(eps=c.eps_text(), norm="linf")
    if c.init.pretrained:
        training["extra_data"] = EXTRA_DATA
    return {
        "id": c.id,
        "name": c.name,
        "authors": AUTHORS,
        "license": c.license,
        "description": c.description.strip() or None,
        "model": {"timm": c.model.timm, "kwargs": dict(c.model.kwargs)},
        "checkpoint": {"path": WEIGHTS, "sha256": sha256},
        "input": {"size": 224, "channels": 1, "mean": [outcome.mean], "std": [outcome.std]},
        "output": {"num_classes": 2, "fracture_index": 1},
        "training": training,
        "extra": {
            "recipe": c.recipe,
            "seed": c.seed,
            **({"init": c.init.pretrained} if c.init.pretrained else {}),
            "best_epoch": outcome.best_epoch,
            "trained_on": outcome.device_name,
        },
    }


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _init_text(outcome: TrainOutcome) -> str:
    i = outcome.init
    if i is None:
        return "random initialisation (no pretrained weights)"
    return f"initialised from ImageNet-pretrained weights {i.source} ({i.loaded} tensors; {i.stem}; {i.head})"


def _norm_origin(c: TrainConfig) -> str:
    if c.normalize.mean == "auto" and c.normalize.std == "auto":
        return "training-fold pixels"
    if c.init.pretrained:
        return "the pretrained weights' normalisation, the same for every channel"
    return "set in the training config"


def _recipe_lines(outcome: TrainOutcome) -> list[str]:
    c = outcome.config
    a, o, aug = c.adversarial, c.optimizer, c.augment
    if a.method == "none":
        adv = "none (standard training, ERM)"
    elif a.method == "trades":
        adv = f"TRADES, L-inf eps {c.eps_text()}, {a.steps} steps of {a.alpha * 255:.3g}/255, beta {a.beta:g}"
    else:
        kind = "FGSM with random start" if a.method == "fgsm_rs" else "PGD"
        start = ", random start" if a.random_start else ""
        adv = f"{kind}, L-inf eps {c.eps_text()}, {a.steps} step(s) of {a.alpha * 255:.3g}/255{start}"
    sel = c.selection
    sel_text = {
        "clean_balanced_accuracy": "clean balanced accuracy",
        "pgd_balanced_accuracy": "PGD balanced accuracy",
        "clean_pgd_mean": "mean of clean and PGD balanced accuracy",
    }[sel.metric]
    if sel.attack is not None and sel.metric != "clean_balanced_accuracy":
        sel_text += f" (PGD-{sel.attack.steps}, eps {sel.attack.eps * 255:.3g}/255, fixed start)"
    return [
        f"- recipe: **{c.recipe}** (the `{c.recipe}:` section of the training config)",
        f"- architecture: timm `{c.model.timm}` {dict(c.model.kwargs)}, {_init_text(outcome)}",
        f"- adversarial training: {adv}; perturbations on canonical [0, 1] pixels, before normalisation",
        f"- optimiser: {o.name}, lr {o.lr:g}, weight decay {o.weight_decay:g}"
        + (f", Nesterov momentum {o.momentum:g}" if o.name == "sgd" else "")
        + f"; {c.schedule.kind} schedule with {c.schedule.warmup_epochs} warm-up epoch(s)",
        f"- epochs: {c.epochs} planned, batch size {c.batch_size}, mixed precision: {c.amp}",
        *(
            [
                f"- early stopping: stop after {c.early_stopping.patience} epochs without a holdout selection "
                f"score gain of more than {c.early_stopping.min_delta:g}; the epoch kept is the best one seen"
            ]
            if c.early_stopping
            else []
        ),
        *([f"- time guard: {c.time_guard_s:g} s (a safety stop at an epoch's end)"] if c.time_guard_s else []),
        "- class imbalance: " + IMBALANCE[c.imbalance],
        f"- augmentations (canonical pixel space): horizontal flip p={aug.hflip:g}, rotation ±{aug.rotate_deg:g}°, "
        f"zoom {aug.scale[0]:g}-{aug.scale[1]:g}, shift ±{100 * aug.translate:g}%, brightness ±{aug.brightness:g}, "
        f"contrast ±{100 * aug.contrast:g}%",
        f"- epoch selection: best holdout {sel_text}",
        f"- seed: {c.seed}",
    ]


def model_card(outcome: TrainOutcome) -> str:
    c, f = outcome.config, outcome.final
    best = outcome.history[outcome.best_epoch - 1]
    lines = [
        f"# {c.name}",
        "",
        f"`{c.id}`: an fxbench baseline, trained by `fxbench train` from the FracAtlas training split.",
        "",
        c.description.strip(),
        "",
        "## Recipe",
        *_recipe_lines(outcome),
        "",
        "## Data",
        f"- source: {outcome.data_source}; dataset: {outcome.dataset}",
        f"- training split only. Holdout for epoch selection: {100 * c.holdout.fraction:g}% of each class, the images "
        f'with the smallest sha256("{c.holdout.salt}/<image_id>") ({outcome.n_holdout} images, '
        f"{outcome.n_holdout_fractured} fractured); trained on the other {outcome.n_fit} ({outcome.n_fit_fractured} fractured)",
        "- the evaluation split (official valid + test) was used neither for training nor for selection",
        f"- input normalisation: mean {outcome.mean:g}, std {outcome.std:g} ({_norm_origin(c)}); class weights "
        f"{outcome.class_weights[0]:.3f} (no fracture), {outcome.class_weights[1]:.3f} (fracture)",
        "",
        "## Training run",
        f"- hardware: {outcome.device_name}",
        f"- wall time: {outcome.wall_time_s:.0f} s; {len(outcome.history)} epoch(s) run; {outcome.stop_reason}",
        *[f"- note: {n}" for n in outcome.notes],
        f"- selected epoch: {outcome.best_epoch} (selection score {best.score:.3f})",
        f"- holdout scores of the saved fp16 weights (fp32 inference): balanced accuracy {_pct(f.balanced_accuracy)}, "
        f"sensitivity {_pct(f.sensitivity)}, specificity {_pct(f.specificity)}, AUROC {f.auroc:.3f}"
        + (
            f", PGD balanced accuracy {_pct(f.pgd_balanced_accuracy)}"
            if f.pgd_balanced_accuracy is not None
            else ""
        ),
        f"- per-epoch metrics: `{LOG}`",
        "",
        *learning_curve_lines(outcome),
        "## Limitations",
        (
            "- A small CNN fine-tuned from ImageNet weights on about 3,000 radiographs"
            if outcome.init is not None
            else "- A small CNN trained from scratch on about 3,000 radiographs"
        )
        + ": far below clinical performance; a research baseline for the benchmark, not a diagnostic tool.",
        "- The holdout is small (a few dozen fractured images), so the selected epoch is a noisy choice.",
        "- Training on a GPU is seeded but not bit-for-bit reproducible (cuDNN kernel choice, bf16 rounding).",
    ]
    if c.recipe == "cpu":
        lines.append(
            "- Trained with the reduced CPU recipe (fewer epochs / cheaper attack): expect lower scores "
            "than the GPU recipe."
        )
    return "\n".join(lines) + "\n"


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None or v != v else format(v, fmt)


def learning_curve_lines(outcome: TrainOutcome) -> list[str]:
    """The per-epoch curves as a markdown table (and the PNG drawn beside the card, when there is one)."""
    adv = outcome.history and outcome.history[0].holdout.pgd_balanced_accuracy is not None
    loss = "train loss (adversarial)" if outcome.config.is_adversarial else "train loss"
    head = ["epoch", "lr", loss, "holdout BA", "holdout AUROC"]
    if adv:
        head += ["holdout robust acc (PGD)", "holdout robust BA (PGD)"]
    head += ["selection score", "s"]
    lines = [
        "## Learning curves",
        f"Per epoch: the training loss (mean over the epoch's batches{', on the adversarial examples' if adv else ''})"
        f" and the holdout scores that select the epoch{' (robust: the fixed-start PGD of the selection rule)' if adv else ''}."
        " The selected epoch is in bold.",
        "",
    ]
    if outcome.history:
        lines += [f"![learning curves]({CURVES})", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in outcome.history:
        h = r.holdout
        cells = [str(r.epoch), f"{r.lr:.2e}", _num(r.train_loss, ".4f"), _num(h.balanced_accuracy), _num(h.auroc)]
        if adv:
            cells += [_num(h.pgd_accuracy), _num(h.pgd_balanced_accuracy)]
        cells += [_num(r.score), f"{r.seconds:.1f}"]
        if r.epoch == outcome.best_epoch:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def draw_curves(outcome: TrainOutcome, path: Path) -> bool:
    """learning_curves.png: training loss (left) and holdout scores (right) per epoch; False if not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ep = [r.epoch for r in outcome.history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3), dpi=80)
    a.plot(ep, [r.train_loss for r in outcome.history], marker=".")
    a.set_xlabel("epoch")
    a.set_ylabel("train loss" + (" (adversarial)" if outcome.config.is_adversarial else ""))
    b.plot(ep, [r.holdout.balanced_accuracy for r in outcome.history], marker=".", label="holdout BA")
    if outcome.history[0].holdout.pgd_balanced_accuracy is not None:
        b.plot(ep, [r.holdout.pgd_balanced_accuracy for r in outcome.history], marker=".", label="robust BA (PGD)")
        b.plot(ep, [r.holdout.pgd_accuracy for r in outcome.history], marker=".", label="robust acc (PGD)")
    b.axvline(outcome.best_epoch, color="grey", linestyle=":", label=f"selected ({outcome.best_epoch})")
    b.axhline(0.5, color="black", linewidth=0.5)
    b.set_xlabel("epoch")
    b.set_ylim(0, 1)
    b.legend(fontsize=7)
    fig.suptitle(outcome.config.id, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return True


def training_log(outcome: TrainOutcome) -> dict:
    return {
        "id": outcome.config.id,
        "config": outcome.config.model_dump(mode="json"),
        "best_epoch": outcome.best_epoch,
        "planned_epochs": outcome.planned_epochs,
        "stop_reason": outcome.stop_reason,
        "notes": outcome.notes,
        "wall_time_s": round(outcome.wall_time_s, 2),
        "device": outcome.device_name,
        "data": {
            "source": outcome.data_source,
            "dataset": outcome.dataset,
            "n_fit": outcome.n_fit,
            "n_fit_fractured": outcome.n_fit_fractured,
            "n_holdout": outcome.n_holdout,
            "n_holdout_fractured": outcome.n_holdout_fractured,
        },
        "normalize": {"mean": outcome.mean, "std": outcome.std},
        "init": asdict(outcome.init) if outcome.init is not None else None,
        "class_weights": list(outcome.class_weights),
        "final_holdout": asdict(outcome.final),
        "epochs": [asdict(r) for r in outcome.history],
    }


def _fp16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def write_submission(outcome: TrainOutcome, *, out: str | Path) -> Path:
    """Write ``out/<id>/`` (replacing an older one only once the new folder is complete); returns it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = out / outcome.config.id
    tmp = Path(tempfile.mkdtemp(prefix=f".{outcome.config.id}.", dir=out))
    try:
        weights = tmp / WEIGHTS
        save_safetensors(_fp16(outcome.state), weights, metadata={"format": "pt", "fxbench_id": outcome.config.id})
        spec = model_yaml(outcome, sha256=sha256_file(weights))
        spec = {k: v for k, v in spec.items() if v is not None}
        atomic_write_text(
            tmp / "model.yaml", "# Written by `fxbench train`.\n" + yaml.safe_dump(spec, sort_keys=False)
        )
        card = model_card(outcome)
        if not draw_curves(outcome, tmp / CURVES):
            card = card.replace(f"![learning curves]({CURVES})\n\n", "")
        atomic_write_text(tmp / "README.md", card)
        atomic_write_json(tmp / LOG, training_log(outcome))
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
