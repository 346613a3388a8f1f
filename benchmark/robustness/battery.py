"""fxbench-AA v1 as a Battery (see benchmark/battery.py): shards are chunks of evaluation images."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..battery import (
    BatteryResult,
    EvalSet,
    Flag,
    RunContext,
    ShardOutput,
    derive_seed,
    seed_everything,
)
from ..models.device import model_device
from ..registry import Registry
from ..results.metric_ids import robust_id, robust_norm_column
from ..results.metrics import LABEL, MetricDef
from .attacks import ATTACKS
from .cascade import CLEAN, ChunkOutcome, attack_chunk, clean_logits
from .checks import FlagCollector, run_model_checks, square_check
from .config import Budget, RobustnessConfig, checks_here, parse_config, strength
from .constant import analytic_outcome, probe
from .counting import CountingModel
from .floor import call_ratios, measure_rates, probe_size, required_calls, required_passes, time_floor
from .gaming import clean_reference, run_checks, weak_black_box
from .images import adv_key
from .streams import merge_samples, parse_key, shard_keys

REPO = Path(__file__).resolve().parents[2]  # the transfer surrogate's model.yaml is relative to the checkout

NAME = "robustness"


class RobustnessBattery:
    name = NAME

    def __init__(self, *, attacks: Registry | None = None, surrogate: torch.nn.Module | None = None) -> None:
        self.attacks = attacks if attacks is not None else ATTACKS
        self._surrogate = surrogate  # tests inject one; otherwise the spec's, loaded once

    def surrogate(self, cfg: RobustnessConfig, device: torch.device) -> torch.nn.Module | None:
        if (self._surrogate is None and cfg.checks is not None and cfg.checks.transfer_surrogate
                and cfg.checks.transfer_points):
            from ..models import load_submission

            path = REPO / cfg.checks.transfer_surrogate
            if not path.exists():
                return None
            self._surrogate = load_submission(path, device=str(device)).model
        return self._surrogate

    def config(self, config: dict[str, Any] | RobustnessConfig) -> RobustnessConfig:
        """The spec's mapping parsed and checked (a config parsed already is returned as it is)."""
        return config if isinstance(config, RobustnessConfig) else parse_config(config, registry=self.attacks)

    configure = config  # the Battery protocol's name: the runner parses once, at planning

    def shards(self, evalset: EvalSet, config: dict[str, Any]) -> list[str]:
        cfg = self.config(config)
        return shard_keys(cfg, len(evalset.chunks(cfg.chunk_size)))

    def run_shard(self, key: str, *, model: torch.nn.Module, evalset: EvalSet, config: dict[str, Any],
                  ctx: RunContext) -> ShardOutput:
        cfg = self.config(config)
        chunks = evalset.chunks(cfg.chunk_size)
        index, budgets = parse_key(key, cfg, len(chunks), battery=NAME)
        first = key == shard_keys(cfg, len(chunks))[0]
        lo, hi = chunks[index]
        seed = ctx.shard_seed(NAME, key)
        seed_everything(seed)  # as the runner does; again here, for callers of run_shard outside a run
        device = model_device(model, ctx.device)
        x, y, ids = evalset.x[lo:hi], evalset.y[lo:hi], list(evalset.ids[lo:hi])

        log = FlagCollector()
        counter = CountingModel(model, audit=cfg.checks is not None and cfg.checks.consistency_points > 0)
        rates = None
        if first:  # AutoAttack's model checks: once per run (the first shard), on real images
            n_check = min(cfg.checks.model_points if cfg.checks else cfg.batch_size, len(ids))
            counter.phase = "check-model"
            run_model_checks(counter, x[:n_check].to(device), y[:n_check].to(device), log=log)
            # The plain batched rates that price the time floor, measured on this device in this run.
            rates = measure_rates(model, x[: probe_size(cfg.batch_size, device)].to(device))
        outcome, constant = self._outcome(counter, x, y, ids, cfg=cfg, budgets=budgets, seed=seed, device=device,
                                          log=log)
        gaming: dict[str, Any] = {}
        checks = checks_here(cfg, budgets)
        if checks is not None:
            linf = cfg.by_norm("linf")
            here = budgets is None or (bool(linf) and linf[-1] in budgets)
            surrogate = self.surrogate(cfg, device) if checks.transfer_points else None
            rep = run_checks(counter, x, y, outcome, checks=checks, registry=self.attacks,
                             attack_options={a.name: a.options for a in cfg.attacks},
                             largest_linf=linf[-1] if linf and here else None, headline=cfg.budget(cfg.headline),
                             surrogate=surrogate, seed=seed, device=device, log=log,
                             reference=clean_reference(ctx.previous, checks))
            log.flags += rep.flags
            gaming = rep.info
            if surrogate is None and checks.transfer_points:
                # A check that did not run says so where a reader looks (a flag), not only in `info`: fxbench
                # installed from a wheel has no repository holding the surrogate submission.
                gaming["transfer"] = {"skipped": f"surrogate {cfg.checks.transfer_surrogate} not found"}
                log.flags.append(Flag("check-not-run", f"transfer check not run: its surrogate "
                                      f"{cfg.checks.transfer_surrogate} is not under {REPO} (fxbench installed "
                                      "outside its repository?); run from a checkout of the repository"))
        info = {
            "n": len(ids),
            "entering": outcome.entering,
            "breaks": outcome.breaks,
            "seconds": outcome.seconds,
            "passes": counter.totals(),
            "steps": {b: {a: {"points": len(v), "steps": int(sum(v)), "max": int(max(v, default=0))}
                          for a, v in per.items()} for b, per in outcome.steps.items()},
            "calls": dict(sorted(counter.calls.items())),
            "n_broken": sum(len(o.adv) for o in outcome.norms.values()),
            "checks": gaming,
        }
        if rates is not None:
            info["rates"] = rates
        if constant is not None:
            info["constant"] = constant
        return ShardOutput(samples=_samples(outcome), tensors=_kept_images(outcome, cfg), flags=log.unique(),
                           info=info)

    def _outcome(self, counter: CountingModel, x: torch.Tensor, y: torch.Tensor, ids: list[str], *,
                 cfg: RobustnessConfig, budgets: list[Budget] | None, seed: int, device: torch.device,
                 log: FlagCollector) -> tuple[ChunkOutcome, dict[str, Any] | None]:
        """The cascade's outcome on this shard's images; a constant model's without attacks (constant.py)."""
        if cfg.constant_model == "analytic":
            xd, yd = x.to(device), y.to(device)
            z, correct = clean_logits(counter, xd, yd, cfg.batch_size)
            evidence = probe(counter, xd, yd, z, cfg=cfg, seed=derive_seed(seed, "constant"))
            if evidence is not None:
                    return analytic_outcome(ids, y, correct, z, cfg=cfg, budgets=budgets), evidence
            clean = (z, correct)
        else:
            clean = None
        return attack_chunk(counter, x, y, ids, cfg=cfg, registry=self.attacks, seed=seed, device=device,
                            log=log, budgets=budgets, clean=clean), None

    def expected_metrics(self, config: dict[str, Any]) -> list[MetricDef]:
        return metric_defs(self.config(config))

    def finalize(self, outputs: dict[str, ShardOutput], *, model: torch.nn.Module, evalset: EvalSet,
                 config: dict[str, Any], ctx: RunContext) -> BatteryResult:
        cfg = self.config(config)
        keys = sorted(outputs)
        if cfg.shard_by == "chunk":
            samples = pd.concat([outputs[k].samples for k in keys], ignore_index=True)
        else:
            samples = merge_samples({k: outputs[k].samples for k in keys}, cfg)
        infos = [outputs[k].info for k in keys]
        log = FlagCollector()
        curve = []
        n = len(samples)
        for b in cfg.budgets:
            here = [i for i in infos if b.id in i["entering"]]  # the shards that ran this budget
            attacks = cfg.attacks_for(b)
            entering = sum(i["entering"][b.id] for i in here)
            breaks = {a.name: sum(i["breaks"][b.id][a.name] for i in here) for a in attacks}
            # Robust accuracy after each attack at this budget, for AutoAttack's Square check.
            acc_after, left = {"clean": entering / n}, entering
            for a in attacks:
                left -= breaks[a.name]
                acc_after[a.name] = left / n
            square_check(acc_after, alpha=cfg.square_flag_alpha, log=log)
            entry = {
                "budget": b.id, "norm": b.norm, "eps": b.eps, "eps_spec": b.value,
                "robust_accuracy": float(samples[robust_id(b.id, "correct")].mean()),
                "robust_at_start": entering, "broken_by": breaks,
                "seconds_by": {a.name: round(sum(i["seconds"][b.id][a.name] for i in here), 3) for a in attacks},
            }
            if cfg.attacks_at:  # v3: what this point of the curve is (docs/robustness.md, "v3")
                entry["attacks"] = [a.name for a in attacks]
                entry["strength"] = strength(cfg, b, self.attacks)
            curve.append(entry)
        seconds = {a.name: round(sum(c["seconds_by"].get(a.name, 0.0) for c in curve), 3) for a in cfg.attacks}
        log.flags += weak_black_box(cfg.checks, [(a.name, a.options, self.attacks.get(a.name).white_box)
                                                 for a in cfg.attacks])
        info = {
            "battery": cfg.label,
            "preset": ctx.preset,
            "leaderboard_grade": ctx.preset == "full",  # quick: fewer steps and budgets, a smoke run only
            "headline": cfg.headline,
            "curve": curve,
            "broken_by_attack": {a.name: sum(c["broken_by"].get(a.name, 0) for c in curve) for a in cfg.attacks},
            "seconds_by_attack": seconds,
            "passes": _sum_passes(infos),
            "passes_required": _required(cfg, infos, n),
            "steps": _sum_steps(infos),
            "checks": _sum_checks(infos),
        }
        if all("calls" in i for i in infos):  # v3 shards: model calls against the iterations one stream needs
            calls: dict[str, int] = {}
            for i in infos:
                for phase, c in i["calls"].items():
                    calls[phase] = calls.get(phase, 0) + int(c)
            info["calls"] = call_ratios(calls, required_calls(cfg, info["steps"]))
        constant = [i["constant"] for i in infos if "constant" in i]
        if constant:
            info["constant"] = {**constant[0], "shards": len(constant), "of": len(infos)}
        rates = next((i["rates"] for i in infos if "rates" in i), None)
        if rates is not None and info["passes_required"]:
            info["time_floor"] = {"rates": rates, **time_floor(info["passes_required"], seconds, rates)}
        return BatteryResult(samples=samples, metrics=metric_defs(cfg),
                             flags=self._merge_flags([outputs[k].flags for k in keys], log.unique(), samples,
                                                     cfg),
                             info=info)

    def _merge_flags(self, per_shard: list[list[Flag]], final: list[Flag], samples: pd.DataFrame,
                     cfg: RobustnessConfig) -> list[Flag]:
        """One flag per code; shard-level flags say in how many chunks they fired."""
        first: dict[str, Flag] = {}
        count: dict[str, int] = {}
        for flags in per_shard:
            for f in flags:
                first.setdefault(f.code, f)
                count[f.code] = count.get(f.code, 0) + 1
        unit = "chunks" if cfg.shard_by == "chunk" else "shards"
        out = [Flag(c, f"{f.message} (in {count[c]} of {len(per_shard)} {unit})") for c, f in first.items()]
        black_box = [a.name for a in cfg.attacks if not self.attacks.get(a.name).white_box]
        if cfg.scope:  # what a reduced preset can and cannot catch, wherever its numbers are shown
            out.append(Flag("robustness-scope", cfg.scope))
        for f in final:
            if f.code == "gradient-masking-suspected":
                by_budget = {b.id: int(samples[robust_id(b.id, "attack")].isin(black_box).sum()) for b in cfg.budgets}
                f = Flag(f.code, f"The black-box attack ({', '.join(black_box)}) broke points that the white-box "
                                 f"attacks could not (points per budget, cumulative: {by_budget}): gradients may "
                                 f"be masked. {f.message}")
            out.append(f)
        return out


