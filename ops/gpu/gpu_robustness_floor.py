"""How close does fxbench-AA come to the hardware floor? (issue 4: target <= 1.5x)

Builds a random-init timm ResNet-18 (2 classes, 3 input channels behind the canonical wrapper, ImageNet
normalisation), measures plain batched forward and forward+backward (gradient to the input, as the attacks
need) rates on the device, runs the robustness battery on N synthetic images labelled with the model's own
predictions (so every image is attacked), counts the images that went through forward and backward passes,
and reports wall time, floor = the time the passes the spec REQUIRES take at the measured rates
(fxbench.robustness.floor: each point attacked until it breaks, nothing evaluated twice), wall / floor, and
the passes done against the passes required.

    python ops/gpu/gpu_robustness_floor.py                       # CUDA, full preset, 64 images
    python ops/gpu/gpu_robustness_floor.py --device cpu --small  # smoke test: quick preset, 4 images

Writes $OUT/gpu_robustness_floor.json when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from fxbench.battery import DatasetInfo, EvalSet, RunContext
from fxbench.models import wrap
from fxbench.paths import SPECS_DIR
from fxbench.robustness import RobustnessBattery
from fxbench.robustness.floor import floor_seconds, measure_rates, ratios


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def battery_config(preset: str) -> dict:
    spec = yaml.safe_load((SPECS_DIR / "v2" / "robustness.yaml").read_text())
    return {"name": spec["name"], "version": spec["version"], **spec[preset]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="quick preset, 4 images: a CPU smoke test")
    ap.add_argument("--n", type=int, default=None, help="images (default 64, --small 4)")
    ap.add_argument("--preset", default=None, help="battery preset (default full, --small quick)")
    ap.add_argument("--repeats", type=int, default=None, help="timed passes per rate (the fastest counts)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: use --device cpu --small")
    n = args.n or (4 if args.small else 64)
    preset = args.preset or ("quick" if args.small else "full")
    repeats = args.repeats or (3 if args.small else 20)

    import timm

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=2, in_chans=3)
    model = wrap(net, channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)).to(device)
    x = torch.rand(n, 1, 224, 224, generator=torch.Generator().manual_seed(0))
    cfg = battery_config(preset)
    batch = min(n, int(cfg["batch_size"]))
    # The same probe every run records (components.robustness.time_floor), with more repeats here.
    rates = measure_rates(model, x[:batch].to(device), repeats=repeats)

    with torch.no_grad():
        y = torch.cat([model(x[i : i + batch].to(device)).argmax(1).cpu() for i in range(0, n, batch)])
    ids = [f"SYN{i:07d}" for i in range(n)]
    meta = pd.DataFrame({"image_id": ids, "label": y.numpy()})
    evalset = EvalSet(ids=ids, x=x, y=y, masks=torch.zeros_like(x, dtype=torch.bool), meta=meta,
                      dataset=DatasetInfo("synthetic", "0" * 64, "eval", n, False))
    battery = RobustnessBattery()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(device=device, seed=0, preset=preset, work_dir=Path(tmp))
        sync(device)
        t0 = time.perf_counter()
        outputs = {k: battery.run_shard(k, model=model, evalset=evalset, config=cfg, ctx=ctx)
                   for k in battery.shards(evalset, cfg)}
        result = battery.finalize(outputs, model=model, evalset=evalset, config=cfg, ctx=ctx)
        sync(device)
        wall = time.perf_counter() - t0

    passes, required = result.info["passes"], result.info["passes_required"]
    total = {k: sum(c[k] for c in passes.values()) for k in ("fwd", "fwd_grad", "bwd")}
    total_req = {k: sum(c[k] for c in required.values()) for k in ("fwd", "fwd_grad", "bwd")}
    floor = floor_seconds(total_req, rates)
    per_attack = {}
    for name, seconds in result.info["seconds_by_attack"].items():
        f = floor_seconds(required[name], rates) if name in required else 0.0
        per_attack[name] = {"wall_s": seconds, "floor_s": round(f, 3),
                            "ratio": round(seconds / f, 2) if f > 0 else None, "done": passes.get(name, {}),
                            "required": required.get(name, {})}
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "preset": preset, "n_images": n, "batch_size": batch,
        "rate_fwd_img_s": round(1 / rates["fwd_s_per_image"], 1),
        "rate_fwdbwd_img_s": round(1 / rates["fwd_bwd_s_per_image"], 1),
        "passes": total, "passes_required": total_req,
        "passes_ratio": ratios(passes, required)["total"]["ratio"], "wall_s": round(wall, 3), "floor_s": round(floor, 3),
        "ratio": round(wall / floor, 3) if floor > 0 else None,
        "robust_accuracy": {c["budget"]: c["robust_accuracy"] for c in result.info["curve"]},
        "per_attack": per_attack, "flags": [f.code for f in result.flags],
    }
    print(json.dumps(report, indent=2))
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_robustness_floor.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
