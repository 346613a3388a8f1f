"""Time the explanation battery on the embedded subset with timm's test_resnet (untrained, seeded).

    python scripts/bench_explanations.py [--preset quick] [--threads 1] [--limit N]

Prints the wall time of the shards and of finalize, the per-map times from BatteryResult.info, and the
number of fractured images. Numbers depend on the machine: say which one when you report them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import timm
import torch
from fxbench.battery import RunContext
from fxbench.data import load_arrays
from fxbench.definition import PRESETS
from fxbench.explanations import ExplanationBattery
from fxbench.models import wrap
from fxbench.paths import SPECS_DIR


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="quick", choices=PRESETS)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--limit", type=int, default=None, help="class-balanced subset of the eval images")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import yaml

    spec = yaml.safe_load((SPECS_DIR / "v1" / "explanations.yaml").read_text())
    config = {"name": spec["name"], "version": spec["version"], **spec[args.preset]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evalset = load_arrays(limit=args.limit)
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=2, in_chans=1)
    device = torch.device(args.device)
    model = wrap(net, channels=1, mean=(0.5,), std=(0.25,), gradcam_layer=net.layer4).to(device)
    battery = ExplanationBattery()
    with tempfile.TemporaryDirectory() as work:
        ctx = RunContext(
            device=device, seed=0, preset=args.preset, work_dir=Path(work), _tensor_loader=lambda b: {}
        )
        t0 = time.perf_counter()
        outputs = {
            k: battery.run_shard(k, model=model, evalset=evalset, config=config, ctx=ctx)
            for k in battery.shards(evalset, config)
        }
        t1 = time.perf_counter()
        result = battery.finalize(outputs, model=model, evalset=evalset, config=config, ctx=ctx)
        t2 = time.perf_counter()
    print(
        json.dumps(
            {
                "device": str(device),
                "threads": torch.get_num_threads(),
                "preset": args.preset,
                "fractured_images": len(result.samples),
                "shards_s": round(t1 - t0, 1),
                "finalize_s": round(t2 - t1, 1),
                "metrics": len(result.metrics),
                "gallery_files": len(result.files),
                "per_map_s": result.info["timings_s"],
                "unsupported": result.info["unsupported"],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
