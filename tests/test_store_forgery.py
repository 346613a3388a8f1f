"""The results store refuses what a run did not produce (issue 12).

Every forgery starts from a genuine committed v1 result (leaderboard/results/v1), copied into a tmp store and
edited the way a submitter who wants to win would; the store must refuse it with the reason. Truth comes
from the versioned spec (metric catalogue, bootstrap settings, config hash) and the committed manifest.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from fxbench.definition import PRESETS, hash_config, load_definition
from fxbench.errors import ResultError
from fxbench.leaderboard.add import add_result
from fxbench.leaderboard.store import load_store, markdown_text, version_spec
from fxbench.results.metrics import compute_metrics

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "leaderboard" / "results" / "v1"
SID = "fxb-resnet10t-erm"


@pytest.fixture
def store(tmp_path) -> Path:
    """A store holding one genuine committed v1 result (json, parquet, gallery)."""
    root = tmp_path / "results"
    (root / "v1").mkdir(parents=True)
    for suffix in (".json", ".parquet"):
        shutil.copy(COMMITTED / f"{SID}{suffix}", root / "v1" / f"{SID}{suffix}")
    shutil.copytree(COMMITTED / SID, root / "v1" / SID)
    return root


def edit(store: Path, fn) -> None:
    path = store / "v1" / f"{SID}.json"
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def refused(store: Path, *needles: str) -> str:
    with pytest.raises(ResultError) as e:
        load_store(store)
    msg = str(e.value)
    for n in needles:
        assert n in msg, msg
    return msg


def recompute(obj: dict, df: pd.DataFrame) -> None:
    """What a careful forger does: recompute every value, n and CI with the version's own settings."""
    boot = load_definition("v1").bootstrap
    defs = [load_definition("v1").metric_catalogue(obj["benchmark"]["preset"])[m] for m in obj["metrics"]]
    obj["metrics"] = {k: v.to_json() for k, v in compute_metrics(df, defs, n_resamples=boot["n_resamples"],
                                                                  seed=boot["seed"]).items()}


def test_the_genuine_committed_result_is_accepted(store):
    s = load_store(store)
    assert [r.id for r in s.versions["v1"]] == [SID]
    assert len(s.versions["v1"][0].gallery) == 20


def test_version_spec_takes_truth_from_the_spec_and_manifest():
    spec = version_spec("v1")
    d = load_definition("v1")
    for p in PRESETS:
        assert hash_config(spec.configs[p]) == spec.config_hashes[p] == d.config_hash(p)
        assert set(spec.catalogue[p]) == set(json.loads((REPO / "benchmark/specs/v1/metrics.json").read_text())[p])
    assert len(spec.eval_split) == 801 and sum(lab for _, lab in spec.eval_split.values()) == 143


# ---- metric definitions, directions and ids come from the catalogue -------------------------------------------

def test_pointing_a_robust_metric_at_the_clean_column_is_refused(store):
    def forge(obj):
        m = obj["metrics"]["robust/linf-4/accuracy"]
        clean = obj["metrics"]["clean/accuracy"]
        m["definition"]["column"] = "clean/correct"  # the value now agrees with its (edited) definition
        m.update(value=clean["value"], ci_low=clean["ci_low"], ci_high=clean["ci_high"], n=clean["n"])
    edit(store, forge)
    refused(store, "robust/linf-4/accuracy has definition", "v1 defines it as", "robust/linf-4/correct")


def test_an_added_row_filter_is_refused(store):
    edit(store, lambda o: o["metrics"]["robust/linf-4/accuracy"]["definition"]["where"].update(label=0))
    refused(store, "robust/linf-4/accuracy has definition")


def test_a_flipped_direction_is_refused(store):
    edit(store, lambda o: o["metrics"]["clean/accuracy"].update(higher_is_better=False))
    refused(store, "clean/accuracy says higher_is_better=False")


