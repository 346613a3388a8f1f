"""The audit: evidence that a stored result's run happened, from a sample of its images re-run at review time.

A maintainer runs ``fxbench audit RESULT --nonce N`` once the result's bytes are fixed (its pull request), with
a nonce of their own choosing (e.g. ``openssl rand -hex 16``), which the submitter cannot know in advance. The
audit then

1. checks the submission: its model.yaml and checkpoint are the ones the result names (sha256), and the
   result's ``submission`` block (name, training claims, ...) is exactly what that model.yaml declares;
2. picks ``images_per_class`` fractured and as many non-fractured images of the result, uniformly, seeded by
   ``derive_seed("audit", nonce, sha256 of the result file)``;
3. re-runs them with the submitted model under the version's own battery configuration: the clean decision and
   p(fracture); the robustness cascade at every budget (and its gradient-masking checks); the localisation
   scores of the deterministic explanation maps the spec lists; and every attribution method the result
   declares unsupported, on one image;
4. compares each image's outcome with the per-sample file (rules in ``compare_*``) and writes a record
   (evidence.py) bound to the bytes of every file of the entry.

Why these numbers (the v3 spec's ``leaderboard.audit`` section says them too): a forgery that raises a
balanced accuracy by D must change at least 2 * D * n_class rows of one class (each row moves it by
1 / (2 n_class)), a share 2D of that class; drawing k images of each class uniformly misses all of them with
probability about (1 - 2D)^k: 0.9^32 = 3.4% for D = 0.05 and 0.8^32 = 0.08% for D = 0.1. What the audit does
not see is listed in docs/security.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..battery import EvalSet, derive_seed
from ..errors import FxbenchError
from ..results.metric_ids import clean_id, robust_id, xai_id
from .consistency import robust_budgets

PASS, FAIL = "pass", "fail"


@dataclass(frozen=True)
class AuditSettings:
    """``leaderboard.audit`` of a version's benchmark.yaml (each value's reason is there)."""

    images_per_class: int
    margin_band: float  # |z_fracture - z_other| within which a clean decision may differ between two machines
    max_refuted: int  # images whose claimed robustness the audit's own attack may break before the audit fails
    xai_methods: tuple[str, ...]
    xai_metrics: tuple[str, ...]
    xai_rtol: float
    xai_atol: float

    @property
    def p_atol(self) -> float:
        """Tolerance on p(fracture): d p / d margin = p (1 - p) <= 1/4, plus float32 rounding of p."""
        return self.margin_band / 4 + 1e-7


def audit_settings(version: str) -> AuditSettings:
    from ..definition import load_definition

    sec = (load_definition(version).raw.get("leaderboard") or {}).get("audit")
    if not isinstance(sec, dict):
        raise FxbenchError(f"benchmark {version} defines no audit (no leaderboard.audit in its benchmark.yaml)")
    xai = sec.get("explanations") or {}
    try:
        return AuditSettings(
            images_per_class=int(sec["images_per_class"]), margin_band=float(sec["margin_band"]),
            max_refuted=int(sec["max_refuted"]), xai_methods=tuple(xai.get("methods") or ()),
            xai_metrics=tuple(xai.get("metrics") or ()), xai_rtol=float(xai.get("rtol", 0.0)),
            xai_atol=float(xai.get("atol", 0.0)))
    except (KeyError, TypeError, ValueError) as e:
        raise FxbenchError(f"benchmark {version}: leaderboard.audit is incomplete ({type(e).__name__}: {e})") from None


def audit_seed(nonce: str, result_sha256: str) -> int:
    return derive_seed("audit", nonce, result_sha256)


def select_images(samples: pd.DataFrame, *, seed: int, per_class: int) -> list[str]:
    """``per_class`` fractured and ``per_class`` non-fractured image ids (all of a class when it has fewer),
    uniformly at random from ``seed``; sorted."""
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for label in (1, 0):
        ids = sorted(str(i) for i in samples.loc[samples["label"] == label, "image_id"])
        k = min(per_class, len(ids))
        chosen += [ids[j] for j in rng.choice(len(ids), size=k, replace=False)]
    return sorted(chosen)


def subset(evalset: EvalSet, ids: list[str]) -> EvalSet:
    """The evaluation set restricted to ``ids`` (in the evaluation set's own order)."""
    where = {i: k for k, i in enumerate(evalset.ids)}
    absent = [i for i in ids if i not in where]
    if absent:
        raise FxbenchError(f"image {absent[0]} of the result is not in the data given ({evalset.dataset.name}, "
                           f"{len(evalset)} images): audit with the data the result was computed on")
    rows = sorted(where[i] for i in ids)
    return EvalSet(ids=[evalset.ids[r] for r in rows], x=evalset.x[rows], y=evalset.y[rows],
                   masks=evalset.masks[rows], meta=evalset.meta.iloc[rows].reset_index(drop=True),
                   dataset=evalset.dataset)


# ---- the comparisons: each returns (findings, fatal problems) ----------------------------------------------


def compare_submission(claimed: dict[str, Any], loaded: dict[str, Any]) -> list[str]:
    """The result's ``submission`` block must be what the audited model.yaml and checkpoint give."""
    keys = sorted(k for k in set(claimed) | set(loaded) if claimed.get(k) != loaded.get(k))
    return [f"submission.{k} is {claimed.get(k)!r} in the result, but the audited submission gives "
            f"{loaded.get(k)!r}" for k in keys]


def compare_clean(samples: pd.DataFrame, logits: np.ndarray, ids: list[str], s: AuditSettings) -> dict[str, Any]:
    """Decision exact unless the audit's margin is within the band; p(fracture) within ``s.p_atol``."""
    rows = samples.set_index("image_id").loc[ids]
    margin = logits[:, 1].astype(np.float64) - logits[:, 0].astype(np.float64)
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z[:, 1]) / np.exp(z).sum(axis=1)
    pred = (margin >= 0).astype(int)  # fxbench.decision: a tie is a fracture
    out = []
    for k, i in enumerate(ids):
        claimed_pred, claimed_p = int(rows.loc[i, clean_id("pred")]), float(rows.loc[i, clean_id("p_fracture")])
        wrong_pred = claimed_pred != pred[k] and abs(margin[k]) > s.margin_band
        if wrong_pred or not abs(claimed_p - p[k]) <= s.p_atol:
            out.append({"image_id": i, "claimed": {"pred": claimed_pred, "p_fracture": claimed_p},
                        "audit": {"pred": int(pred[k]), "p_fracture": float(p[k]), "margin": float(margin[k])}})
    problems = [f"clean outcome of {len(out)} of {len(ids)} images differs from the result's (e.g. "
                f"{out[0]['image_id']}: p(fracture) {out[0]['claimed']['p_fracture']:.6g} claimed, "
                f"{out[0]['audit']['p_fracture']:.6g} re-run)"] if out else []
    return {"compared": len(ids), "mismatched": out, "problems": problems}


