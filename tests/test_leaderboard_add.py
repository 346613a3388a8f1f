"""`fxbench add RUN_DIR`: a run folder goes into the store only if the leaderboard would accept it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import leaderboard_fixtures as F
import pytest
from fxbench.leaderboard import store as store_mod


@pytest.fixture
def run_dir(tmp_path, monkeypatch) -> Path:
    """One stored fake result laid out as `fxbench run` writes it: OUT/<id>/result.json + samples.parquet."""
    monkeypatch.setattr(store_mod, "version_spec", F.fake_spec)
    built = F.make_store(tmp_path / "built")
    src = sorted(built.glob("v*/*.json"))[0]
    sid = src.stem
    out = tmp_path / "runs" / sid
    out.mkdir(parents=True)
    shutil.copy(src, out / "result.json")
    shutil.copy(src.with_suffix(".parquet"), out / "samples.parquet")
    shutil.copytree(src.parent / sid / "gallery", out / "gallery")  # the listed overlays, real PNG bytes
    return out


def test_add_copies_result_samples_and_gallery(cli, run_dir, tmp_path):
    results = tmp_path / "store"
    r = cli("add", run_dir, "--results", results)
    assert r.exit_code == 0, r
    sid = run_dir.name
    version = json.loads((run_dir / "result.json").read_text())["benchmark"]["version"]
    stored = results / version
    assert (stored / f"{sid}.json").read_bytes() == (run_dir / "result.json").read_bytes()
    assert (stored / f"{sid}.parquet").read_bytes() == (run_dir / "samples.parquet").read_bytes()
    listed = json.loads((run_dir / "result.json").read_text())["files"]["gallery"]
    assert listed and all((stored / sid / rel).read_bytes() == (run_dir / rel).read_bytes() for rel in listed)
    again = cli("add", run_dir, "--results", results)
    assert again.exit_code == 2 and "--replace" in again.stderr
    assert cli("add", run_dir, "--results", results, "--replace").exit_code == 0


def test_add_refuses_an_embedded_run_and_writes_nothing(cli, run_dir, tmp_path):
    obj = json.loads((run_dir / "result.json").read_text())
    obj["benchmark"]["dataset"]["leaderboard_eligible"] = False
    (run_dir / "result.json").write_text(json.dumps(obj))
    results = tmp_path / "store"
    r = cli("add", run_dir, "--results", results)
    assert r.exit_code == 2 and "not leaderboard-eligible" in r.stderr and "Traceback" not in r.stderr
    assert not results.exists()


def test_add_refuses_tampered_samples(cli, run_dir, tmp_path):
    import pandas as pd

    df = pd.read_parquet(run_dir / "samples.parquet")
    df["clean/correct"] = 1.0 - df["clean/correct"]
    df.to_parquet(run_dir / "samples.parquet", index=False)
    r = cli("add", run_dir, "--results", tmp_path / "store")
    assert r.exit_code == 2 and "do not match" in r.stderr
    assert not (tmp_path / "store").exists()
