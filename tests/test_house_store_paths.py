"""`fxbench leaderboard --out` and `fxbench add --results` where a folder is expected and a file is found: one
`error:` paragraph, exit code 2, and nothing written or changed (they were FileExistsError / NotADirectoryError
tracebacks)."""

from __future__ import annotations

import shutil
from pathlib import Path

import leaderboard_fixtures as F
import pytest
from fxbench.leaderboard import store as store_mod


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (and root itself): file bytes, None for folders."""
    paths = [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]
    return {p.relative_to(root.parent).as_posix(): (None if p.is_dir() else p.read_bytes()) for p in paths}


def refused(r, *words: str) -> None:
    assert r.exit_code == 2, r
    assert r.stderr.startswith("error:") and "Traceback" not in r.stderr, r
    for w in words:
        assert w in r.stderr, r


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return F.make_store(tmp_path_factory.mktemp("house") / "results", F.DEFAULT_FAKES[:2])


@pytest.fixture
def results(template, tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(store_mod, "version_spec", F.fake_spec)
    return F.copy_store(template, tmp_path / "results")


# ---- fxbench leaderboard --out --------------------------------------------------------------------------------

def test_leaderboard_out_an_existing_file_is_refused(cli, results, tmp_path):
    out = tmp_path / "board.txt"
    out.write_text("keep me\n")
    r = cli("leaderboard", "--results", results, "--out", out)
    refused(r, str(out), "must be a folder")
    assert out.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board.txt", "results"]  # no temporary left behind


def test_leaderboard_out_below_a_file_is_refused(cli, results, tmp_path):
    (tmp_path / "plain").write_text("x")
    r = cli("leaderboard", "--results", results, "--out", tmp_path / "plain" / "board")
    refused(r, "plain is a file")
    assert (tmp_path / "plain").read_text() == "x"


def test_leaderboard_out_with_a_folder_where_a_file_goes_writes_nothing(cli, results, tmp_path):
    out = tmp_path / "board"
    (out / "leaderboard.json").mkdir(parents=True)
    before = snapshot(out)
    r = cli("leaderboard", "--results", results, "--out", out)
    refused(r, "leaderboard.json is a folder")
    assert snapshot(out) == before  # no site/ swapped in before the refusal


def test_leaderboard_check_against_a_file_is_refused(cli, results, tmp_path):
    out = tmp_path / "board.txt"
    out.write_text("keep me\n")
    refused(cli("leaderboard", "--results", results, "--out", out, "--check"), "not a folder")


def test_leaderboard_out_still_works_for_a_new_folder(cli, results, tmp_path):
    r = cli("leaderboard", "--results", results, "--out", tmp_path / "new" / "board")
    assert r.exit_code == 0, r
    assert (tmp_path / "new" / "board" / "README.md").is_file()


# ---- fxbench add --results -----------------------------------------------------------------------------------

@pytest.fixture
def run_dir(results, tmp_path) -> Path:
    """A run folder as `fxbench run` writes it, for a submission the store does not hold yet."""
    src = sorted(results.glob("v1/*.json"))[0]
    sid = src.stem
    out = tmp_path / "runs" / sid
    out.mkdir(parents=True)
    shutil.copy(src, out / "result.json")
    shutil.copy(src.with_suffix(".parquet"), out / "samples.parquet")
    shutil.copytree(src.parent / sid / "gallery", out / "gallery")
    return out


def test_add_results_an_existing_file_is_refused(cli, run_dir, tmp_path):
    target = tmp_path / "store.txt"
    target.write_text("not a store\n")
    r = cli("add", run_dir, "--results", target)
    refused(r, "store.txt is a file")
    assert target.read_text() == "not a store\n"


def test_add_with_a_file_as_the_version_entry_is_refused(cli, run_dir, tmp_path):
    store = F.make_store(tmp_path / "store", F.DEFAULT_FAKES[2:3], version="v2")
    (store / "v1").write_text("a file where the v1 folder goes\n")
    before = snapshot(store)
    r = cli("add", run_dir, "--results", store)
    refused(r, "v1", "must be a folder")
    assert snapshot(store) == before


@pytest.mark.parametrize("blocked", ["{sid}.json", "{sid}.parquet"])
def test_add_replace_with_a_folder_where_a_file_goes_changes_nothing(cli, run_dir, results, blocked):
    sid = run_dir.name
    place = results / "v1" / blocked.format(sid=sid)
    place.unlink()
    (place / "inside").mkdir(parents=True)
    before = snapshot(results)
    r = cli("add", run_dir, "--results", results, "--replace")
    refused(r, "is a folder where the store keeps a file")
    assert snapshot(results) == before


def test_add_with_a_file_where_the_gallery_folder_goes_changes_nothing(cli, run_dir, results):
    sid = run_dir.name
    shutil.rmtree(results / "v1" / sid)
    (results / "v1" / sid).write_text("stray\n")
    before = snapshot(results)
    r = cli("add", run_dir, "--results", results, "--replace")
    refused(r, "gallery folder")
    assert snapshot(results) == before


def test_add_into_a_new_store_still_works(cli, run_dir, tmp_path):
    r = cli("add", run_dir, "--results", tmp_path / "fresh" / "store")
    assert r.exit_code == 0, r
    assert (tmp_path / "fresh" / "store" / "v1" / f"{run_dir.name}.json").is_file()
