"""Issue 10's ranking test: a constant classifier, run through the clean and robustness batteries, scores
exactly chance (0.5) on v2's headline and ranks below every model that beats chance under attack."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from conftest import linear_model, make_evalset
from fxbench.battery import EvalSet, RunContext
from fxbench.clean import CleanBattery
from fxbench.definition import load_definition
from fxbench.leaderboard.layout import load_layout
from fxbench.leaderboard.tables import rank, ranked_layout, version_ranking
from fxbench.results.metrics import compute_metrics
from fxbench.robustness import RobustnessBattery


@dataclass
class Scored:
    id: str
    metrics: dict


def separable(n: int = 8) -> EvalSet:
    """Fractured images bright (0.8), the others dark (0.2): a mean-brightness model is right with a margin
    no 4/255 perturbation can cross."""
    ev = make_evalset(n)
    x = torch.where(ev.y.view(-1, 1, 1, 1) == 1, 0.8, 0.2).expand_as(ev.x).clone()
    return dataclasses.replace(ev, x=x)


def run_batteries(model, evalset) -> dict:
    d = load_definition("v2")
    ctx = RunContext(device=torch.device("cpu"), seed=0, preset="quick", work_dir=Path("."), previous={},
                     _tensor_loader=lambda b: {})
    samples, defs = None, []
    for b in (CleanBattery(), RobustnessBattery()):
        cfg = d.battery_config(b.name, "quick")
        outs = {k: b.run_shard(k, model=model, evalset=evalset, config=cfg, ctx=ctx) for k in b.shards(evalset, cfg)}
        res = b.finalize(outs, model=model, evalset=evalset, config=cfg, ctx=ctx)
        ctx.previous[b.name] = res
        s = res.samples
        samples = s if samples is None else samples.merge(s, on="image_id")
        defs += res.metrics
    samples["label"] = evalset.y.numpy()[[evalset.ids.index(i) for i in samples["image_id"]]]
    return {k: v.to_json() for k, v in compute_metrics(samples, defs, n_resamples=50).items()}


def test_constant_model_scores_chance_and_ranks_below_models_that_beat_it():
    evalset = separable()
    w = torch.full((1, 224, 224), 10.0 / (224 * 224))
    good = linear_model(w, b=-5.0)  # z = 10 (mean - 0.5): +3 on fractured, -3 on the others
    constant = linear_model(torch.zeros(1, 224, 224), b=-1.0)  # always "no fracture"
    scored = [Scored("constant", run_batteries(constant, evalset)), Scored("good", run_batteries(good, evalset))]
    headline = "robust/linf-4/balanced_accuracy"
    assert scored[0].metrics[headline]["value"] == 0.5
    assert scored[0].metrics["clean/balanced_accuracy"]["value"] == 0.5
    assert scored[1].metrics[headline]["value"] > 0.5
    layout = ranked_layout(load_layout(), version_ranking("v2"))
    assert [row.result.id for row in rank(scored, layout)] == ["good", "constant"]
