"""The shard recipe, owned here and nowhere else: every executor (this process, a Ray worker) resumes,
computes, saves and finalizes a battery's shards through these functions, so the two cannot drift.

- ``resume``: a finished shard is read back (a corrupt one is discarded and computed again);
- ``compute``: one shard, seeded from ``ctx.shard_seed(battery, key)``, deterministic backends, strict float32,
  and the model's own exceptions reported as the model's;
- ``save``: written through the run's ``ShardStore`` (a full disk is one clear error, finished shards kept)
  and read back, so a fresh run uses exactly what a resumed one would read;
- ``finalize``: the battery's finalize under the same rules, its result recorded for later batteries.
"""

from __future__ import annotations

from ..battery import BatteryResult, RunContext, ShardOutput, seed_everything
from ..errors import FxbenchError
from ..models import strict_fp32
from ..results.shards import ShardCorrupt, ShardStore
from .blame import model_errors


def deterministic_backends() -> None:
    """cuDNN picks the same algorithms every time (set before every shard: a Ray worker is a fresh process)."""
    import torch

    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def resume(store: ShardStore, battery: str, key: str, *, note) -> ShardOutput | None:
    """The finished shard's output, or None when it must be computed (absent, or unreadable: then discarded)."""
    if not store.done(battery, key):
        return None
    try:
        return store.load(battery, key)
    except ShardCorrupt as e:  # truncated or corrupt files of a finished shard: compute it again
        note(f"{e}; recomputing it")
        store.discard(battery, key)
        return None


def compute(battery, key: str, *, model, evalset, config, ctx: RunContext, sub=None) -> ShardOutput:
    deterministic_backends()
    seed_everything(ctx.shard_seed(battery.name, key))
    with strict_fp32(), model_errors(sub, f"the {battery.name} battery (shard {key})"):
        return battery.run_shard(key, model=model, evalset=evalset, config=config, ctx=ctx)


def save(store: ShardStore, battery: str, key: str, output: ShardOutput) -> ShardOutput:
    try:
        store.save(battery, key, output)
    except OSError as e:
        raise FxbenchError(f"cannot write shard {battery}/{key} under {store.root} ({e.strerror or e}); "
                           "finished shards are kept: free space and rerun the same command.") from None
    return store.load(battery, key)  # use exactly what a resumed run would read


def finalize(battery, outputs: dict[str, ShardOutput], *, model, evalset, config, ctx: RunContext,
             sub=None) -> BatteryResult:
    deterministic_backends()
    seed_everything(ctx.shard_seed(battery.name, "finalize"))
    with strict_fp32(), model_errors(sub, f"the {battery.name} battery (finalize)"):
        result = battery.finalize(outputs, model=model, evalset=evalset, config=config, ctx=ctx)
    ctx.previous[battery.name] = result
    return result


def run_in_process(prep, *, progress) -> tuple[dict[str, BatteryResult], int, int]:
    """Every battery of one prepared run, in order, in this process: (results, shards run, shards resumed)."""
    results: dict[str, BatteryResult] = {}
    n_run = n_resumed = 0
    model = prep.sub.model
    for step in prep.plan:
        outputs: dict[str, ShardOutput] = {}
        for key in step.keys:
            output = resume(prep.store, step.name, key, note=progress.note)
            if output is not None:
                n_resumed += 1
                progress.advance(step.name, key, True)
            else:
                output = compute(step.battery, key, model=model, evalset=prep.evalset, config=step.config,
                                 ctx=prep.ctx, sub=prep.sub)
                output = save(prep.store, step.name, key, output)
                n_run += 1
                progress.advance(step.name, key, False)
            outputs[key] = output
        results[step.name] = finalize(step.battery, outputs, model=model, evalset=prep.evalset,
                                      config=step.config, ctx=prep.ctx, sub=prep.sub)
    return results, n_run, n_resumed