def metric_defs(cfg: RobustnessConfig) -> list[MetricDef]:
    out = []
    for b in cfg.budgets:
        col = robust_id(b.id, "correct")
        out += [
            MetricDef(robust_id(b.id, "accuracy"), col, "mean"),
            MetricDef(robust_id(b.id, "balanced_accuracy"), col, "balanced_accuracy"),
            MetricDef(robust_id(b.id, "sensitivity"), col, "mean", where={LABEL: 1}),
            MetricDef(robust_id(b.id, "specificity"), col, "mean", where={LABEL: 0}),
        ]
    return out


def _samples(o: ChunkOutcome) -> pd.DataFrame:
    cols: dict[str, list] = {"image_id": list(o.ids)}
    correct = o.clean_correct.tolist()
    for norm, out in o.norms.items():
        for k, b in enumerate(out.budgets):
            broken = [c and 0 <= out.first[i] <= k for i, c in enumerate(correct)]
            cols[robust_id(b.id, "correct")] = [float(c and not br) for c, br in zip(correct, broken)]
            cols[robust_id(b.id, "broken")] = broken
            cols[robust_id(b.id, "attack")] = [
                CLEAN if not c else (out.attack[i] if br else "") for i, (c, br) in enumerate(zip(correct, broken))
            ]
            cols[robust_id(b.id, "norm")] = [out.dist[i] if br else math.nan for i, br in enumerate(broken)]
        if norm == "linf" and out.budgets:
            cols[robust_norm_column("linf", "min_eps_broken")] = [
                0.0 if not c else (out.budgets[out.first[i]].value if out.first[i] >= 0 else math.nan)
                for i, c in enumerate(correct)
            ]
    return pd.DataFrame(cols)