def compare_robust(samples: pd.DataFrame, audit: pd.DataFrame, s: AuditSettings, *, audit_flags: list[str],
                   claimed_flags: set[str], unranked_flags: frozenset[str]) -> dict[str, Any]:
    """Per image and budget. The result claims robust where the audit's attack broke the point: refuted (the
    audit holds a verified adversarial example); more than ``max_refuted`` such images fail the audit (two
    runs of the cascade with other random starts may differ on a point near the boundary). The result claims
    broken where the audit's attack did not break it: counted, not a failure (a claim against the model)."""
    claimed = samples.set_index("image_id").loc[audit["image_id"]]
    budgets = [b for bs in robust_budgets(audit).values() for b in bs]
    refuted, unconfirmed = [], []
    for b in budgets:
        col = robust_id(b, "correct")
        if col not in claimed:
            refuted += [{"image_id": "*", "budget": b, "why": f"the result has no {col}"}]
            continue
        mine, theirs = audit[col].to_numpy(float), claimed[col].to_numpy(float)
        for i, a, c in zip(audit["image_id"], mine, theirs, strict=True):
            if c == 1 and a == 0:
                refuted.append({"image_id": i, "budget": b})
            elif c == 0 and a == 1:
                unconfirmed.append({"image_id": i, "budget": b})
    extra = sorted(set(b for bs in robust_budgets(samples).values() for b in bs) - set(budgets))
    n_refuted = len({r["image_id"] for r in refuted})
    problems = []
    if extra:
        problems.append(f"the result has robust columns at budgets {extra} that this preset does not attack")
    if n_refuted > s.max_refuted:
        e = refuted[0]
        problems.append(f"the audit's attack broke {n_refuted} image(s) the result claims robust (at most "
                        f"{s.max_refuted} allowed; e.g. {e['image_id']} at {e['budget']})")
    missing = sorted(c for c in set(audit_flags) & unranked_flags if c not in claimed_flags)
    if missing:
        problems.append(f"the audit's robustness checks raised {', '.join(missing)} on the sample, a flag that "
                        "keeps a result out of the ranking; the result carries none")
    return {"budgets": budgets, "compared": len(audit) * len(budgets), "refuted": refuted,
            "unconfirmed": unconfirmed, "flags": sorted(set(audit_flags)), "problems": problems}


