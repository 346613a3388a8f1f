"""The passes a spec requires for a given set of points: the floor against which the passes done are compared.

"Required" means: what an evaluation needs that stops attacking a point at the first step that breaks it and
never evaluates the same point twice, given which points each attack had to attack and at which step each one
broke (the ``steps`` the cascade records). Per image:
- clean: one forward pass.
(Pass counts: "fwd" counts every forward pass, those with a graph to the input included; "fwd_grad" those
with a graph; "bwd" backward passes.)
- APGD (per attack and budget): one forward pass with a graph and one backward pass per step until the point
  broke (the random start counts as step 0), n_iter + 1 steps per restart if it never broke, times eot_iter.
- FAB (once per norm, reused across budgets when it has no random start): per step one gradient pass (the
  difference of the two logits) and one forward pass (is the new point adversarial?), plus one forward pass at
  the start. A minimal-norm attack needs all its steps: it keeps shrinking the perturbation after a success.
- Square: one forward pass per query the point was given (the library stops querying a broken point).
- verify: one forward pass per recorded adversarial example (the independent re-check).
- checks (phases starting "check-"): as done; their size is fixed by the spec (`checks`, points per chunk).

Time floor: the passes required, priced at the plain batched rates of this model on this device, measured in
the same run (``measure_rates``: full batches at the battery's batch size, no attack logic). An attack's
wall / floor ratio says how far its implementation is from the cost the spec makes unavoidable; above 1
come small batches of survivors, attack logic and Python overhead.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .config import RobustnessConfig

KINDS = ("fwd", "fwd_grad", "bwd")


def _zero() -> dict[str, int]:
    return dict.fromkeys(KINDS, 0)


def required_passes(cfg: RobustnessConfig, *, n_images: int, n_broken: int,
                    steps: dict[str, dict[str, dict[str, int]]],
                    done: dict[str, dict[str, int]] | None = None) -> dict[str, dict[str, int]]:
    """``steps``: budget id -> attack -> {"points": attacked points, "steps": sum of their steps (APGD, FAB) or
    queries (Square)}, as recorded in the battery's info. ``n_broken``: adversarial examples recorded (one per
    image and norm). ``done``: the passes done, for the check phases (required = done there)."""
    req: dict[str, dict[str, int]] = {"clean": {"fwd": n_images, "fwd_grad": 0, "bwd": 0},
                                      "verify": {"fwd": n_broken, "fwd_grad": 0, "bwd": 0}}
    opts = {a.name: a.options for a in cfg.attacks}
    for per_attack in steps.values():
        for name, rec in per_attack.items():
            r = req.setdefault(name, _zero())
            s = int(rec["steps"])
            if name.startswith("apgd"):
                r["fwd"] += s
                r["fwd_grad"] += s
                r["bwd"] += s
            elif name == "fab":
                started = s // max(int(opts[name]["n_iter"]), 1)  # points FAB ran on (reused ones record 0)
                r["fwd"] += 2 * s + started  # "fwd" counts every forward, the gradient ones included
                r["fwd_grad"] += s
                r["bwd"] += s
            else:  # square: queries
                r["fwd"] += s
    for phase, c in (done or {}).items():
        if phase.startswith("check-"):
            req[phase] = dict(c)
    return dict(sorted(req.items()))


def required_calls(cfg: RobustnessConfig, steps: dict[str, dict[str, dict[str, Any]]]) -> dict[str, int]:
    """Model calls (batches, whatever their size) that the spec's iterations need when each attack at each
    budget runs as ONE stream over every point of the split (v3): per stream, as many calls as its longest
    point needs (``max`` in the battery's steps: APGD steps including the random start, Square queries
    including the first), FAB one call at the start and two per step (a gradient, then "is it adversarial
    yet?"). Points in a stream share its calls, so this does not grow with the number of images; v2's chunks
    of 256 paid each stream once per chunk."""
    out: dict[str, int] = {}
    for per in steps.values():
        for name, rec in per.items():
            m = int(rec.get("max", 0))
            if m <= 0:
                continue
            out[name] = out.get(name, 0) + (1 + 2 * m if name == "fab" else m)
    return dict(sorted(out.items()))


def call_ratios(calls: dict[str, int], required: dict[str, int]) -> dict[str, Any]:
    """Model calls made against the iterations ``required_calls``: per attack, and in total over EVERY call
    (clean, verdict, verify and the checks included in the numerator, not in the denominator)."""
    per = {p: {"calls": int(calls.get(p, 0)), "required": r, "ratio": round(calls.get(p, 0) / r, 3)}
           for p, r in required.items()}
    total, req = sum(int(c) for c in calls.values()), sum(required.values())
    return {"by_attack": per, "other": {p: int(c) for p, c in calls.items() if p not in required},
            "total": {"calls": total, "required": req, "ratio": round(total / req, 3) if req else None}}


def ratios(done: dict[str, dict[str, int]], required: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Per phase and in total: passes done / passes required (images through fwd + backward passes)."""
    def total(c: dict[str, int]) -> int:
        return int(c.get("fwd", 0)) + int(c.get("bwd", 0))

    out: dict[str, Any] = {}
    for phase in sorted(set(done) | set(required)):
        d, r = total(done.get(phase, {})), total(required.get(phase, {}))
        out[phase] = {"done": d, "required": r, "ratio": round(d / r, 3) if r else None}
    d = sum(total(c) for c in done.values())
    r = sum(total(c) for c in required.values())
    out["total"] = {"done": d, "required": r, "ratio": round(d / r, 3) if r else None}
    return out


CPU_PROBE_BATCH = 8  # images in the rate probe on a CPU (battery.py); an accelerator uses a full batch


def probe_size(batch_size: int, device: torch.device) -> int:
    """Images in the rate probe: a full battery batch on an accelerator; on a CPU a small one (cost per image
    does not fall with the batch there, and a full-batch probe cost ~10 s of a 2-minute first run)."""
    return batch_size if device.type == "cuda" else min(CPU_PROBE_BATCH, batch_size)


def measure_rates(model: torch.nn.Module, x: torch.Tensor, *, repeats: int = 3) -> dict[str, Any]:
    """Seconds per image of a plain batched forward pass (no graph) and of a forward + backward pass to the
    input, on ``x`` (one batch, on the model's device): the fastest of ``repeats`` timed passes after one
    warm-up pass of each (a floor is a best case: a pass slowed by the allocator or the machine is not it)."""
    dev = x.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def fwd() -> None:
        with torch.no_grad():
            model(x)

    def fwd_bwd() -> None:
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            z = model(xg)
            if z.requires_grad:  # a constant model's logits have no graph to the input: nothing to go back through
                torch.autograd.grad(z.sum(), xg, allow_unused=True)

    out: dict[str, Any] = {"batch": int(x.shape[0]), "device": str(dev), "repeats": repeats}
    for name, fn in (("fwd_s_per_image", fwd), ("fwd_bwd_s_per_image", fwd_bwd)):
        fn()
        sync()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - t0)
        out[name] = best / int(x.shape[0])
    return out


