"""The training loop: fit on the training split minus a holdout, keep the epoch with the best holdout score.

The network sees canonical [0, 1] pixels through a normalising wrapper equal to CanonicalModel's
preprocessing, so training-time attacks perturb the same pixel space the benchmark attacks.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError
from ..results.metrics import REDUCERS, MetricDef
from .adversarial import pgd_linf, trades_adversary
from .arrays import TrainArrays, holdout_split
from .augment import augment
from .config import TrainConfig
from .pretrained import PretrainedInit, initialise


class Normalized(nn.Module):
    """net((x - mean) / std): the trainable twin of CanonicalModel for one-channel input at 224."""

    def __init__(self, net: nn.Module, *, mean: float, std: float) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(float(mean)).view(1, 1, 1, 1))
        self.register_buffer("std", torch.tensor(float(std)).view(1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


@dataclass(frozen=True)
class HoldoutScores:
    balanced_accuracy: float
    sensitivity: float
    specificity: float
    auroc: float
    pgd_balanced_accuracy: float | None  # None when the recipe's selection uses no attack
    pgd_accuracy: float | None = None  # plain accuracy under the same attack (holdout robust accuracy)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based
    lr: float  # at the epoch's last step
    train_loss: float
    seconds: float
    elapsed_s: float
    holdout: HoldoutScores
    score: float  # the selection score
    planned_epochs: int


@dataclass(frozen=True)
class TrainOutcome:
    config: TrainConfig
    state: dict[str, torch.Tensor]  # the selected epoch's network weights, fp32, on the CPU
    final: HoldoutScores  # the saved (fp16-rounded) weights re-scored on the holdout in fp32
    mean: float
    std: float
    class_weights: tuple[float, float]
    history: list[EpochRecord]
    best_epoch: int
    planned_epochs: int
    stop_reason: str
    n_fit: int
    n_fit_fractured: int
    n_holdout: int
    n_holdout_fractured: int
    wall_time_s: float
    device_name: str
    data_source: str
    dataset: str
    notes: list[str] = field(default_factory=list)
    init: PretrainedInit | None = None  # None: random initialisation


def class_weights(y: torch.Tensor, mode: str) -> torch.Tensor:
    """``class_weighted_ce``: w_c = N / (2 N_c), so each class carries half of the loss; ``none``: ones."""
    if mode == "none":
        return torch.ones(2)
    counts = torch.bincount(y.cpu(), minlength=2).double()
    return (counts.sum() / (2 * counts)).float()


def pixel_stats(x: torch.Tensor, *, chunk: int = 256) -> tuple[float, float]:
    """Mean and std of uint8 images as [0, 1] pixels, rounded to 4 decimals (they go into model.yaml)."""
    total, sq, n = 0.0, 0.0, 0
    for i in range(0, len(x), chunk):
        v = x[i : i + chunk].double() / 255
        total += float(v.sum())
        sq += float((v * v).sum())
        n += v.numel()
    mean = total / n
    return round(mean, 4), round(math.sqrt(max(sq / n - mean * mean, 1e-12)), 4)


def lr_at(step: int, *, steps_per_epoch: int, epochs: int, config: TrainConfig) -> float:
    base, sched = config.optimizer.lr, config.schedule
    warm = sched.warmup_epochs * steps_per_epoch
    if step < warm:
        return base * (step + 1) / warm
    if sched.kind == "constant":
        return base
    progress = (step - warm) / max(1, epochs * steps_per_epoch - warm)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def fit_epochs(planned: int, *, limit_s: float, elapsed_s: float, epoch_s: float) -> int:
    """Epochs that fit the time budget, decided after epoch 1 (so the cosine schedule still ends at zero).

    ``epoch_s`` comes from the steady-state step time: the first steps include one-off kernel selection."""
    return max(1, min(planned, 1 + int((limit_s - elapsed_s) // max(epoch_s, 1e-9))))


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    o = config.optimizer
    # No weight decay on batch-norm parameters and biases (the usual practice for ResNets).
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=True)


def _autocast(config: TrainConfig, device: torch.device, enabled: bool = True):
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=enabled and config.amp == "bf16"
    )


def _batch(x_u8: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return x_u8[idx].float().div_(255)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _scores(y: torch.Tensor, p: torch.Tensor, adv_pred: torch.Tensor | None) -> HoldoutScores:
    df = pd.DataFrame(
        {"label": y.numpy(), "p": p.double().numpy(), "correct": ((p >= 0.5).long() == y).double().numpy()}
    )
    ba = REDUCERS.get("balanced_accuracy")(df, MetricDef("ba", "correct", reduce="balanced_accuracy"))
    auroc = REDUCERS.get("auroc")(df, MetricDef("auroc", "p", reduce="auroc"))
    pgd_ba = pgd_acc = None
    if adv_pred is not None:
        df["adv"] = (adv_pred == y).double().numpy()
        pgd_ba = REDUCERS.get("balanced_accuracy")(df, MetricDef("pgd", "adv", reduce="balanced_accuracy"))
        pgd_acc = float(df["adv"].mean())
    sens = float(df.loc[df.label == 1, "correct"].mean())
    spec = float(df.loc[df.label == 0, "correct"].mean())
    return HoldoutScores(
        float(ba), sens, spec, float(auroc), None if pgd_ba is None else float(pgd_ba), pgd_acc
    )


def evaluate_holdout(
    model: nn.Module,
    x_u8: torch.Tensor,
    y: torch.Tensor,
    *,
    config: TrainConfig,
    device: torch.device,
    amp: bool = True,
) -> HoldoutScores:
    """Clean scores (threshold 0.5 on the fracture probability, as the clean battery) and, when the selection
    uses an attack, balanced accuracy under a fixed-start PGD on the holdout."""
    model.eval()
    attack = config.selection.attack if config.selection.metric != "clean_balanced_accuracy" else None
    probs, adv = [], []
    for i in range(0, len(y), config.eval_batch_size):
        idx = torch.arange(i, min(i + config.eval_batch_size, len(y)), device=x_u8.device)
        xb, yb = _batch(x_u8, idx), y[i : i + config.eval_batch_size].to(device)
        with torch.no_grad(), _autocast(config, device, amp):
            probs.append(F.softmax(model(xb).float(), dim=1)[:, 1].cpu())
        if attack is not None:
            with _autocast(config, device, amp):
                xa = pgd_linf(
                    model, xb, yb, eps=attack.eps, alpha=attack.alpha, steps=attack.steps, random_start=False
                )
            with torch.no_grad(), _autocast(config, device, amp):
                adv.append(model(xa).argmax(dim=1).cpu())
    return _scores(y.cpu(), torch.cat(probs), torch.cat(adv) if attack is not None else None)


def selection_score(scores: HoldoutScores, metric: str) -> float:
    if metric == "clean_balanced_accuracy":
        return scores.balanced_accuracy
    if metric == "pgd_balanced_accuracy":
        return scores.pgd_balanced_accuracy
    return (scores.balanced_accuracy + scores.pgd_balanced_accuracy) / 2


def _loss(
    model: nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    *,
    config: TrainConfig,
    weights: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    adv = config.adversarial
    if adv.method in ("pgd", "fgsm_rs"):
        xa = pgd_linf(
            model,
            xb,
            yb,
            eps=adv.eps,
            alpha=adv.alpha,
            steps=adv.steps,
            random_start=adv.random_start,
            generator=generator,
        )
        return F.cross_entropy(model(xa).float(), yb, weight=weights)
    if adv.method == "trades":
        xa = trades_adversary(model, xb, eps=adv.eps, alpha=adv.alpha, steps=adv.steps, generator=generator)
        z = model(xb).float()
        robust = F.kl_div(F.log_softmax(model(xa).float(), dim=1), F.softmax(z, dim=1), reduction="batchmean")
        return F.cross_entropy(z, yb, weight=weights) + adv.beta * robust
    return F.cross_entropy(model(xb).float(), yb, weight=weights)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def train(
    config: TrainConfig,
    data: TrainArrays,
    *,
    device: torch.device,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainOutcome:
    import timm

    started = time.perf_counter()
    split = holdout_split(data.ids, data.y, fraction=config.holdout.fraction, salt=config.holdout.salt)
    fit, hold = data.subset(split.fit), data.subset(split.holdout)
    for name, part in (("training fold", fit), ("holdout", hold)):
        if len(set(part.y.tolist())) < 2:
            raise DataError(
                f"{data.source}: the {name} has images of one class only; need more training images"
            )
    mean, std = pixel_stats(fit.x)
    mean = mean if config.normalize.mean == "auto" else float(config.normalize.mean)
    std = std if config.normalize.std == "auto" else float(config.normalize.std)
    weights = class_weights(fit.y, config.imbalance)

    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: let cuDNN pick the fastest kernels once
    net = timm.create_model(config.model.timm, pretrained=False, **config.model.kwargs)
    init = initialise(net, config.init.pretrained) if config.init.pretrained else None
    model = Normalized(net, mean=mean, std=std).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = _optimizer(model, config)
    g_order = torch.Generator().manual_seed(config.seed)
    g_dev = torch.Generator(device=device).manual_seed(config.seed + 1)

    x_fit, y_fit = fit.x.to(device), fit.y.to(device)
    x_hold = hold.x.to(device)
    w_dev = weights.to(device)
    bs = min(config.batch_size, len(fit))
    steps_per_epoch = len(fit) // bs  # drop the last partial batch: every step has the same size
    planned, history, best, best_state = config.epochs, [], None, None
    stop_reason, notes = "completed all epochs", []
    step, epoch = 0, 0
    patience = config.early_stopping
    best_for_patience, last_improved = None, 0
    while epoch < planned:
        epoch += 1
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(fit), generator=g_order).to(device)
        total, t_steady = torch.zeros((), device=device), None
        for k in range(steps_per_epoch):
            if k == min(3, steps_per_epoch - 1):
                _sync(device)
                t_steady = (time.perf_counter(), k)
            lr = lr_at(step, steps_per_epoch=steps_per_epoch, epochs=planned, config=config)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[k * bs : (k + 1) * bs]
            xb = augment(_batch(x_fit, idx), config.augment, generator=g_dev)
            with _autocast(config, device):
                loss = _loss(model, xb, y_fit[idx], config=config, weights=w_dev, generator=g_dev)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()  # summed on the device: no host sync per step
            step += 1
        _sync(device)
        t_train = time.perf_counter()
        scores = evaluate_holdout(model, x_hold, hold.y, config=config, device=device)
        t_end = time.perf_counter()
        score = selection_score(scores, config.selection.metric)
        if best is None or score > best[1]:
            best = (epoch, score)
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.net.state_dict().items()}
        if best_for_patience is None or score > best_for_patience + (patience.min_delta if patience else 0):
            best_for_patience, last_improved = score, epoch
        elapsed = t_end - started
        if epoch == 1 and config.time_limit_s:
            t_s, k_s = t_steady
            per_step = (t_train - t_s) / max(1, steps_per_epoch - k_s)
            est = per_step * steps_per_epoch + (t_end - t_train)
            fitted = fit_epochs(planned, limit_s=config.time_limit_s, elapsed_s=elapsed, epoch_s=est)
            if fitted < planned:
                notes.append(
                    f"epochs cut from {planned} to {fitted} to fit time_limit_s={config.time_limit_s:g} "
                    f"(estimated {est:.1f} s per epoch)"
                )
                planned = fitted
        record = EpochRecord(
            epoch, lr, float(total) / max(1, steps_per_epoch), t_end - t0, elapsed, scores, score, planned
        )
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if config.time_limit_s and elapsed >= config.time_limit_s and epoch < planned:
            stop_reason = f"time limit {config.time_limit_s:g} s reached after epoch {epoch} of {planned}"
            break
        if patience is not None and epoch - last_improved >= patience.patience and epoch < planned:
            stop_reason = (
                f"early stopping after epoch {epoch} of {planned}: no holdout improvement of more than "
                f"{patience.min_delta:g} in {patience.patience} epochs (last at epoch {last_improved})"
            )
            break
        if config.time_guard_s and elapsed >= config.time_guard_s and epoch < planned:
            stop_reason = (
                f"time guard {config.time_guard_s:g} s reached after epoch {epoch} of {planned}, before "
                "early stopping: not converged"
            )
            break
    if epoch == planned and planned < config.epochs:
        stop_reason = f"completed {planned} of {config.epochs} epochs (fitted to the time budget)"

    # Re-score what is saved: the selected weights rounded to fp16, evaluated in fp32 like the benchmark.
    saved = {k: v.half().float() if v.is_floating_point() else v for k, v in best_state.items()}
    model.net.load_state_dict(saved)
    model = model.to(memory_format=torch.contiguous_format)
    final = evaluate_holdout(model, x_hold, hold.y, config=config, device=device, amp=False)
    return TrainOutcome(
        config=config,
        state=best_state,
        final=final,
        mean=mean,
        std=std,
        class_weights=(float(weights[0]), float(weights[1])),
        history=history,
        best_epoch=best[0],
        planned_epochs=planned,
        stop_reason=stop_reason,
        n_fit=len(fit),
        n_fit_fractured=int(fit.y.sum()),
        n_holdout=len(hold),
        n_holdout_fractured=int(hold.y.sum()),
        wall_time_s=time.perf_counter() - started,
        device_name=device_name(device),
        data_source=data.source,
        dataset=data.dataset,
        notes=notes,
        init=init,
    )
