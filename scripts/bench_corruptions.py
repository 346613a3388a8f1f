"""What the corruption battery costs on this machine, in CPU-seconds of this process (all its threads), beside the
clean battery on the same images: the quick preset's share of the first run (docs/corruptions.md, "Cost").

    python scripts/bench_corruptions.py [--submission submissions/fxb-resnet10t-pgdat] [--preset quick]
                                        [--data DIR] [--limit N]

Prints the CPU-seconds of: the clean battery; the corrupted images alone (every condition); the corruption
battery (corrupted images, forward passes and the explanation-stability maps); and the battery's ratio to the
clean battery, which depends less on the machine's load than either number.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch


def cpu() -> float:
    return time.process_time()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--submission", default="submissions/fxb-resnet10t-pgdat")
    ap.add_argument("--preset", default="quick", choices=["quick", "full"])
    ap.add_argument("--data", default=None, help="a prepared dataset (default: FXBENCH_HOME's, else the embedded subset)")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()

    import fxbench
    from fxbench.battery import RunContext
    from fxbench.clean import CleanBattery
    from fxbench.corruptions import CorruptionBattery
    from fxbench.corruptions.battery import image_seeds
    from fxbench.corruptions.ops import corrupt
    from fxbench.data import load_arrays
    from fxbench.definition import load_definition

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = load_arrays(args.data, split="eval", limit=args.limit)
    model = fxbench.load_submission(args.submission, device="cpu").model
    d = load_definition("v3")
    ctx = RunContext(device=torch.device("cpu"), seed=0, preset=args.preset, work_dir=Path("."))
    print(f"{ev.dataset.name}: {len(ev)} images, {int(ev.y.sum())} fractured; torch threads {torch.get_num_threads()}")

    clean = CleanBattery()
    ccfg = clean.configure(d.battery_config("clean", args.preset))
    t = cpu()
    outs = {k: clean.run_shard(k, model=model, evalset=ev, config=ccfg, ctx=ctx) for k in clean.shards(ev, ccfg)}
    ctx.previous["clean"] = clean.finalize(outs, model=model, evalset=ev, config=ccfg, ctx=ctx)
    t_clean = cpu() - t

    cb = CorruptionBattery()
    cfg = cb.configure(d.battery_config("corruptions", args.preset))
    t = cpu()
    for c, s in cfg.conditions:
        corrupt(ev.x, cfg.corruptions[c].op, cfg.corruptions[c].param(s), image_seeds(0, c, s, ev.ids))
    t_images = cpu() - t
    import fxbench.explanations.metrics  # noqa: F401 -- Quantus and Captum imported before timing the battery

    t = cpu()
    outs = {k: cb.run_shard(k, model=model, evalset=ev, config=cfg, ctx=ctx) for k in cb.shards(ev, cfg)}
    res = cb.finalize(outs, model=model, evalset=ev, config=cfg, ctx=ctx)
    t_battery = cpu() - t
    print(f"clean battery                   {t_clean:7.1f} CPU-s")
    print(f"corrupted images alone          {t_images:7.1f} CPU-s ({len(cfg.conditions)} conditions)")
    print(f"corruption battery ({args.preset:5})      {t_battery:7.1f} CPU-s "
          f"({len(cfg.conditions)} conditions, stability on {res.info['stability']['images']} images x "
          f"{len(cfg.stability_conditions) + 1} maps)")
    print(f"ratio corruption / clean        {t_battery / t_clean:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