def test_a_forged_pair_with_a_new_metric_id_is_refused(store):
    df = pd.read_parquet(store / "v1" / f"{SID}.parquet")
    df["robust/linf-4/forged"] = 1.0
    df.to_parquet(store / "v1" / f"{SID}.parquet", index=False)

    def forge(obj):
        obj["metrics"]["robust/linf-4/forged"] = {
            "value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 801, "higher_is_better": True,
            "definition": {"column": "robust/linf-4/forged", "reduce": "mean", "where": {}}}
    edit(store, forge)
    refused(store, "robust/linf-4/forged is not defined by v1")


def test_a_dropped_metric_is_refused_unless_the_battery_reported_it_unsupported(store):
    edit(store, lambda o: o["metrics"].pop("robust/linf-4/accuracy"))
    refused(store, "robust/linf-4/accuracy of v1 is missing and no battery reported it unsupported")


def test_metrics_of_a_method_reported_unsupported_may_be_absent(store):
    def drop_gradcam(obj):
        obj["metrics"] = {k: v for k, v in obj["metrics"].items() if not k.startswith("xai/gradcam/")}
        obj["components"]["explanations"]["unsupported"]["gradcam"] = "no convolutional layer"
    edit(store, drop_gradcam)
    df = pd.read_parquet(store / "v1" / f"{SID}.parquet")
    good = df.copy()
    df.loc[:, [c for c in df.columns if c.startswith("xai/gradcam/")]] = float("nan")  # as an unsupported method
    df.to_parquet(store / "v1" / f"{SID}.parquet", index=False)
    load_store(store)  # accepted: the battery said why, and the samples agree
    good.to_parquet(store / "v1" / f"{SID}.parquet", index=False)
    refused(store, "is omitted as unsupported, but its column")  # a claim the per-sample file contradicts
    edit(store, lambda o: o["components"]["explanations"]["unsupported"].clear())
    refused(store, "xai/gradcam/", "is missing")


# ---- the evaluation split, n and CIs ---------------------------------------------------------------------------

def test_a_101_image_subset_that_says_n_101_is_refused(store):
    df = pd.read_parquet(store / "v1" / f"{SID}.parquet")
    sub = pd.concat([df[df.label == 1].head(50), df[df.label == 0].head(51)], ignore_index=True)
    sub.to_parquet(store / "v1" / f"{SID}.parquet", index=False)

    def forge(obj):
        obj["benchmark"]["dataset"].update(n=101, n_fracture=50)
        recompute(obj, sub)
    edit(store, forge)
    refused(store, "n=101", "evaluation split has n=801 (143 fractured)")


def test_the_subset_is_refused_even_when_n_is_left_alone(store):
    df = pd.read_parquet(store / "v1" / f"{SID}.parquet")
    df.loc[0, "image_id"] = "IMG9999999"  # one image swapped for another
    df.to_parquet(store / "v1" / f"{SID}.parquet", index=False)
    refused(store, "not v1's evaluation split", "'IMG9999999'")


def test_non_numeric_labels_are_refused_not_a_traceback(store):
    df = pd.read_parquet(store / "v1" / f"{SID}.parquet")
    df["label"] = df["label"].astype(str)
    df.loc[0, "label"] = "fracture"
    df.to_parquet(store / "v1" / f"{SID}.parquet", index=False)
    refused(store, "1 label(s) differ from the manifest")


def test_flipped_labels_are_refused(store):
    df = pd.read_parquet(store / "v1" / f"{SID}.parquet")
    df.loc[df.index[:3], "label"] = 1 - df.loc[df.index[:3], "label"]
    df.to_parquet(store / "v1" / f"{SID}.parquet", index=False)
    refused(store, "label(s) differ from the manifest")


@pytest.mark.parametrize("field,delta", [("ci_low", -0.05), ("ci_high", 0.2), ("n", -1)])
def test_edited_ci_or_n_is_refused(store, field, delta):
    edit(store, lambda o: o["metrics"]["clean/accuracy"].update({field: o["metrics"]["clean/accuracy"][field] + delta}))
    refused(store, f"clean/accuracy {field} (stored")