def compare_scores(samples: pd.DataFrame, scores: dict[str, dict[str, float]], s: AuditSettings) -> dict[str, Any]:
    """Explanation scores (column -> image -> score): equal within ``xai_rtol`` / ``xai_atol``; NaN as NaN."""
    rows = samples.set_index("image_id")
    out = []
    for col, per_image in sorted(scores.items()):
        for i, mine in sorted(per_image.items()):
            theirs = float(rows.loc[i, col]) if col in rows else math.nan
            both_nan = math.isnan(mine) and math.isnan(theirs)
            if not both_nan and not math.isclose(mine, theirs, rel_tol=s.xai_rtol, abs_tol=s.xai_atol):
                out.append({"image_id": i, "column": col, "claimed": theirs, "audit": mine})
    n = sum(len(v) for v in scores.values())
    problems = [f"{len(out)} of {n} explanation scores differ from the result's (e.g. {out[0]['column']} of "
                f"{out[0]['image_id']}: {out[0]['claimed']:.6g} claimed, {out[0]['audit']:.6g} re-run)"] if out else []
    return {"compared": n, "mismatched": out, "problems": problems}


# ---- re-running the sample ----------------------------------------------------------------------------------


def rerun_clean(model, ev: EvalSet, config: dict[str, Any]) -> np.ndarray:
    from ..clean import clean_logits
    from ..models import strict_fp32

    with strict_fp32():
        return clean_logits(model, ev.x, batch_size=int(config["batch_size"])).numpy()


def rerun_robustness(model, ev: EvalSet, config: dict[str, Any], *, seed: int, device, preset: str,
                     battery=None) -> tuple[pd.DataFrame, list[str]]:
    """The robustness battery's shards on the sample, through the shard recipe (seeds, strict float32)."""
    import tempfile
    from pathlib import Path

    from ..battery import RunContext
    from ..executors.shard import compute
    from ..robustness.battery import RobustnessBattery

    battery = battery or RobustnessBattery()
    cfg = battery.configure(config)
    with tempfile.TemporaryDirectory(prefix="fxbench-audit-") as tmp:
        ctx = RunContext(device=device, seed=seed, preset=preset, work_dir=Path(tmp))
        outs = [compute(battery, key, model=model, evalset=ev, config=cfg, ctx=ctx)
                for key in battery.shards(ev, cfg)]
    flags = sorted({f.code for o in outs for f in o.flags})
    return pd.concat([o.samples for o in outs], ignore_index=True), flags