def floor_seconds(c: dict[str, int], rates: dict[str, Any]) -> float:
    """Seconds that pass counts ``c`` take at ``rates`` (``measure_rates``): forward-only passes at the forward
    rate, passes with a graph at the forward + backward rate, and each further backward through the same
    forward (one per logit) at the cost of a backward alone."""
    t_f, t_fb = float(rates["fwd_s_per_image"]), float(rates["fwd_bwd_s_per_image"])
    grad, bwd = int(c.get("fwd_grad", 0)), int(c.get("bwd", 0))
    return (int(c.get("fwd", 0)) - grad) * t_f + grad * t_fb + max(0, bwd - grad) * max(0.0, t_fb - t_f)


def time_floor(required: dict[str, dict[str, int]], wall_s: dict[str, float],
               rates: dict[str, Any]) -> dict[str, Any]:
    """Per phase with a measured wall time (the attacks) and in total: the floor in seconds (the passes
    required, priced by ``floor_seconds``), the wall seconds and wall / floor."""
    out: dict[str, Any] = {}
    tw = tf = 0.0
    for phase in sorted(wall_s):
        f, w = floor_seconds(required.get(phase, {}), rates), float(wall_s[phase])
        out[phase] = {"wall_s": round(w, 3), "floor_s": round(f, 3), "ratio": round(w / f, 2) if f > 0 else None}
        tw, tf = tw + w, tf + f
    out["total"] = {"wall_s": round(tw, 3), "floor_s": round(tf, 3), "ratio": round(tw / tf, 2) if tf > 0 else None}
    return out


