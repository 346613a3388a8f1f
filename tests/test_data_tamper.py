"""Data that says it is official must be official (issue 12): the fingerprint comes from what is read, a
prepared folder replaces nothing that is not a dataset, and a lost evaluation image is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from data_fixtures.synthetic import make_release
from fxbench.data import load_arrays, resolve_data
from fxbench.data.fingerprint import RowDigest, fingerprint
from fxbench.data.geometry import decode_png, encode_png
from fxbench.data.manifest import load_manifest
from fxbench.data.prepare import Exclusion, prepare, refuse_changed_eval_split
from fxbench.errors import DataError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    release = make_release(tmp_path_factory.mktemp("release") / "FracAtlas")
    out = tmp_path_factory.mktemp("prepared") / "fracatlas-v1"
    prepare(release, out=out, workers=1)
    return out


def rewrite(src: Path, dst: Path, *, pixel: bool, digest: bool, info_fp: bool) -> str:
    """A copy of ``src`` with one pixel of the first eval image changed; optionally its row digest and the
    fxbench.json fingerprint updated too (what a careful forger does). Returns the image id."""
    import datasets as hf
    from fxbench.data.fingerprint import pixel_sha256
    from fxbench.data.splits import EVAL

    ds = hf.load_from_disk(str(src))
    df = ds.cast_column("image", hf.Image(decode=False)).cast_column("mask", hf.Image(decode=False)).to_pandas()
    target = next(i for i, s in enumerate(df["split"]) if s in EVAL)
    image_id = df.loc[target, "image_id"]
    if pixel:
        px = decode_png(df.loc[target, "image"]["bytes"]).copy()
        px[100, 100] = (int(px[100, 100]) + 1) % 256
        df.at[target, "image"] = {"bytes": encode_png(px), "path": None}
        if digest:
            df.at[target, "image_pixels_sha256"] = pixel_sha256(px)
    hf.Dataset.from_pandas(df, features=ds.features, preserve_index=False).save_to_disk(str(dst))
    info = json.loads((src / "fxbench.json").read_text())
    if info_fp:
        tampered = hf.load_from_disk(str(dst))
        info["fingerprint"] = fingerprint(
            RowDigest(r["image_id"], r["split"], r["label"], r["image_pixels_sha256"], r["mask_pixels_sha256"])
            for r in tampered.remove_columns(["image", "mask"])
        )
    (dst / "fxbench.json").write_text(json.dumps(info))
    return image_id


def test_the_prepared_dataset_verifies(prepared):
    es = load_arrays(prepared, split="all")
    assert es.dataset.fingerprint == json.loads((prepared / "fxbench.json").read_text())["fingerprint"]


def test_one_changed_pixel_is_refused_at_load_time(prepared, tmp_path):
    image_id = rewrite(prepared, tmp_path / "d", pixel=True, digest=False, info_fp=False)
    with pytest.raises(DataError, match=f"image pixels of {image_id} do not match the digest"):
        load_arrays(tmp_path / "d")


def test_a_changed_pixel_with_its_digest_updated_breaks_the_fingerprint(prepared, tmp_path):
    rewrite(prepared, tmp_path / "d", pixel=True, digest=True, info_fp=False)
    with pytest.raises(DataError, match="rows hash to fingerprint .* modified after it was prepared"):
        load_arrays(tmp_path / "d")


def test_a_fully_consistent_forgery_runs_under_its_own_fingerprint_not_the_official_one(prepared, tmp_path):
    """A forger who also rewrites fxbench.json gets a fingerprint no manifest variant knows: ineligible."""
    rewrite(prepared, tmp_path / "d", pixel=True, digest=True, info_fp=True)
    info = json.loads((tmp_path / "d" / "fxbench.json").read_text())
    info["manifest"] = {"status": "match", "variant": "downscaled-512", "message": "forged"}
    (tmp_path / "d" / "fxbench.json").write_text(json.dumps(info))
    src = resolve_data(tmp_path / "d")
    assert src.manifest_status != "match" and not src.leaderboard_eligible
    es = load_arrays(tmp_path / "d", split="all")
    assert es.dataset.fingerprint == info["fingerprint"] and not es.dataset.leaderboard_eligible


def test_prepare_refuses_a_folder_that_is_not_a_dataset(tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("years of work")
    with pytest.raises(DataError, match="not an fxbench dataset"):
        prepare(tmp_path / "no-release-needed", out=out)  # refused before the source is even read
    assert (out / "chapter1.tex").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        prepare(tmp_path / "no-release-needed", out=tmp_path / "file")


def test_prepare_replaces_an_existing_dataset(prepared, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(prepared, out)
    release = make_release(tmp_path / "rel" / "FracAtlas")
    prepare(release, out=out, workers=1)
    assert resolve_data(out).fingerprint == resolve_data(prepared).fingerprint


def test_prepare_where_nothing_can_be_written_is_refused_before_decoding(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(DataError, match="cannot write there"):
        prepare(tmp_path / "no-release-needed", out=tmp_path / "a-file" / "data")


def test_an_undecodable_eval_image_of_the_benchmark_release_is_refused():
    m = load_manifest()
    labels = m.labels()
    eval_id = next(i for i, (s, y) in labels.items() if s == "test" and y == 1)
    train_id = next(i for i, (s, _) in labels.items() if s == "train")
    all_ids = list(labels)
    with pytest.raises(DataError, match=f"{eval_id} \\(test split\\) cannot be decoded: broken.*evaluation split"):
        refuse_changed_eval_split([Exclusion(eval_id, "broken")], all_ids)
    refuse_changed_eval_split([Exclusion(train_id, "broken")], all_ids)  # train only: reported, not refused
    refuse_changed_eval_split([Exclusion(eval_id, "broken")], all_ids[:10])  # another release: ids-differ


def test_a_full_disk_during_prepare_is_an_error_and_the_old_dataset_stays(prepared, tmp_path, monkeypatch):
    import datasets as hf

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    before = sorted(p.name for p in out.iterdir())

    def full(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hf.Dataset, "save_to_disk", full)
    release = make_release(tmp_path / "rel" / "FracAtlas")
    with pytest.raises(DataError, match="No space left on device.*nothing was changed"):
        prepare(release, out=out, workers=1)
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_data_info_verifies_what_the_folder_holds(prepared, tmp_path, cli):
    r = cli("data", "info", "--data", prepared)
    assert r.exit_code == 0 and "verified: every image and mask matches it" in r.stdout
    image_id = rewrite(prepared, tmp_path / "d", pixel=True, digest=False, info_fp=False)
    r = cli("data", "info", "--data", tmp_path / "d")
    assert r.exit_code == 2 and f"image pixels of {image_id} do not match" in r.stderr and "Traceback" not in r.stderr
    r = cli("data", "info", "--data", tmp_path / "d", "--no-verify")
    assert r.exit_code == 0 and "not verified" in r.stdout


def test_a_deeply_nested_info_file_is_an_error(prepared, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(prepared, d)
    (d / "fxbench.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="not a usable JSON file"):
        resolve_data(d)
