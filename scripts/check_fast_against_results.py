"""Recompute a committed v2 result's model-metric columns on the batched path and compare them.

    python scripts/check_fast_against_results.py                      # the ERM baseline's v2 result
    python scripts/check_fast_against_results.py --submission fxb-resnet10t-pgdat

The committed v2 results were computed with Quantus. This recomputes, for the images of the model-metric
subset, exactly what the explanation battery's shards computed (the same shards, seeds, maps and inputs,
from the result's recorded seed and preset) on both paths, and prints the largest difference per column:
fast against Quantus now, and each against the committed samples. Needs the prepared dataset (`fxbench data prepare`) the result was
computed on; exits 1 when the fast path differs from Quantus (recomputed now, on the same maps) by more
than --tol. The committed values themselves are matched to the precision the maps are reproduced with
(thread count and library versions move float32 maps in the last bits).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--submission", default="fxb-resnet10t-erm")
    ap.add_argument("--version", default="v2")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    from fxbench.battery import RunContext
    from fxbench.data import load_arrays
    from fxbench.definition import load_definition
    from fxbench.explanations import fast
    from fxbench.explanations.battery import Columns, ExplanationBattery
    from fxbench.explanations.config import parse_config
    from fxbench.explanations.maps import compute_maps, metric_inputs
    from fxbench.explanations.selection import first_fractured_ids, fractured_rows, shard_rows, sub_seed
    from fxbench.models import load_submission

    base = REPO / "leaderboard" / "results" / args.version / args.submission
    result = json.loads(base.with_suffix(".json").read_text())
    committed = pd.read_parquet(base.with_suffix(".parquet")).set_index("image_id")
    preset = result["benchmark"]["preset"]
    config = result["benchmark"]["config"]["batteries"]["explanations"]  # as the run used it (hashed in the result)
    assert config == load_definition(args.version).battery_config("explanations", preset)
    cfg = parse_config(config)
    model = load_submission(REPO / "submissions" / args.submission / "model.yaml").model
    evalset = load_arrays(split="eval")
    if evalset.dataset.fingerprint != result["benchmark"]["dataset"]["fingerprint"]:
        print("the prepared dataset is not the one the result was computed on", file=sys.stderr)
        return 2
    ctx = RunContext(device=torch.device("cpu"), seed=int(result["provenance"]["seed"]), preset=preset,
                     work_dir=Path("."), _tensor_loader=lambda b: {})
    b = ExplanationBattery()
    subset = set(first_fractured_ids(evalset, cfg.model_samples))
    frac = fractured_rows(evalset)
    got: dict[str, dict[str, np.ndarray]] = {"fast": {}, "quantus": {}}
    want: dict[str, np.ndarray] = {}
    for key in b.shards(evalset, config):
        rows = shard_rows(key, evalset, cfg.chunk_size)
        ids = [evalset.ids[i] for i in rows]
        in_subset = np.array([i in subset for i in ids], dtype=bool)
        if not in_subset.any():
            continue
        seed = ctx.shard_seed(b.name, key)
        x, masks = evalset.x[rows].float(), evalset.masks[rows].bool()
        seeds = b.image_seeds(ctx, ids, cfg)
        names = [n for n in cfg.maps if any(n in c.methods for c in cfg.model_metrics.values())]
        for name in names:
            maps, signed = compute_maps(name, model, x, masks, cfg, sub_seed(seed, name), torch.device("cpu"))
            inputs = metric_inputs(x, maps, masks, model, "cpu", cfg, sub_seed(seed, name, "metrics"))
            signed_inputs = metric_inputs(x, signed, masks, model, "cpu", cfg, inputs.seed)
            for path in ("fast", "quantus"):  # the same maps and inputs through both paths
                os.environ[fast.PATH_ENV] = path
                cols, info = Columns(ids), {"failed": {}}
                b.model_metrics(name, inputs, signed_inputs, in_subset, seeds, cfg, cols, info, seed)
                assert set(info["metric_paths"].values()) == {path}, info["metric_paths"]
                for col in info["metric_paths"]:
                    v = np.asarray(cols.data[col], dtype=float)[in_subset]
                    got[path][col] = np.concatenate([got[path].get(col, []), v])
                    if path == "fast":
                        w = committed.loc[[i for i, k in zip(ids, in_subset) if k], col].to_numpy(dtype=float)
                        want[col] = np.concatenate([want.get(col, []), w])

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        if not (np.isnan(a) == np.isnan(b)).all():
            return float("inf")
        return float(np.nanmax(np.abs(a - b))) if np.isfinite(b).any() else 0.0

    print(f"{args.submission} ({args.version}, {preset}, {args.threads} thread(s)): the {len(subset)} images of "
          f"the model-metric subset ({len(frac)} fractured); max |difference| per column")
    print(f"  {'column':50s} {'fast - Quantus now':>20s} {'fast - committed':>18s} {'Quantus now - committed':>24s}")
    worst = 0.0
    for col in sorted(want):
        f_q = diff(got["fast"][col], got["quantus"][col])
        worst = max(worst, f_q)
        print(f"  {col:50s} {f_q:20.2e} {diff(got['fast'][col], want[col]):18.2e} "
              f"{diff(got['quantus'][col], want[col]):24.2e}")
    return 0 if want and worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