def test_a_ci_outside_its_value_is_an_error_not_a_traceback(store, cli, tmp_path):
    edit(store, lambda o: o["metrics"]["clean/accuracy"].update(ci_low=0.99, ci_high=0.999))
    r = cli("leaderboard", "--results", store, "--out", tmp_path / "board")
    assert r.exit_code == 2 and "clean/accuracy ci_low" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "board").exists()


# ---- config and fingerprint --------------------------------------------------------------------------------

def test_an_edited_config_with_the_old_hash_is_refused(store):
    edit(store, lambda o: o["benchmark"]["config"]["batteries"]["clean"].update(threshold=0.3))
    refused(store, "re-hashes to", "the config was edited")


def test_an_edited_config_with_a_matching_new_hash_is_refused(store):
    def forge(obj):
        obj["benchmark"]["config"]["batteries"]["clean"]["threshold"] = 0.3
        obj["benchmark"]["config_hash"] = hash_config(obj["benchmark"]["config"])
    edit(store, forge)
    refused(store, "does not match v1's 'quick' preset")


def test_another_fingerprint_is_refused(store):
    edit(store, lambda o: o["benchmark"]["dataset"].update(fingerprint="0" * 64))
    refused(store, "dataset fingerprint 000000000000... does not match v1's")


# ---- store hygiene -----------------------------------------------------------------------------------------

def test_an_id_with_a_trailing_newline_is_refused(store):
    edit(store, lambda o: o["submission"].update(id=SID + "\n"))
    refused(store, "submission/id", "does not match")


def test_a_symlinked_result_file_is_refused(store, tmp_path):
    real = tmp_path / "elsewhere.json"
    shutil.move(store / "v1" / f"{SID}.json", real)
    os.symlink(real, store / "v1" / f"{SID}.json")
    refused(store, "is a symbolic link")


def test_a_symlinked_per_sample_file_is_refused(store, tmp_path):
    real = tmp_path / "elsewhere.parquet"
    shutil.move(store / "v1" / f"{SID}.parquet", real)
    os.symlink(real, store / "v1" / f"{SID}.parquet")
    refused(store, "is a symbolic link")


def test_gallery_files_must_be_real_pngs_and_not_links(store, tmp_path):
    png = sorted((store / "v1" / SID / "gallery").rglob("*.png"))[0]
    png.write_bytes(b"<html><script>alert(1)</script></html>")
    refused(store, "not a PNG image")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    png.unlink()
    os.symlink(secret, png)
    refused(store, "is a symbolic link")


def test_unlisted_gallery_files_are_refused(store):
    extra = store / "v1" / SID / "gallery" / "IMG0003297" / "extra.png"
    shutil.copy(sorted((store / "v1" / SID / "gallery").rglob("*.png"))[0], extra)
    refused(store, "extra.png: not listed")


def test_an_oversized_result_file_is_refused_before_parsing(store):
    path = store / "v1" / f"{SID}.json"
    with open(path, "r+b") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: no disk used
    refused(store, "byte limit for a result file")


def test_deeply_nested_json_is_an_error_not_a_recursion_error(store):
    (store / "v1" / f"{SID}.json").write_text("[" * 200_000 + "]" * 200_000)
    refused(store, "nested too deeply")


