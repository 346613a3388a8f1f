"""Reduced-precision search, float32 verdict (robustness/precision.py): the attacks may search under bfloat16
autocast only because, on the baselines, they find no fewer adversarial examples than in float32 (beyond one
image), and every verdict stays float32."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from conftest import REPO
from fxbench.data import load_arrays
from fxbench.models import load_submission
from fxbench.paths import SPECS_DIR
from fxbench.robustness.attacks import ATTACKS
from fxbench.robustness.cascade import attack_chunk
from fxbench.robustness.checks import FlagCollector
from fxbench.robustness.config import parse_config
from fxbench.robustness.counting import CountingModel
from fxbench.robustness.precision import SearchModel, search_broken

BASELINES = ["fxb-resnet10t-erm-v2", "fxb-resnet10t-pgdat-v2", "fxb-resnet10t-trades-v2", "fxb-effb0-erm-v2"]


def search_config(dtype: str, *, apgd: int = 10, queries: int = 50) -> object:
    """The v3 full preset's cascade at the headline and L2, with fewer steps (a CPU's budget), searching in
    ``dtype`` on this CPU."""
    raw = yaml.safe_load((SPECS_DIR / "v3" / "robustness.yaml").read_text())
    cfg = {"name": raw["name"], "version": raw["version"], **copy.deepcopy(raw["full"])}
    cfg.update(budgets={"linf": [4], "l2": [1.75]}, attacks_at=None, checks=None)
    cfg.pop("attacks_at")
    cfg.pop("checks")
    for a in cfg["attacks"]:
        if a["name"].startswith("apgd"):
            a["n_iter"] = apgd
        elif a["name"] == "fab":
            a["n_iter"] = 5
        else:
            a["n_queries"] = queries
    cfg["search_dtype"] = {"cpu": dtype}
    return parse_config(cfg, registry=ATTACKS)


def adversarial_counts(model, x, y, ids, dtype: str, **kw) -> tuple[dict[str, int], dict]:
    """Images broken per budget (fxbench's float32 verdict), and the passes per phase."""
    cfg = search_config(dtype, **kw)
    counter = CountingModel(model)
    outcome = attack_chunk(counter, x, y, ids, cfg=cfg, registry=ATTACKS, seed=7, device=torch.device("cpu"),
                           log=FlagCollector())
    counts = {b.id: sum(1 for i in range(len(ids)) if 0 <= outcome.norms[b.norm].first[i]) for b in cfg.budgets}
    return counts, counter.totals()


def test_search_model_returns_float32_logits_computed_in_bfloat16(tiny_model):
    x = torch.rand(4, 1, 224, 224)
    with torch.no_grad():
        z32, zbf = tiny_model(x), SearchModel(tiny_model, "bfloat16")(x)
    assert zbf.dtype == torch.float32 and not torch.equal(z32, zbf)
    assert torch.allclose(z32, zbf, atol=0.1 * float(z32.abs().max()) + 1e-3)


def test_the_search_calls_a_point_broken_only_beyond_the_rounding():
    z = torch.tensor([[0.0, 0.01], [0.0, -0.01], [0.0, -0.5], [2.0, 0.0]])  # margins 0.01, -0.01, -0.5, -2
    y = torch.ones(4, dtype=torch.long)
    assert search_broken(z, y, 0.0).tolist() == [False, True, True, True]  # fxbench's rule
    assert search_broken(z, y, 0.25).tolist() == [False, False, True, True]  # -0.25 * max(1, |z|) needed


@pytest.mark.slow
@pytest.mark.parametrize("sid", BASELINES)
def test_bfloat16_search_finds_no_fewer_adversarial_examples_than_float32_on_the_baselines(sid):
    """8 embedded images per baseline at 4/255 and L2 1.75, APGD 10 steps, FAB 5, Square 50 queries: the float32
    verdict of the bfloat16 search breaks at least as many images as the float32 search, less one. The larger
    comparison (16 images, APGD 20, Square 200, six baselines) is scripts/bench_robustness_fullpreset.py's."""
    torch.set_num_threads(2)
    model = load_submission(REPO / "submissions" / sid / "model.yaml", device="cpu").model
    ev = load_arrays(None, split="eval", limit=8)
    x, y, ids = ev.x, ev.y, list(ev.ids)
    fp32, _ = adversarial_counts(model, x, y, ids, "float32")
    bf16, passes = adversarial_counts(model, x, y, ids, "bfloat16")
    assert all(bf16[b] >= fp32[b] - 1 for b in fp32), (sid, fp32, bf16)
    assert "verdict" in passes or sum(bf16.values()) == 0  # every break decided by a float32 pass
