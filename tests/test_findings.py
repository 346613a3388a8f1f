"""scripts/findings.py: paired differences against the ERM baseline and the best trivial reference map."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import leaderboard_fixtures as F

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "findings.py"


def test_findings_table_has_known_paired_differences(tmp_path):
    root = tmp_path / "results"
    for f in (F.Fake("fxb-resnet10t-erm", rma=0.15), F.Fake("pgd-at", rma=0.40)):
        F.write_stored(root / "v2", f, version="v2")
    out = subprocess.run([sys.executable, str(SCRIPT), "--results", str(root), "--methods", "saliency"],
                         capture_output=True, text=True, check=True).stdout
    row = next(line for line in out.splitlines()
               if line.startswith("| `xai/saliency/relevance_mass_accuracy` | pgd-at"))
    # the same per-image wave on both sides: +0.25 exactly, CI collapsed; best trivial reference ref_centre
    # scores 0.40 + the same wave: a difference of 0 (the method does not beat a centred Gaussian)
    assert "| +0.250 [+0.250, +0.250], n=20" in row
    assert "+0.000 [+0.000, +0.000], n=20" in row and "(ref_centre)" in row
    erm = next(line for line in out.splitlines()
               if line.startswith("| `xai/saliency/relevance_mass_accuracy` | fxb-resnet10t-erm"))
    assert "-0.250" in erm and "| — |" in erm
