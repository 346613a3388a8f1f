"""scripts/findings.py on v3 results: one section per claim of the spec, the primary comparison first and
unadjusted, the family Holm-adjusted, equivalence only through TOST, and a recipe's seeds grouped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import leaderboard_fixtures as F
import numpy as np
import pytest
from fxbench.leaderboard.compare import resolve_result
from fxbench.leaderboard.stats import adjust_p, version_statistics
from fxbench.results.metrics import MetricDef, compute_metrics

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "findings.py"
sys.path.insert(0, str(SCRIPT.parent))
import findings  # noqa: E402  (the script itself: its functions recompute the table's numbers)

MAPS = ("saliency", "gradcam", "ref_edge", "ref_prior")
METRICS = ("shuffled_auc", "relevance_mass_accuracy", "shuffled_auc/adv_minus_noise-linf-4",
           "relevance_mass_accuracy/adv_minus_noise-linf-4")


def write(root: Path, fid: str, level: float, seed: int = 0) -> None:
    """Saliency's scores = 0.6 + level + wave; gradcam 0.55; ref_edge 0.65 (the best reference); ref_prior 0.5."""
    f = F.Fake(fid)
    df = F.make_samples(f)
    i = np.arange(len(df))
    frac = df["label"] == 1
    noise = np.random.default_rng(seed).normal(0, 0.01, len(df))
    base = {"saliency": 0.6 + level, "gradcam": 0.55, "ref_edge": 0.65, "ref_prior": 0.5}
    defs = []
    for m in MAPS:
        for k, metric in enumerate(METRICS):
            col = f"xai/{m}/{metric}"
            v = base[m] + 0.05 * np.cos(i + k) + noise if "/" not in metric else level + noise
            df[col] = np.where(frac, v, np.nan)
            defs.append(MetricDef(col, col, where={"label": 1}))
    result = F.make_result(f, df, version="v3")
    result["metrics"].update({k: v.to_json() for k, v in compute_metrics(df, defs, n_resamples=200).items()})
    F.write_stored(root / "v3", f, version="v3", result=result, samples=df)


def run(root: Path, *extra: str) -> str:
    return subprocess.run([sys.executable, str(SCRIPT), "--results", str(root), "--version", "v3",
                           "--methods", "saliency,gradcam", *extra], capture_output=True, text=True, check=True).stdout


def table(out: str, heading: str, what: str) -> list[list[str]]:
    section = out.split(f"### {heading}:")[1].split("###")[0]
    block = section.split(f"**{what}**")[1].split("\n\n")[1]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]


def test_findings_v3_claims(tmp_path):
    root = tmp_path / "results"
    write(root, "erm", 0.0)
    write(root, "robust", 0.01)  # the same per-image noise: every difference is exactly known
    out = run(root, "--baseline", "erm")
    assert "### alignment: do the model's explanations align better" in out
    rows = table(out, "alignment", "robust - erm")
    assert rows[0][0] == "**primary**" and rows[0][1] == "`xai/saliency/shuffled_auc`"
    assert rows[0][2].startswith("+0.0100") and "(Holm)" not in rows[0][3]
    assert "equivalent within ±0.05 (TOST paired t" in rows[0][5]
    fam = [r for r in rows if r[0] == "family"]
    assert {r[1] for r in fam} == {"`xai/gradcam/shuffled_auc`", "`xai/saliency/relevance_mass_accuracy`",
                                   "`xai/gradcam/relevance_mass_accuracy`", "`xai/saliency/pointing_game`",
                                   "`xai/gradcam/pointing_game`"}  # the family's metrics the fixture has
    assert all(r[3].endswith("(Holm)") for r in fam)
    assert any("no margin" in r[5] for r in fam)  # relevance mass: never called equivalent
    # beyond the reference: saliency 0.6 against ref_edge 0.65 on the same images, per model
    ref = table(out, "beyond_reference", "erm: method - its best reference")
    assert ref[0][1] == "`xai/saliency/shuffled_auc/vs-best-ref`" and ref[0][2].startswith("-0.0500")
    # under attack: the attack - noise columns, robust - erm = +0.01
    ua = table(out, "under_attack", "robust - erm")
    assert ua[0][1] == "`xai/saliency/shuffled_auc/adv_minus_noise-linf-4`" and ua[0][2].startswith("+0.0100")


def test_findings_v3_holm_and_seed_groups(tmp_path):
    root = tmp_path / "results"
    for k in range(3):
        write(root, f"erm-s{k}", 0.0)
        write(root, f"robust-s{k}", 0.02 * k)  # seeds differ by their level only
    out = run(root, "--baseline", "erm")
    assert "erm (3 seeds)" in out and "robust (3 seeds)" in out
    rows = table(out, "alignment", "robust - erm")
    assert rows[0][2].startswith("+0.0200")  # the mean over seeds (0, 0.02, 0.04)
    lo, hi = (float(x) for x in rows[0][2].split("[")[1].split("]")[0].split(","))
    assert lo < 0.01 and hi > 0.03  # the seeds' spread is in the CI (images alone: a collapsed CI)
    fam = [r for r in rows if r[0] == "family"]
    raw = []  # the Holm p in the table is the adjustment of the family's raw p (recomputed through compare)
    rules = version_statistics("v3")
    groups = findings.seed_groups({r.id: r for r in (resolve_result(str(p), results_dir=root)
                                                      for p in sorted((root / "v3").glob("*.json")))}, r"^(?P<recipe>.+)-s(?P<seed>[0-9]+)$")
    claim = rules["claims"]["alignment"]
    boot = {"n_resamples": 200, "seed": 0, "alpha": 0.05}
    for r in fam:
        mid = r[1].strip("`")
        raw.append(findings.one_difference(mid, groups["erm"], groups["robust"], claim, rules, boot).p_value)
    want = adjust_p(raw, "holm")
    got = [float(r[3].split()[0].replace("<", "")) for r in fam]
    assert got == pytest.approx(want, abs=1e-3)