def test_add_refuses_files_samples_outside_the_run_folder(tmp_path):
    run = tmp_path / "runs" / SID
    run.mkdir(parents=True)
    obj = json.loads((COMMITTED / f"{SID}.json").read_text())
    obj["files"]["samples"] = "../../../leaderboard/results/v1/other.parquet"
    (run / "result.json").write_text(json.dumps(obj))
    with pytest.raises(ResultError, match="files/samples"):
        add_result(run, results_dir=tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_add_accepts_the_genuine_run_folder_and_refuses_a_forged_one(tmp_path):
    run = tmp_path / "runs" / SID
    run.mkdir(parents=True)
    shutil.copy(COMMITTED / f"{SID}.json", run / "result.json")
    shutil.copy(COMMITTED / f"{SID}.parquet", run / "samples.parquet")
    shutil.copytree(COMMITTED / SID / "gallery", run / "gallery")
    obj = json.loads((run / "result.json").read_text())
    obj["metrics"]["robust/linf-4/accuracy"]["definition"]["column"] = "clean/correct"
    (run / "result.json").write_text(json.dumps(obj))
    with pytest.raises(ResultError, match="v1 defines it as"):
        add_result(run, results_dir=tmp_path / "store")
    assert not (tmp_path / "store").exists()
    shutil.copy(COMMITTED / f"{SID}.json", run / "result.json")
    added = add_result(run, results_dir=tmp_path / "store")
    assert added.json_path.read_bytes() == (COMMITTED / f"{SID}.json").read_bytes()


def test_markdown_text_escapes_html_and_table_syntax():
    got = markdown_text('<img src=x onerror="alert(1)"> | [link](javascript:x)\n`code`')
    assert "<" not in got and ">" not in got and "\n" not in got
    assert "\\|" in got and "\\[" in got and "\\`" in got


def test_a_parquet_that_inflates_far_beyond_its_size_is_refused_from_its_footer(store):
    import numpy as np

    big = pd.DataFrame({"image_id": ["x"] * 200_000, "label": np.zeros(200_000, dtype=np.int64)})
    big.to_parquet(store / "v1" / f"{SID}.parquet", index=False)  # ~2 kB on disk
    refused(store, "over the limits for a per-sample file")


def test_a_json_integer_too_long_to_convert_is_an_error(store):
    path = store / "v1" / f"{SID}.json"
    path.write_text(path.read_text().replace('"n": 801', '"n": ' + "9" * 5000, 1))
    refused(store, "not a usable JSON file")


def test_add_stores_exactly_what_it_checked_and_leaves_no_staging(tmp_path):
    run = tmp_path / "runs" / SID
    run.mkdir(parents=True)
    shutil.copy(COMMITTED / f"{SID}.json", run / "result.json")
    shutil.copy(COMMITTED / f"{SID}.parquet", run / "samples.parquet")
    shutil.copytree(COMMITTED / SID / "gallery", run / "gallery")
    add_result(run, results_dir=tmp_path / "store")
    folder = tmp_path / "store" / "v1"
    assert sorted(p.name for p in folder.iterdir()) == [SID, f"{SID}.json", f"{SID}.parquet"]
    assert (folder / f"{SID}.parquet").read_bytes() == (COMMITTED / f"{SID}.parquet").read_bytes()
    load_store(tmp_path / "store")


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            yield from _paths(v, (*prefix, i))


@pytest.mark.slow  # an edit the checks accept costs a full recomputation of every CI (~1 s)
def test_random_edits_are_accepted_or_refused_never_a_traceback(store):
    """40 seeded random edits of the genuine result (a value replaced by another type or a hostile string):
    each is either harmless or a ResultError; nothing else escapes."""
    import random

    original = json.loads((store / "v1" / f"{SID}.json").read_text())
    paths = [p for p in _paths(original) if p and p[0] != "metrics"] + [
        ("metrics", "clean/accuracy", k) for k in ("value", "n", "definition", "higher_is_better")]
    values = [None, "", "x\n", -1, 10**30, 1e308, [], {}, {"a": [1]}, True, "../../etc/passwd", "<script>"]
    rng = random.Random(12)
    for _ in range(40):
        path, value = rng.choice(paths), rng.choice(values)
        obj = json.loads(json.dumps(original))
        node = obj
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        (store / "v1" / f"{SID}.json").write_text(json.dumps(obj))
        try:
            load_store(store)
        except ResultError:
            pass


@pytest.mark.parametrize("url", ["javascript:alert(1)", 'https://x.org/"onmouseover="alert(1)'])
def test_a_submission_url_that_is_not_a_plain_web_address_is_refused(store, url):
    edit(store, lambda o: o["submission"].update(url=url))
    refused(store, "submission/url")
