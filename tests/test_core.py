"""Registry, atomic writes, metrics-as-data and the bootstrap: known answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fxbench.errors import FxbenchError, ResultError
from fxbench.io import atomic_write, atomic_write_json, canonical_json
from fxbench.registry import Registry
from fxbench.results.metrics import MetricDef, bootstrap_indices, compute_metric, compute_metrics
from sklearn.metrics import roc_auc_score


def test_registry_refuses_duplicates_and_suggests():
    r: Registry[int] = Registry("attack")
    r.register("apgd-ce", 1)
    with pytest.raises(ValueError, match="already registered"):
        r.register("apgd-ce", 2)
    with pytest.raises(FxbenchError, match="Did you mean 'apgd-ce'"):
        r.get("apgd-cd")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"x": 1})

    def boom(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert json.loads(target.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_canonical_json_refuses_nan():
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def _df(rng, n=200):
    y = (rng.random(n) < 0.3).astype(int)
    score = rng.random(n) + 0.3 * y
    pred = (score > 0.6).astype(int)
    return pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "label": y, "score": score,
                         "correct": (pred == y).astype(float)})


def test_reducers_match_hand_and_sklearn(rng):
    df = _df(rng)
    acc = compute_metric(df, MetricDef("clean/accuracy", "correct"), n_resamples=200, seed=0)
    assert acc.value == pytest.approx(df["correct"].mean())
    sens = compute_metric(df, MetricDef("s", "correct", where={"label": 1}), n_resamples=200, seed=0)
    assert sens.value == pytest.approx(df.loc[df.label == 1, "correct"].mean())
    assert sens.n == int((df.label == 1).sum())
    bal = compute_metric(df, MetricDef("b", "correct", reduce="balanced_accuracy"), n_resamples=200, seed=0)
    spec = df.loc[df.label == 0, "correct"].mean()
    assert bal.value == pytest.approx((sens.value + spec) / 2)
    auc = compute_metric(df, MetricDef("a", "score", reduce="auroc"), n_resamples=200, seed=0)
    assert auc.value == pytest.approx(roc_auc_score(df.label, df.score))
    for m in (acc, sens, bal, auc):
        assert m.ci_low <= m.value <= m.ci_high


def test_bootstrap_is_stratified_and_seeded(rng):
    labels = np.array([0] * 30 + [1] * 10)
    idx = bootstrap_indices(labels, 50, seed=3)
    assert (labels[idx].sum(axis=1) == 10).all()
    assert (idx == bootstrap_indices(labels, 50, seed=3)).all()
    assert not (idx == bootstrap_indices(labels, 50, seed=4)).all()


def test_ci_covers_known_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    widths = []
    for n in (100, 1600):
        df = pd.DataFrame({"label": np.zeros(n, int), "v": rng.normal(0.5, 0.1, n)})
        m = compute_metric(df, MetricDef("x", "v"), n_resamples=1000, seed=0)
        assert m.ci_low < 0.5 < m.ci_high
        widths.append(m.ci_high - m.ci_low)
    assert widths[1] < widths[0] / 3  # ~1/sqrt(16) = 1/4


def test_nan_values_are_skipped_and_counted():
    df = pd.DataFrame({"label": [1, 1, 1, 0], "v": [1.0, np.nan, 0.0, np.nan]})
    m = compute_metric(df, MetricDef("x", "v"), n_resamples=100, seed=0)
    assert m.value == 0.5 and m.n == 2
    empty = compute_metric(df, MetricDef("x", "v", where={"label": 0}), n_resamples=100, seed=0)
    assert empty.to_json()["value"] is None and "undefined" in empty.note


def test_duplicate_metric_ids_refused():
    df = pd.DataFrame({"label": [0, 1], "v": [1.0, 0.0]})
    with pytest.raises(ValueError, match="duplicate"):
        compute_metrics(df, [MetricDef("x", "v"), MetricDef("x", "v")])


def test_result_schema_rejects_string_scores(tmp_path):
    from fxbench.results.resultfile import read_result, validate_result

    bad = {"schema": "fxbench.result/1"}
    with pytest.raises(ResultError, match="schema"):
        validate_result(bad)
    (tmp_path / "result.json").write_text("{not json")
    with pytest.raises(ResultError, match="not valid JSON"):
        read_result(tmp_path)