def _checks_bound(cfg: RobustnessConfig, n_chunks: int) -> dict[str, int]:
    """Passes of the evaluator's checks at most (their sizes are points per chunk in the spec)."""
    c = cfg.checks
    if c is None:
        return _zero()
    opts = {a.name: a.options for a in cfg.attacks}
    unb = opts.get(c.unbounded_attack, {})
    steps = (int(unb.get("n_iter", 0)) + 1) * int(unb.get("n_restarts", 1)) * int(unb.get("eot_iter", 1))
    grad = n_chunks * (2 * c.fd_points + c.unbounded_points * steps) + c.model_points
    fwd = grad + n_chunks * (2 * 2 * c.fd_points + 2 * c.fd_points + c.unbounded_points + c.transfer_points)
    return {"fwd": fwd + 4 * c.model_points, "fwd_grad": grad, "bwd": grad}


def bounds(cfg: RobustnessConfig, n_images: int) -> dict[str, dict[str, int]]:
    """The passes the spec can require on ``n_images`` images, before anything is known about the model:
    ``lower`` (every image broken by the first APGD step at each norm's first budget) and ``upper`` (every
    image classified correctly and never broken, so every attack runs every step on every image; FAB once per
    norm). A run's own ``passes_required`` lies between the two; the cost print before a run prices both."""
    n_chunks = max(1, -(-n_images // cfg.chunk_size))
    shards_per_chunk = 1 if cfg.shard_by == "chunk" else len([n for n in ("linf", "l2") if cfg.by_norm(n)])
    clean = {"fwd": n_images * shards_per_chunk, "fwd_grad": 0, "bwd": 0}
    upper: dict[str, int] = dict(clean)
    lower: dict[str, int] = dict(clean)
    for norm in ("linf", "l2"):
        budgets = cfg.by_norm(norm)
        fab_done = False
        for k, b in enumerate(budgets):
            for a in cfg.attacks_for(b):
                o = a.options
                if a.name.startswith("apgd"):
                    s = n_images * (int(o["n_iter"]) + 1) * int(o["n_restarts"]) * int(o["eot_iter"])
                    upper = _add(upper, {"fwd": s, "fwd_grad": s, "bwd": s})
                elif a.name == "fab":
                    if fab_done and int(o["n_restarts"]) == 1:
                        continue
                    fab_done = True
                    s = n_images * int(o["n_iter"]) * int(o["n_restarts"])
                    upper = _add(upper, {"fwd": 2 * s + n_images, "fwd_grad": s, "bwd": s})
                else:
                    upper = _add(upper, {"fwd": n_images * (int(o["n_queries"]) + 1) * int(o["n_restarts"])})
            if k == 0:  # the first step of the first attack breaks everything; the rest of the norm is free
                lower = _add(lower, {"fwd": 2 * n_images, "fwd_grad": n_images, "bwd": n_images})
    checks = _checks_bound(cfg, n_chunks)
    return {"lower": lower, "upper": _add(upper, checks)}


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: int(a.get(k, 0)) + int(b.get(k, 0)) for k in KINDS}


def price(cfg: RobustnessConfig, n_images: int, rates: dict[str, Any]) -> dict[str, float]:
    """Seconds the spec's passes take at ``rates`` on ``n_images`` images, at both ``bounds``: the cost print
    of `fxbench run` (a floor: the wall time adds attack logic and smaller batches of survivors)."""
    b = bounds(cfg, n_images)
    return {"lower_s": floor_seconds(b["lower"], rates), "upper_s": floor_seconds(b["upper"], rates)}
