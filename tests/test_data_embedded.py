"""The embedded subset and the committed split manifest: both ship in the package and must agree."""

from __future__ import annotations

import json

import pytest
from fxbench.data import EmbeddedDataWarning, load, load_arrays, resolve_data
from fxbench.data.embedded import EMBEDDED_DIR, select
from fxbench.data.fingerprint import RowDigest, fingerprint, ids_digest, pixel_sha256
from fxbench.data.geometry import decode_png
from fxbench.data.manifest import load_manifest, manifest_fingerprint


def test_embedded_is_used_when_nothing_is_prepared_and_says_so():
    with pytest.warns(EmbeddedDataWarning, match="embedded subset"):
        ds = load()
    assert len(ds) == 96 and sum(ds["label"]) == 48
    assert set(ds["split"]) <= {"valid", "test"}
    src = resolve_data()
    assert src.embedded and not src.leaderboard_eligible and src.name == "fracatlas-v1-embedded"


def test_embedded_arrays_are_canonical_and_not_eligible():
    with pytest.warns(EmbeddedDataWarning):
        ev = load_arrays(limit=10)
    assert ev.x.shape == (10, 1, 224, 224) and ev.masks.shape == (10, 1, 224, 224)
    assert ev.y.sum().item() == 5 and ev.dataset.leaderboard_eligible is False
    assert ev.dataset.name == "fracatlas-v1-embedded"
    fr = ev.y == 1
    assert ev.masks[fr].flatten(1).any(1).all() and not ev.masks[~fr].any()


def test_embedded_fingerprint_recomputes_from_its_pixels():
    with pytest.warns(EmbeddedDataWarning):
        ds = load(split="all")
    raw = ds.with_format("arrow")[:]
    digests = [
        RowDigest(i, s, y, pixel_sha256(decode_png(im["bytes"])), pixel_sha256(decode_png(m["bytes"])))
        for i, s, y, im, m in zip(
            raw["image_id"].to_pylist(),
            raw["split"].to_pylist(),
            raw["label"].to_pylist(),
            raw["image"].to_pylist(),
            raw["mask"].to_pylist(),
        )
    ]
    info = json.loads((EMBEDDED_DIR / "fxbench.json").read_text())
    assert fingerprint(digests) == info["fingerprint"] == resolve_data().fingerprint


def test_embedded_rows_are_manifest_eval_rows():
    m = load_manifest()
    labels = m.labels()
    with pytest.warns(EmbeddedDataWarning):
        ds = load(split="all")
    for image_id, split, label in zip(ds["image_id"], ds["split"], ds["label"]):
        assert labels[image_id] == (split, label)
    assert sum(ds["hardware"]) >= 4  # the hardware subgroup is represented


def test_info_on_embedded_says_so(cli):
    r = cli("data", "info", "--json")
    assert r.exit_code == 0, r
    doc = json.loads(r.stdout)
    assert doc["embedded"] is True and doc["splits"]["eval"] == {"n": 96, "n_fracture": 48}
    assert "embedded subset" in r.stderr


def test_manifest_is_consistent():
    m = load_manifest()
    raw = m.raw
    ids = [i for s in raw["images"].values() for c in s.values() for i in c]
    assert len(ids) == len(set(ids)) == raw["counts"]["all"]["n"] == 4024
    assert len(raw["images"]["valid"]["fracture"]) + len(raw["images"]["test"]["fracture"]) == 143
    assert raw["counts"]["eval"]["n_fracture"] == 143
    rows = [RowDigest(i, s, y, "", "") for i, (s, y) in m.labels().items()]
    assert ids_digest(rows) == m.ids_digest
    excluded = {e["image_id"] for e in raw["excluded"]}
    assert len(excluded) == 59 and not excluded & set(ids)
    assert manifest_fingerprint() == m.variants["downscaled-512"] and len(manifest_fingerprint()) == 64
    assert "figshare-original" in m.variants


def test_selection_rule_is_deterministic_and_balanced():
    meta = [
        {
            "image_id": f"IMG{i:07d}",
            "split": ("valid", "test", "train")[i % 3],
            "label": int(i % 5 == 0),
            "hardware": i % 7 == 0,
            "exif_orientation": 6 if i % 11 == 0 else 1,
        }
        for i in range(600)
    ]
    a = select(meta, per_class=10)
    assert a == select(list(reversed(meta)), per_class=10)
    by_id = {r["image_id"]: r for r in meta}
    assert sum(by_id[i]["label"] for i in a) == 10 and len(a) == 20
    assert all(by_id[i]["split"] != "train" for i in a)
