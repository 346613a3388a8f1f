"""`fxbench data prepare` / `data info` on a tiny synthetic release with known geometry and known defects."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from data_fixtures.synthetic import (
    CSV_MISMATCH_ID,
    EXIF_ID,
    NON_FRACTURED,
    SPLIT,
    TRUNCATED_ID,
    box_of,
    make_release,
)
from fxbench.data import load, load_arrays, resolve_data
from fxbench.data.fingerprint import RowDigest, fingerprint, pixel_sha256
from fxbench.data.geometry import decode_png
from fxbench.data.splits import assign_non_fractured
from fxbench.errors import DataError

COCO = Path("Annotations") / "COCO JSON" / "COCO_fracture_masks.json"


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return make_release(tmp_path_factory.mktemp("release") / "FracAtlas")


@pytest.fixture(scope="module")
def prepared(release, tmp_path_factory) -> Path:
    from fxbench.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "fracatlas-v1"
    prepare(release, out=out, workers=2)  # the parallel path; other tests use one worker
    return out


@pytest.fixture
def bad_release(release, tmp_path) -> Path:
    copy = tmp_path / "FracAtlas"
    shutil.copytree(release, copy)
    return copy


def test_counts_splits_and_exclusions(prepared):
    info = json.loads((prepared / "fxbench.json").read_text())
    assert info["excluded"] == [{"image_id": TRUNCATED_ID, "reason": info["excluded"][0]["reason"]}]
    assert info["excluded"][0]["reason"].startswith("truncated JPEG")
    assert info["counts"]["all"] == {"n": 13, "n_fracture": 6}
    ds = load(prepared, split="all")
    got = dict(zip(ds["image_id"], ds["split"]))
    for image_id, split in SPLIT.items():  # fractured: the official split files
        assert got[image_id] == split
    rule = assign_non_fractured(NON_FRACTURED, {"train": 3, "valid": 2, "test": 1})  # before exclusions
    assert {k: v for k, v in rule.items() if k != TRUNCATED_ID} == {
        k: got[k] for k in NON_FRACTURED if k != TRUNCATED_ID
    }
    assert info["counts"]["eval"]["n"] == info["counts"]["valid"]["n"] + info["counts"]["test"]["n"]


def test_split_rule_uses_official_proportions():
    ids = [f"IMG{i:07d}" for i in range(3366)]
    got = assign_non_fractured(ids, {"train": 574, "valid": 82, "test": 61})
    counts = {s: sum(1 for v in got.values() if v == s) for s in ("train", "valid", "test")}
    assert counts == {"train": 2695, "valid": 385, "test": 286}
    assert assign_non_fractured(list(reversed(ids)), {"train": 574, "valid": 82, "test": 61}) == got


def test_columns_flags_and_label_policy(prepared):
    ds = load(prepared, split="all")
    rows = {r["image_id"]: r for r in ds.remove_columns(["image", "mask"]).to_list()}
    assert ds.features["label"].names == ["no_fracture", "fracture"]
    assert rows[EXIF_ID]["exif_orientation"] == 6 and "exif-orientation-6" in rows[EXIF_ID]["flags"]
    assert (rows[EXIF_ID]["source_width"], rows[EXIF_ID]["source_height"]) == (80, 60)  # as displayed
    # the folder (and the polygon) decide the label; the csv's disagreement is kept as a flag
    assert rows[CSV_MISMATCH_ID]["label"] == 1 and "csv-fractured-0" in rows[CSV_MISMATCH_ID]["flags"]
    assert rows["IMG0000001"]["hardware"] is True and rows["IMG0000000"]["hand"] is True
    assert rows["IMG0000001"]["view"] == "frontal+lateral" and rows["IMG0000000"]["view"] == "frontal"
    assert rows["IMG0000000"]["region"] == "hand" and rows["IMG0000000"]["fracture_count"] == 1
    assert len(rows["IMG0000000"]["source_sha256"]) == 64
    im = ds[0]["image"]
    assert im.mode == "L" and im.size == (224, 224)


def test_masks_align_with_the_bright_boxes(prepared):
    ev = load_arrays(prepared, split="all")
    for i, image_id in enumerate(ev.ids):
        x, m = ev.x[i, 0].numpy(), ev.masks[i, 0].numpy()
        if ev.y[i] == 0:
            assert not m.any()
            continue
        assert x[m].mean() > 0.85 and x[~m].mean() < 0.2, image_id
        b = box_of(list(SPLIT).index(image_id))  # box area, scaled by 224/80 and padded by 10 rows
        assert m.sum() == pytest.approx((b.x1 - b.x0) * (b.y1 - b.y0) * (224 / 80) ** 2, rel=0.1)


def test_fingerprint_is_over_canonical_pixels(prepared):
    ds = load(prepared, split="all")
    digests = []
    for r in ds.cast_column("image", ds.features["image"].__class__(decode=False)).cast_column(
        "mask", ds.features["mask"].__class__(decode=False)
    ):
        img, mask = decode_png(r["image"]["bytes"]), decode_png(r["mask"]["bytes"])
        digests.append(
            RowDigest(r["image_id"], r["split"], r["label"], pixel_sha256(img), pixel_sha256(mask))
        )
    assert fingerprint(digests) == resolve_data(prepared).fingerprint


def test_same_source_gives_the_same_fingerprint(release, prepared, tmp_path):
    from fxbench.data.prepare import prepare

    again = prepare(release, out=tmp_path / "again", workers=1)
    assert again.fingerprint == resolve_data(prepared).fingerprint


def test_info_json(cli, prepared):
    r = cli("data", "info", "--data", prepared, "--json")
    assert r.exit_code == 0, r
    doc = json.loads(r.stdout)
    assert doc["fingerprint"] == resolve_data(prepared).fingerprint
    assert doc["splits"]["eval"] == {"n": 6, "n_fracture": 3}
    assert set(doc["splits"]) >= {"train", "valid", "test", "eval"}
    assert doc["excluded"][0]["image_id"] == TRUNCATED_ID and doc["excluded"][0]["reason"]
    assert doc["manifest"] == "ids-differ" and doc["leaderboard_eligible"] is False


def test_prepare_cli_writes_default_location_and_warns_about_the_manifest(cli, release):
    from fxbench.paths import default_data_dir

    r = cli("data", "prepare", "--source", release, "--workers", "1")
    assert r.exit_code == 0, r
    assert (default_data_dir() / "fxbench.json").is_file()
    assert "DIFFERS from the benchmark's split manifest" in r.stderr
    assert cli("data", "info", "--json").exit_code == 0


def test_load_splits_and_limits(prepared):
    assert len(load(prepared, split="eval")) == 6
    assert set(load(prepared, split="valid")["split"]) == {"valid"}
    with pytest.raises(DataError, match="unknown split"):
        load(prepared, split="validation")
    ev = load_arrays(prepared, split="all", limit=5)
    assert len(ev) == 5 and ev.y.sum().item() == 3 and ev.dataset.leaderboard_eligible is False
    assert ev.x.dtype.is_floating_point and ev.x.shape == (5, 1, 224, 224) and float(ev.x.max()) <= 1.0
    assert list(ev.meta["image_id"]) == ev.ids and "region" in ev.meta


def test_balanced_subset_alternates_classes():
    from fxbench.data import balanced_subset

    labels = [0, 0, 0, 1, 0, 1, 0]
    assert balanced_subset(labels, 4) == [0, 1, 3, 5]
    assert balanced_subset(labels, 6) == [0, 1, 2, 3, 4, 5]  # fractured ran out: non-fractured continue


# --- bad input: exit 2, the message names the file, nothing written ---------------------------------------


def _expect_refusal(cli, source, out, *needles):
    r = cli("data", "prepare", "--source", source, "--out", out, "--workers", "1")
    assert r.exit_code == 2, r
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]  # no temp folder left


def test_missing_folder(cli, bad_release, tmp_path):
    shutil.rmtree(bad_release / "images" / "Non_fractured")
    _expect_refusal(cli, bad_release, tmp_path / "out", "Non_fractured", "missing")


def test_missing_split_file(cli, bad_release, tmp_path):
    (bad_release / "Utilities" / "Fracture Split" / "valid.csv").unlink()
    _expect_refusal(cli, bad_release, tmp_path / "out", "valid.csv", "missing")


def test_parent_of_the_release_gets_a_hint(cli, bad_release, tmp_path):
    _expect_refusal(cli, bad_release.parent, tmp_path / "out", "images/Fractured", f"--source {bad_release}")


def test_corrupt_json(cli, bad_release, tmp_path):
    (bad_release / COCO).write_text('{"images": [')
    _expect_refusal(cli, bad_release, tmp_path / "out", "COCO_fracture_masks.json", "corrupt JSON")


def _edit_coco(release: Path, edit) -> None:
    coco = json.loads((release / COCO).read_text())
    edit(coco)
    (release / COCO).write_text(json.dumps(coco))


def test_polygon_with_two_points(cli, bad_release, tmp_path):
    _edit_coco(bad_release, lambda c: c["annotations"][1].update(segmentation=[[1, 1, 5, 5]]))
    _expect_refusal(
        cli,
        bad_release,
        tmp_path / "out",
        "COCO_fracture_masks.json",
        "IMG0000001.jpg",
        "fewer than 3 points",
    )


def test_polygon_outside_the_image(cli, bad_release, tmp_path):
    _edit_coco(bad_release, lambda c: c["annotations"][2].update(segmentation=[[10, 10, 95, 10, 95, 40]]))
    _expect_refusal(cli, bad_release, tmp_path / "out", "IMG0000002.jpg", "outside the image")


def test_split_id_without_image(cli, bad_release, tmp_path):
    path = bad_release / "Utilities" / "Fracture Split" / "test.csv"
    path.write_text(path.read_text() + "IMG0999999.jpg\n")
    _expect_refusal(cli, bad_release, tmp_path / "out", "test.csv", "IMG0999999.jpg", "no image")


def test_annotation_size_that_ignores_exif(cli, bad_release, tmp_path):
    def swap(c):
        entry = next(i for i in c["images"] if i["file_name"] == f"{EXIF_ID}.jpg")
        entry["width"], entry["height"] = entry["height"], entry["width"]

    _edit_coco(bad_release, swap)
    _expect_refusal(
        cli, bad_release, tmp_path / "out", f"{EXIF_ID}.jpg", "differs from the image as displayed"
    )


def test_failed_prepare_leaves_the_previous_dataset_untouched(cli, bad_release, prepared, tmp_path):
    out = tmp_path / "kept"
    shutil.copytree(prepared, out)
    before = sorted(p.name for p in out.iterdir())
    (bad_release / COCO).write_text("not json")
    r = cli("data", "prepare", "--source", bad_release, "--out", out, "--workers", "1")
    assert r.exit_code == 2 and sorted(p.name for p in out.iterdir()) == before
    assert resolve_data(out).fingerprint == resolve_data(prepared).fingerprint


def test_data_dir_that_is_not_a_dataset(cli, tmp_path):
    r = cli("data", "info", "--data", tmp_path)
    assert r.exit_code == 2 and "fxbench.json" in r.stderr
    with pytest.raises(DataError):
        load(tmp_path)


def test_decoded_pixels_are_canonical(prepared):
    ds = load(prepared, split="all")
    m = np.asarray(ds[0]["mask"])
    assert set(np.unique(m)) <= {0, 255}
