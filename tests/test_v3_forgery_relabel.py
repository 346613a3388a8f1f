"""[anti-gaming], the issue's first forgery done carefully: a quick result relabelled full through the real v3
catalogue. The full config and hash are written in, the curve columns copied from linf-4 (norms clipped to
each budget, min_eps_broken and the robustness curve rewritten so that every row agrees), the methods the
quick run did not score declared unsupported, the quick-preset flag dropped, every metric recomputed. Before
v3 this was rank 1 of "Models (full preset, ranked)"; the cheap checks cannot see it (they are about rows, and
the rows agree): it is listed unranked for want of evidence. The audit catches it (tests/test_v3_audit.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fxbench.definition import load_definition
from fxbench.io import atomic_write_json
from fxbench.leaderboard.generate import build_leaderboard
from fxbench.leaderboard.store import load_store, version_spec
from fxbench.leaderboard.tables import version_ranking
from fxbench.results.metric_ids import try_parse
from fxbench.results.metrics import compute_metrics

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "leaderboard" / "results" / "v2" / "fxb-resnet10t-pgdat-v2"
FORGED = "fxb-resnet10t-pgdat-full"
BOOT = {"n_resamples": 20, "seed": 0, "alpha": 0.05}  # the real v3 spec but few resamples: the test's time


def fast_spec(version: str):
    return dataclasses.replace(version_spec(version), bootstrap=dict(BOOT))


def relabel() -> tuple[dict, pd.DataFrame]:
    result = json.loads(SOURCE.with_suffix(".json").read_text())
    df = pd.read_parquet(SOURCE.with_suffix(".parquet"))
    d = load_definition("v3")
    catalogue = d.metric_catalogue("full")
    # a point broken at two budgets keeps its perturbation: every L-inf norm within the smallest budget
    linf_norm = np.minimum(df["robust/linf-4/norm"], 1 / 255)
    for b in ("linf-1", "linf-2", "linf-4", "linf-8", "l2-1.75"):
        for m in ("correct", "broken", "attack"):
            df[f"robust/{b}/{m}"] = df[f"robust/linf-4/{m}"]
        df[f"robust/{b}/norm"] = linf_norm if b.startswith("linf") else np.minimum(df["robust/linf-4/norm"], 1.75)
    df["robust/linf/min_eps_broken"] = np.where(df["robust/linf-4/broken"], 1.0, df["robust/linf/min_eps_broken"])
    # v3's corruption battery never ran on the source: the forger claims no drop under any corruption (every
    # decision as clean, the saliency maps' enrichment at chance, 1, on the fractured images)
    frac = df["label"] == 1
    for mid, m in catalogue.items():
        p = try_parse(mid)
        for c in (m.column, *m.where) if p.family == "corrupt" else ():
            if c in df.columns:
                continue
            if c.endswith("/correct"):
                df[c] = df["clean/correct"]
            elif c.endswith("/drop"):
                df[c] = np.where(frac, 0.0, np.nan) if "/xai/" in c else 0.0
            else:
                df[c] = np.where(frac, 1.0, np.nan)
    df = df.copy()
    unsupported = {}
    for mid, m in catalogue.items():
        p = try_parse(mid)
        if p.family == "xai" and p.method and any(c not in df.columns for c in (m.column, *m.where)):
            unsupported[p.method] = "not supported by this model"
    for c in [c for c in df.columns if (p := try_parse(c)) and p.family == "xai" and p.method in unsupported]:
        df[c] = np.nan
    defs = [m for mid, m in catalogue.items()
            if not ((p := try_parse(mid)).family == "xai" and p.method in unsupported)]
    metrics = compute_metrics(df, defs, n_resamples=BOOT["n_resamples"], seed=BOOT["seed"])
    b = result["benchmark"]
    b.update(version="v3", preset="full", config=d.resolved("full"), config_hash=d.config_hash("full"))
    result["metrics"] = {k: v.to_json() for k, v in sorted(metrics.items())}
    result["flags"] = [f for f in result["flags"] if f["code"] != "quick-preset"]
    result["components"]["explanations"]["unsupported"] = unsupported
    rob = result["components"]["robustness"]
    rob["preset"] = "full"
    n, correct = len(df), df["clean/correct"] == 1
    rob["curve"] = [{"budget": b, "robust_accuracy": float(df[f"robust/{b}/correct"].mean()),
                     "robust_at_start": int(correct.sum()) if b in ("linf-1", "l2-1.75") else int(
                         (correct & ~df["robust/linf-4/broken"]).sum()),
                     "broken_by": ({"apgd-ce": int((df[f"robust/{b}/attack"] == "apgd-ce").sum()),
                                    "apgd-margin": int((df[f"robust/{b}/attack"] == "apgd-margin").sum()),
                                    "fab": 0, "square": 0} if b in ("linf-1", "l2-1.75") else
                                   {"apgd-ce": 0, "apgd-margin": 0, "fab": 0, "square": 0})}
                    for b in ("linf-1", "linf-2", "linf-4", "linf-8", "l2-1.75")]
    assert n == 801
    result["submission"]["id"] = FORGED
    result["files"]["gallery"] = []
    return result, df


@pytest.fixture(scope="module")
def forged_store(tmp_path_factory) -> Path:
    result, df = relabel()
    folder = tmp_path_factory.mktemp("relabel") / "results" / "v3"
    atomic_write_json(folder / f"{FORGED}.json", result)
    df.to_parquet(folder / f"{FORGED}.parquet", index=False)
    return folder.parent


def test_the_careful_relabel_passes_every_cheap_check(forged_store):
    s = load_store(forged_store, spec_for=fast_spec)
    (r,) = s.versions["v3"]
    assert r.preset == "full" and r.evidence.label == "none"
    assert r.metrics["robust/linf-8/balanced_accuracy"]["value"] == r.metrics["robust/linf-4/balanced_accuracy"]["value"]


def test_it_would_rank_first_and_is_listed_unranked_for_want_of_evidence(forged_store):
    ranking = version_ranking("v3")
    without = dataclasses.replace(ranking, require_evidence=frozenset())
    for rules, kind in ((without, "main"), (ranking, "unranked")):
        board = build_leaderboard(results_dir=forged_store, spec_for=fast_spec, ranking_for=lambda v, r=rules: r)
        tables = {t["kind"]: t["submissions"] for t in json.loads(board.files["leaderboard.json"])["versions"][0]["tables"]}
        (row,) = tables[kind]
        assert row["id"] == FORGED
        if kind == "main":
            assert row["rank"] == 1  # what the issue found: rank 1 of the full table
        else:
            assert row["rank"] is None and "no evidence that the run happened" in row["not_ranked_because"]
            assert tables["main"] == []
