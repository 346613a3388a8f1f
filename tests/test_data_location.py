"""Where the FracAtlas release is: --source, else FXBENCH_FRACATLAS (issue 13); full-data tests marked."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_prepare_reads_the_release_from_the_environment(cli, tmp_path, monkeypatch):
    missing = tmp_path / "no-release-here"
    monkeypatch.setenv("FXBENCH_FRACATLAS", str(missing))
    r = cli("data", "prepare", "--workers", "1")
    assert r.exit_code == 2 and str(missing) in r.stderr, r  # it looked where the variable says


def test_prepare_without_a_source_says_how_to_give_one(cli, monkeypatch):
    monkeypatch.delenv("FXBENCH_FRACATLAS", raising=False)
    r = cli("data", "prepare")
    assert r.exit_code == 2, r
    assert "--source DIR" in r.stderr and "FXBENCH_FRACATLAS" in r.stderr and "Traceback" not in r.stderr


def test_source_option_wins_over_the_environment(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("FXBENCH_FRACATLAS", str(tmp_path / "from-env"))
    r = cli("data", "prepare", "--source", tmp_path / "from-option")
    assert r.exit_code == 2 and "from-option" in r.stderr and "from-env" not in r.stderr, r


def test_every_full_data_test_carries_the_fulldata_marker():
    """`pytest -m fulldata` selects every test that reads the release, and `-m "not fulldata"` none of them."""
    def collect(marker: str) -> set[str]:
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                            "-m", marker, "tests/test_data_geometry.py", "tests/test_data_fulldata.py"],
                           capture_output=True, text=True, cwd=REPO, timeout=120)
        return {ln for ln in p.stdout.splitlines() if "::" in ln}

    marked, unmarked = collect("fulldata"), collect("not fulldata")
    assert any("test_full_prepare_matches_the_manifest" in t for t in marked)
    assert any("test_exif_cases_align_only_with_exif_applied" in t for t in marked)
    assert not any("exif_cases" in t or "full_prepare" in t or "supersampled" in t for t in unmarked)
    assert unmarked  # the synthetic geometry tests are not marked