def rerun_explanations(model, ev: EvalSet, config: dict[str, Any], s: AuditSettings, *, unsupported: set[str],
                       seed: int, device) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Localisation scores of the spec's deterministic maps on the sample's fractured images; and, for each
    method the result declares unsupported, whether it computes on one image (method -> what the audit saw)."""
    from ..explanations.config import parse_config
    from ..explanations.maps import compute_maps, for_localisation, metric_inputs
    from ..explanations.methods import UnsupportedMethod
    from ..models import strict_fp32

    cfg = parse_config(config)
    unknown = sorted(set(s.xai_metrics) - set(cfg.localisation)) + sorted(set(s.xai_methods) - set(cfg.maps))
    if unknown:  # a silent skip would audit less than the spec says
        raise FxbenchError(f"audit settings: {', '.join(unknown)} not in the explanation battery's spec; the "
                           f"audit can compare only the localisation metrics and maps the battery scores.")
    frac = [k for k in range(len(ev)) if int(ev.y[k]) == 1]
    x, masks = ev.x[frac].float(), ev.masks[frac].bool()
    ids = [ev.ids[k] for k in frac]
    scores: dict[str, dict[str, float]] = {}
    checked: dict[str, str] = {}
    with strict_fp32():
        for name in sorted(unsupported):
            if name not in cfg.maps or not ids:
                continue
            try:
                compute_maps(name, model, x[:1], masks[:1], cfg, seed, device)
                checked[name] = "computes"
            except UnsupportedMethod as e:
                checked[name] = f"unsupported: {e.reason}"
        for name in s.xai_methods:
            if name in unsupported or not ids:
                continue
            maps, _ = compute_maps(name, model, x, masks, cfg, seed, device)
            # the scale the battery scores at (v3 blurs every map but the mask ceiling; v1/v2 score the map)
            inputs = metric_inputs(x, for_localisation(name, maps, cfg), masks, model, device, cfg, seed)
            for metric in s.xai_metrics:
                choice = cfg.localisation[metric]
                values = choice.metric.score(inputs, choice.params).values
                scores[xai_id(name, metric)] = {i: float(v) for i, v in zip(ids, values, strict=True)}
    return scores, checked


def audit_result(result: dict[str, Any], samples: pd.DataFrame, *, model, submission: dict[str, Any],
                 evalset: EvalSet, nonce: str, result_sha256: str, device, robustness_battery=None,
                 unranked_flags: frozenset[str] | None = None) -> dict[str, Any]:
    """Re-run the sample and compare (module docstring). Returns the record's findings, without ``files`` and
    ``digest`` (``audit_entry`` adds them); ``verdict`` is "pass" or "fail" with the ``problems``."""
    from ..definition import load_definition

    b = result["benchmark"]
    version, preset = b["version"], b["preset"]
    if evalset.dataset.fingerprint != b["dataset"]["fingerprint"]:
        raise FxbenchError(f"the data given has fingerprint {evalset.dataset.fingerprint[:12]}..., the result was "
                           f"computed on {b['dataset']['fingerprint'][:12]}...: audit with the same data")
    s = audit_settings(version)
    d = load_definition(version)
    if unranked_flags is None:
        unranked_flags = frozenset((d.raw.get("leaderboard") or {}).get("unranked_flags") or ())
    seed = audit_seed(nonce, result_sha256)
    ids = select_images(samples, seed=seed, per_class=s.images_per_class)
    ev = subset(evalset, ids)
    problems = compare_submission(result["submission"], submission)
    clean = compare_clean(samples, rerun_clean(model, ev, d.battery_config("clean", preset)), ev.ids, s)
    run_seed = int((result.get("provenance") or {}).get("seed") or 0)
    robust_samples, flags = rerun_robustness(model, ev, d.battery_config("robustness", preset), seed=run_seed,
                                             device=device, preset=preset, battery=robustness_battery)
    codes = {f.get("code") for f in result.get("flags") or []}
    robust = compare_robust(samples, robust_samples, s, audit_flags=flags, claimed_flags=codes,
                            unranked_flags=unranked_flags)
    xai_info = (result.get("components") or {}).get("explanations") or {}
    unsupported = {k for k in (xai_info.get("unsupported") or {}) if "/" not in k}
    xai: dict[str, Any] = {"compared": 0, "mismatched": [], "problems": []}
    if "explanations" in d.raw["batteries"] and "explanations" in (b["config"].get("batteries") or {}):
        scores, checked = rerun_explanations(model, ev, d.battery_config("explanations", preset), s,
                                             unsupported=unsupported, seed=run_seed, device=device)
        xai = compare_scores(samples, scores, s)
        xai["unsupported_checked"] = checked
        false = sorted(k for k, v in checked.items() if v == "computes")
        if false:
            xai["problems"].append(f"the result declares {', '.join(false)} unsupported, but the audit computes "
                                   "it on this model")
    problems += clean["problems"] + robust["problems"] + xai["problems"]
    return {
        "submission": result["submission"]["id"], "version": version, "preset": preset,
        "submission_files": {k: submission.get(k) for k in ("yaml_sha256", "checkpoint_sha256")},
        "result_sha256": result_sha256, "nonce": nonce, "seed": seed, "images": ids, "settings": asdict(s),
        "clean": clean, "robustness": robust, "explanations": xai,
        "verdict": FAIL if problems else PASS, "problems": problems,
    }


__all__ = ["FAIL", "PASS", "AuditSettings", "audit_result", "audit_seed", "audit_settings", "compare_clean",
           "compare_robust", "compare_scores", "compare_submission", "select_images", "subset"]
