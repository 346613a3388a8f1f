"""Provenance (issue 12): a committed result must be byte-identical to the artifact of the workflow run it
names; the CI workflow calls scripts/check_provenance.py after downloading that artifact."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fxbench.errors import ResultError
from fxbench.leaderboard.provenance import check_provenance
from fxbench.publish import ci_provenance as _ci_provenance

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "leaderboard" / "results" / "v1"
SID = "fxb-resnet10t-erm"
CI = {"repository": "owner/fxbench", "run_id": "123456789", "run_attempt": "1", "workflow": "submission",
      "sha": "0" * 40, "server_url": "https://github.com"}


@pytest.fixture
def pair(tmp_path):
    """(stored json, artifact folder): the same run, as the workflow uploaded it and as `fxbench add` stored it."""
    obj = json.loads((COMMITTED / f"{SID}.json").read_text())
    obj["provenance"]["ci"] = dict(CI)
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "result.json").write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    shutil.copy(COMMITTED / f"{SID}.parquet", artifact / "samples.parquet")
    shutil.copytree(COMMITTED / SID / "gallery", artifact / "gallery")
    store = tmp_path / "results" / "v1"
    store.mkdir(parents=True)
    shutil.copy(artifact / "result.json", store / f"{SID}.json")
    shutil.copy(artifact / "samples.parquet", store / f"{SID}.parquet")
    shutil.copytree(artifact / "gallery", store / SID / "gallery")
    return store / f"{SID}.json", artifact


def script(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "check_provenance.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_an_unchanged_result_matches_its_artifact(pair):
    stored, artifact = pair
    p = check_provenance(stored, artifact, repository="owner/fxbench")
    assert p.run_id == "123456789" and len(p.sha256) == 22
    r = script("check", stored, artifact, "owner/fxbench")
    assert r.returncode == 0 and "identical to the artifact of run 123456789" in r.stdout
    assert script("run-id", stored).stdout.strip() == "123456789"


def test_a_hand_edit_is_visible(pair):
    stored, artifact = pair
    obj = json.loads(stored.read_text())
    obj["metrics"]["clean/accuracy"]["value"] = 0.99
    stored.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    with pytest.raises(ResultError, match="differs from what workflow run 123456789 produced"):
        check_provenance(stored, artifact, repository="owner/fxbench")
    r = script("check", stored, artifact, "owner/fxbench")
    assert r.returncode == 2 and r.stderr.startswith("error: ")


def test_a_swapped_gallery_image_or_parquet_is_visible(pair):
    stored, artifact = pair
    png = sorted((stored.parent / SID / "gallery").rglob("*.png"))
    shutil.copy(png[1], png[0])
    with pytest.raises(ResultError, match="differs"):
        check_provenance(stored, artifact, repository="owner/fxbench")


def test_a_result_from_another_repository_or_without_a_run_is_refused(pair):
    stored, artifact = pair
    with pytest.raises(ResultError, match="not of this repository"):
        check_provenance(stored, artifact, repository="someone/else")
    with pytest.raises(ResultError, match="names no workflow run"):
        check_provenance(COMMITTED / f"{SID}.json", artifact, repository="owner/fxbench")


def test_run_records_the_github_run_only_inside_actions(monkeypatch):
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    assert _ci_provenance() is None
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_REPOSITORY", "owner/fxbench")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    assert _ci_provenance()["run_id"] == "42" and _ci_provenance()["repository"] == "owner/fxbench"