def _kept_images(o: ChunkOutcome, cfg: RobustnessConfig) -> dict[str, torch.Tensor]:
    """The headline-budget attacked point of every image with label ``keep_adversarial_label`` that is
    correctly classified clean: its adversarial example where the cascade broke it (there or at a smaller
    budget), otherwise the final point of the first APGD attack (APGD-CE's highest-loss point at the headline
    budget). ``robust/<headline>/broken`` says which is which. Misclassified-clean images: none."""
    head = cfg.budget(cfg.headline)
    out = o.norms[head.norm]
    if head not in out.budgets:  # a v3 shard of the other norm
        return {}
    k = out.budgets.index(head)
    final = o.final.get(head.id, {})
    kept = {}
    for i in range(len(o.ids)):
        if int(o.y[i]) != cfg.keep_adversarial_label or not bool(o.clean_correct[i]):
            continue
        img = out.adv[i] if 0 <= out.first[i] <= k else final.get(i)
        if img is not None:
            kept[adv_key(head.id, o.ids[i])] = img.contiguous()
    return kept


def _sum_steps(infos: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    steps: dict[str, dict[str, dict[str, int]]] = {}
    for i in infos:
        for b, per in i.get("steps", {}).items():
            for a, rec in per.items():
                t = steps.setdefault(b, {}).setdefault(a, {"points": 0, "steps": 0})
                t["points"] += rec["points"]
                t["steps"] += rec["steps"]
                if "max" in rec:  # v3 shards: the longest stream a point needed (required_calls)
                    t["max"] = max(t.get("max", 0), rec["max"])
    return steps


def _required(cfg: RobustnessConfig, infos: list[dict[str, Any]], n: int) -> dict[str, dict[str, int]]:
    """The passes the spec requires for these points (floor.py); shards of older runs lack the steps."""
    if not all("steps" in i for i in infos):
        return {}
    steps = _sum_steps(infos)
    return required_passes(cfg, n_images=n, n_broken=sum(i["n_broken"] for i in infos), steps=steps,
                           done=_sum_passes(infos))


def _sum_checks(infos: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    total: dict[str, dict[str, Any]] = {}
    for info in infos:
        for name, c in info.get("checks", {}).items():
            t = total.setdefault(name, {})
            for k, v in c.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "eps":
                    t[k] = t.get(k, 0) + v
                elif k not in t:
                    t[k] = v
    return total


def _sum_passes(infos: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    total: dict[str, dict[str, int]] = {}
    for info in infos:
        for phase, c in info["passes"].items():
            t = total.setdefault(phase, {"fwd": 0, "fwd_grad": 0, "bwd": 0})
            for k, v in c.items():
                t[k] += v
    return dict(sorted(total.items()))


