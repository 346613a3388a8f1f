"""Synthetic result files for the leaderboard and compare tests.

Per-sample columns are built so that every headline number is known in advance (e.g. exactly k of n images
stay correct at L-inf 4/255), and metrics are computed from them with fxbench.results.metrics, so the files
are consistent the way ``fxbench run`` writes them.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fxbench.io import atomic_write_json
from fxbench.leaderboard.store import VersionSpec
from fxbench.results.metrics import MetricDef, compute_metrics
from PIL import Image

FINGERPRINT = "ab" * 32
CONFIG_HASHES = {"full": "1111aaaa2222bbbb", "quick": "3333cccc4444dddd"}
BOOTSTRAP = {"n_resamples": 200, "seed": 0, "alpha": 0.05}
METHODS = ("saliency", "gradcam")
REFERENCES = ("ref_random", "ref_edge", "ref_centre")
BUDGETS = (1, 2, 4, 8)
N = 40


def fake_spec(version: str) -> VersionSpec:
    return VersionSpec(version=version, fingerprint=FINGERPRINT, config_hashes=dict(CONFIG_HASHES),
                       bootstrap=dict(BOOTSTRAP))


@dataclass
class Fake:
    """One synthetic submission: ``clean`` images correct, ``robust[eps]`` correct at L-inf eps/255."""

    id: str
    clean: int = 30
    robust: dict[int, int] = field(default_factory=lambda: {1: 20, 2: 15, 4: 10, 8: 5})
    rma: float = 0.3  # mean relevance-mass accuracy of saliency on fractured images
    adversarial: bool = False
    preset: str = "full"
    flags: list[dict[str, str]] = field(default_factory=list)


def make_samples(f: Fake, n: int = N) -> pd.DataFrame:
    i = np.arange(n)
    label = i % 2
    df = pd.DataFrame({
        "image_id": [f"IMG{9000000 + k:07d}" for k in i],
        "label": label,
        "split": "test",
        "hardware": i % 4 == 1,
        "hand": i % 3 == 0, "leg": i % 3 == 1, "hip": i % 3 == 2, "shoulder": False, "mixed": False,
        "region": np.where(i % 3 == 0, "hand", np.where(i % 3 == 1, "leg", "hip")),
        "view": "frontal",
    })
    correct = (i < f.clean).astype(float)
    df["clean/correct"] = correct
    df["clean/p_fracture"] = np.where(correct == 1, np.where(label == 1, 0.8, 0.2), np.where(label == 1, 0.3, 0.7)) + i * 1e-3
    for eps, k in f.robust.items():
        df[f"robust/linf-{eps}/correct"] = (i < min(k, f.clean)).astype(float)
    wave = 0.05 * np.sin(i)  # fixed per-image variation, mean ~0 over the fractured images
    for j, m in enumerate(METHODS + REFERENCES):
        base = f.rma if m == "saliency" else 0.2 + 0.05 * j
        frac = label == 1
        df[f"xai/{m}/relevance_mass_accuracy"] = np.where(frac, base + wave, np.nan)
        df[f"xai/{m}/pointing_game"] = np.where(frac, (i % 5 < 3 + (m == "saliency")).astype(float), np.nan)
        df[f"xai/{m}/faithfulness_correlation"] = np.where(frac, 0.1 * j + wave, np.nan)
        df[f"xai/{m}/model_parameter_randomisation"] = np.where(frac, 0.5 - 0.05 * j + wave, np.nan)
    return df


def metric_defs(budgets=BUDGETS) -> list[MetricDef]:
    defs = [
        MetricDef("clean/accuracy", "clean/correct"),
        MetricDef("clean/balanced_accuracy", "clean/correct", reduce="balanced_accuracy"),
        MetricDef("clean/sensitivity", "clean/correct", where={"label": 1}),
        MetricDef("clean/auroc", "clean/p_fracture", reduce="auroc"),
    ]
    for eps in budgets:
        defs.append(MetricDef(f"robust/linf-{eps}/accuracy", f"robust/linf-{eps}/correct"))
        defs.append(MetricDef(f"robust/linf-{eps}/balanced_accuracy", f"robust/linf-{eps}/correct",
                              reduce="balanced_accuracy"))
    for m in METHODS + REFERENCES:
        for metric in ("relevance_mass_accuracy", "pointing_game", "faithfulness_correlation"):
            defs.append(MetricDef(f"xai/{m}/{metric}", f"xai/{m}/{metric}", where={"label": 1}))
        defs.append(MetricDef(f"xai/{m}/model_parameter_randomisation", f"xai/{m}/model_parameter_randomisation",
                              higher_is_better=False, where={"label": 1}))
    defs.append(MetricDef("xai/saliency/relevance_mass_accuracy/hardware", "xai/saliency/relevance_mass_accuracy",
                          where={"label": 1, "hardware": True}))
    return defs


def make_result(f: Fake, samples: pd.DataFrame, *, version: str = "v1") -> dict[str, Any]:
    metrics = compute_metrics(samples, metric_defs(sorted(f.robust)), n_resamples=BOOTSTRAP["n_resamples"], seed=0)
    training = {"adversarial": f.adversarial, "method": "PGD-AT" if f.adversarial else None,
                "eps": {"text": "4/255", "value": 4 / 255} if f.adversarial else None,
                "norm": "linf" if f.adversarial else None}
    flags = list(f.flags)
    if f.preset == "quick":
        flags.append({"code": "quick-preset", "message": "reduced batteries (preset quick): not leaderboard-grade"})
    return {
        "schema": "fxbench.result/1",
        "benchmark": {
            "version": version, "preset": f.preset, "config_hash": CONFIG_HASHES[f.preset],
            "config": {"version": version, "preset": f.preset, "bootstrap": dict(BOOTSTRAP)}, "limit": None,
            "dataset": {"name": "fracatlas-v1", "fingerprint": FINGERPRINT, "split": "eval", "n": len(samples),
                        "n_fracture": int(samples["label"].sum()), "leaderboard_eligible": True},
        },
        "submission": {
            "id": f.id, "name": f.id.replace("-", " ").title(), "authors": ["Test Author"],
            "url": "https://example.org/" + f.id, "license": "CC-BY-4.0", "architecture": "resnet10t",
            "n_parameters": 4900000, "yaml_sha256": "0" * 64, "checkpoint_sha256": "1" * 64, "training": training,
        },
        "metrics": {k: v.to_json() for k, v in sorted(metrics.items())},
        "flags": flags,
        "components": {},
        "files": {"samples": "samples.parquet", "gallery": gallery_names(samples), "other": []},
        "provenance": {"fxbench_version": "0.1.0", "git_commit": None, "versions": {}, "device": "cpu",
                       "seed": 0, "started_at": "2025-01-01T00:00:00+00:00", "duration_s": 1.0},
    }


def gallery_names(samples: pd.DataFrame) -> list[str]:
    ids = samples.loc[samples["label"] == 1, "image_id"].iloc[:2]
    return [f"gallery/{i}/{m}.png" for i in ids for m in METHODS]


def png(seed: int, size: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_stored(folder: Path, f: Fake, *, version: str = "v1", result: dict | None = None,
                 samples: pd.DataFrame | None = None) -> Path:
    """Write ``<folder>/<id>.json`` + ``<id>.parquet`` + ``<id>/gallery/...`` as the store holds them."""
    samples = make_samples(f) if samples is None else samples
    result = make_result(f, samples, version=version) if result is None else result
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{f.id}.json"
    atomic_write_json(path, result)
    samples.to_parquet(folder / f"{f.id}.parquet", index=False)
    for k, rel in enumerate(result["files"]["gallery"]):
        p = folder / f.id / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(png(k))
    return path


def write_run_dir(folder: Path, result: dict, samples: pd.DataFrame) -> Path:
    """A run folder as ``fxbench run`` writes it: result.json + samples.parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "result.json", result)
    samples.to_parquet(folder / "samples.parquet", index=False)
    return folder


DEFAULT_FAKES = (
    Fake("erm-baseline", clean=34, robust={1: 8, 2: 4, 4: 0, 8: 0}, rma=0.15),
    Fake("pgd-at", clean=30, robust={1: 26, 2: 22, 4: 16, 8: 8}, rma=0.40, adversarial=True),
    Fake("trades", clean=28, robust={1: 25, 2: 21, 4: 16, 8: 9}, rma=0.35, adversarial=True),
    Fake("fast-at", clean=29, robust={1: 22, 2: 18, 4: 12, 8: 4}, rma=0.30, adversarial=True,
         flags=[{"code": "gradient-masking", "message": "Square broke 2 points the white-box attacks did not"}]),
)


def make_store(root: Path, fakes=DEFAULT_FAKES, *, version: str = "v1") -> Path:
    for f in fakes:
        write_stored(root / version, f, version=version)
    return root


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
