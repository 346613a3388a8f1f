"""Prepare the whole shared FracAtlas copy and check it against the committed manifest (about 30 s)."""

from __future__ import annotations

import pytest
from fxbench.data import load_arrays, resolve_data
from fxbench.data.manifest import load_manifest
from fxbench.data.prepare import prepare


@pytest.mark.fulldata
def test_full_prepare_matches_the_manifest(shared_fracatlas, tmp_path):
    report = prepare(shared_fracatlas, out=tmp_path / "fracatlas-v1", workers=2)
    m = load_manifest()
    assert report.manifest.status == "match" and report.manifest.variant == "downscaled-512"
    assert report.fingerprint == m.fingerprint
    assert report.counts == m.raw["counts"]
    assert [e.to_json() for e in report.excluded] == m.raw["excluded"]
    assert len(report.excluded) == 59 and all(e.reason.startswith("truncated JPEG") for e in report.excluded)
    assert report.counts["eval"]["n_fracture"] == 143
    src = resolve_data(tmp_path / "fracatlas-v1")
    assert src.leaderboard_eligible and src.info["flags"]["csv-fractured-0"] == 1
    assert sum(v for k, v in src.info["flags"].items() if k.startswith("exif-orientation-")) == 25
    ev = load_arrays(tmp_path / "fracatlas-v1")
    assert len(ev) == 801 and ev.dataset.leaderboard_eligible
    fr = ev.y == 1
    assert ev.masks[fr].flatten(1).any(1).all() and not ev.masks[~fr].any()
    assert int(ev.meta["hardware"].sum()) == 10
