"""Model-querying explanation metrics: Quantus against the batched path (explanations/fast.py), and the floor.

    python scripts/bench_explanations_fast.py                       # ERM ResNet-10t, 16 fractured images, v2 full
    python scripts/bench_explanations_fast.py --images 64 --device cuda
    python scripts/bench_explanations_fast.py --metrics pixel_flipping --preset quick

Per metric, on the same inputs, seeds and parameters (the v2 spec's preset), in one run: the wall time of
Quantus itself and of the fast path, their ratio, the largest |fast - Quantus| over the images, and the
floor: the passes the metric requires times the plain batched rate measured here (forward passes for
FaithfulnessCorrelation and PixelFlipping; attribution calls of the method for MaxSensitivity and MPRT).

Passes required per image: FaithfulnessCorrelation 1 + nr_runs forwards; PixelFlipping ceil(P / step)
forwards + 2 (the clean image and the all-removed one, for the normalised curve); MaxSensitivity nr_samples
explanations; MPRT 1 explanation on the randomised model (the trained model's map is given). Maps: saliency,
signed where the spec scores signed maps. Writes --out as JSON. Say which machine when reporting numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _timed(fn) -> tuple[float, object]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def forward_rate(model, x: torch.Tensor, batch: int) -> float:
    """Images per second of a plain no-grad forward in batches of ``batch`` (best of 3 after a warm-up)."""
    xs = x[:1].expand(batch, *x.shape[1:]).contiguous()
    with torch.no_grad():
        model(xs)
        best = min(_timed(lambda: model(xs))[0] for _ in range(3))
    return batch / best


def explain_rate(explain, model, x: np.ndarray, batch: int) -> float:
    """Images per second of the attribution method itself, in the battery's batches."""
    xs = np.repeat(x[:1], batch, axis=0)
    t = np.ones(batch, dtype=np.int64)
    explain(model=model, inputs=xs, targets=t)
    best = min(_timed(lambda: explain(model=model, inputs=xs, targets=t))[0] for _ in range(2))
    return batch / best


def _values(metric, inp, params) -> np.ndarray:
    return metric.score(inp, params).values


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--submission", type=Path, default=REPO / "submissions/fxb-resnet10t-erm/model.yaml")
    ap.add_argument("--images", type=int, default=16, help="fractured images (evaluation split, in order)")
    ap.add_argument("--data", type=Path, default=None, help="prepared dataset (default: fxbench's, else embedded)")
    ap.add_argument("--preset", default="full", choices=["full", "quick"], help="the v2 spec's parameters")
    ap.add_argument("--metrics", nargs="*", default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    import yaml
    from fxbench.data import load_arrays
    from fxbench.explanations import METRICS, MetricInputs, attribute, fast, parse_config
    from fxbench.explanations.maps import explainer
    from fxbench.models import load_submission
    from fxbench.paths import SPECS_DIR

    spec = yaml.safe_load((SPECS_DIR / "v2" / "explanations.yaml").read_text())
    cfg = parse_config({"name": spec["name"], "version": spec["version"], **spec[args.preset]})
    device = torch.device(args.device)
    model = load_submission(args.submission, device=str(device)).model
    ev = load_arrays(args.data, split="eval")
    rows = [i for i in range(len(ev)) if int(ev.y[i]) == 1][: args.images]
    x = ev.x[rows].float()
    p_sal = cfg.methods["saliency"]
    signed = attribute(model, x.to(device), name="saliency", params=p_sal, batch_size=cfg.batch_size, signed=True)
    reduced = attribute(model, x.to(device), name="saliency", params=p_sal, batch_size=cfg.batch_size)
    explain = explainer("saliency", cfg, device)
    seeds = np.arange(len(rows), dtype=np.int64) + 1000
    n, n_pix = len(rows), x[0].numel()
    # Model calls (forward passes of any batch size, backward passes not counted): where one call is
    # latency-bound (a GPU at one image per call), the time follows the calls, not the images.
    calls: list[int] = []
    model.register_forward_pre_hook(lambda mod, args: calls.append(len(args[0])))

    def required(name, p) -> tuple[int, float]:
        """(passes the metric requires, the plain batched rate of that pass, measured now: the machine's
        load drifts, so each metric is read against a rate taken next to it)."""
        if name in ("faithfulness_correlation", "pixel_flipping"):
            rate = forward_rate(model, x.to(device), fast.forward_batch_size(device))
            per = 1 + p.nr_runs if name == "faithfulness_correlation" else math.ceil(n_pix / p.features_in_step) + 2
            return n * per, rate
        rate = explain_rate(explain, model, x.numpy(), cfg.batch_size if device.type != "cpu" else 8)
        return n * (p.nr_samples if name == "max_sensitivity" else 1), rate

    table = []
    for name, choice in cfg.model_metrics.items():
        if args.metrics and name not in args.metrics:
            continue
        maps = signed if choice.signed else reduced
        inp = MetricInputs(
            x=x.numpy(), maps=maps.numpy(), masks=np.ones(maps.shape, bool), model=model,
            explain=explain if choice.metric.needs_explain else None, device=str(device),
            batch_size=cfg.batch_size, seed=7, seeds=seeds, ties=cfg.ties, constant_maps=cfg.constant_maps,
        )
        m = METRICS.get(name)
        assert fast.path_for(name, inp, choice.params) == "fast", name
        calls.clear()
        t_q, ref = _timed(partial(_values, m, dataclasses.replace(inp, reference=True), choice.params))
        c_q = len(calls)
        calls.clear()
        t_f, got = _timed(partial(_values, m, inp, choice.params))
        c_f = len(calls)
        passes, rate = required(name, choice.params)
        load = os.getloadavg()[0]
        floor = passes / rate
        table.append({
            "metric": name, "images": n, "quantus_s": round(t_q, 2), "fast_s": round(t_f, 2),
            "speedup": round(t_q / t_f, 1), "model_calls_quantus": c_q, "model_calls_fast": c_f, "passes_required": passes, "rate_per_s": round(rate, 1),
            "floor_s": round(floor, 2), "fast_over_floor": round(t_f / floor, 2),
            "max_abs_diff": float(np.nanmax(np.abs(got - ref))), "load_avg_1min": round(load, 1),
        })
        print(json.dumps(table[-1]), flush=True)
    report = {
        "submission": args.submission.parent.name, "preset": args.preset, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpus": os.cpu_count(), "threads": args.threads, "torch": torch.__version__, "table": table,
    }
    print("\n| metric | images | Quantus s | fast s | Quantus / fast | model calls Quantus / fast | passes required "
          "| rate /s | floor s | fast / floor | max abs diff |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['metric']} | {r['images']} | {r['quantus_s']} | {r['fast_s']} | {r['speedup']} | "
              f"{r['model_calls_quantus']} / {r['model_calls_fast']} | "
              f"{r['passes_required']} | {r['rate_per_s']} | {r['floor_s']} | {r['fast_over_floor']} | "
              f"{r['max_abs_diff']:.1e} |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
