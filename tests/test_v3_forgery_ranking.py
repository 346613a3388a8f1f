"""[anti-gaming], store side: in v3 a full-preset result is ranked only with evidence that its run happened; a
forgery that passes every cheap check lands in the unranked table with the reason, and every output (README,
CSV, JSON, site) shows each entry's evidence.

Synthetic results (tests/leaderboard_fixtures.py) under a synthetic spec, with v3's ranking rules; the
evidence records are written the way `fxbench audit` / `audit-ci` write them (sealed, bound to the bytes)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from fxbench.io import atomic_write_json
from fxbench.leaderboard.evidence import AUDIT_SCHEMA, CI_SCHEMA, LEVELS, entry_files, record_paths, sealed
from fxbench.leaderboard.generate import build_leaderboard
from fxbench.leaderboard.tables import Ranking, version_ranking
from leaderboard_fixtures import Fake, fake_spec, write_stored

RANK_BY = ("robust/linf-4/balanced_accuracy", "clean/balanced_accuracy")
V3 = Ranking(rank_by=RANK_BY, unranked_flags=frozenset({"gradient-mismatch"}), min_n_for_ci=20, n=40,
             n_fracture=20, reference_submissions=frozenset({"fxb-reference"}), require_evidence=frozenset(LEVELS))
V2 = Ranking(rank_by=RANK_BY, unranked_flags=frozenset({"gradient-mismatch"}), min_n_for_ci=20, n=40, n_fracture=20)

# A model that never ran: every outcome correct and robust, every number recomputed from those rows.
NEVER_RAN = Fake("fxb-never-ran", clean=40, robust={1: 40, 2: 40, 4: 40, 8: 40}, rma=0.9, adversarial=True)
AUDITED = Fake("fxb-audited", clean=30, robust={1: 26, 2: 22, 4: 16, 8: 8}, rma=0.4, adversarial=True)
VERIFIED = Fake("fxb-ci-verified", clean=28, robust={1: 25, 2: 21, 4: 12, 8: 6}, rma=0.35)


def audit_record(folder: Path, sid: str, verdict: str = "pass", version: str = "v3") -> None:
    rec = sealed({"schema": AUDIT_SCHEMA, "submission": sid, "version": version,
                  "files": entry_files(folder / f"{sid}.json"), "nonce": "0" * 16, "images": ["IMG9000001"] * 8,
                  "verdict": verdict, "problems": [] if verdict == "pass" else ["clean outcome of 3 of 8 images"],
                  "audited_at": "2026-12-01T00:00:00+00:00", "device": "cpu"})
    atomic_write_json(record_paths(folder.parent.parent / "audits", version, sid)[0], rec)


def ci_record(folder: Path, sid: str, run_id: str = "777") -> None:
    rec = sealed({"schema": CI_SCHEMA, "submission": sid, "version": "v3", "files": entry_files(folder / f"{sid}.json"),
                  "repository": "fxbench/fxbench", "run_id": run_id, "attestation": "gh attestation verify",
                  "checked_at": "2026-12-01T00:00:00+00:00"})
    atomic_write_json(record_paths(folder.parent.parent / "audits", "v3", sid)[1], rec)


def with_ci(f: Fake, folder: Path, run_id: str) -> Path:
    path = write_stored(folder, f, version="v3")
    obj = json.loads(path.read_text())
    obj["provenance"]["ci"] = {"repository": "fxbench/fxbench", "run_id": run_id}
    atomic_write_json(path, obj)
    return path


@pytest.fixture
def store(tmp_path) -> Path:
    folder = tmp_path / "results" / "v3"
    write_stored(folder, NEVER_RAN, version="v3")
    write_stored(folder, AUDITED, version="v3")
    audit_record(folder, AUDITED.id)
    with_ci(VERIFIED, folder, "777")
    ci_record(folder, VERIFIED.id)
    return tmp_path / "results"


def build(results: Path, ranking: Ranking = V3):
    return build_leaderboard(results_dir=results, spec_for=fake_spec, ranking_for=lambda v: ranking)


def tables(board) -> dict[str, list[dict]]:
    data = json.loads(board.files["leaderboard.json"])
    return {t["kind"]: t["submissions"] for t in data["versions"][0]["tables"]}


def test_v3_asks_for_evidence_and_v2_does_not():
    assert version_ranking("v3").require_evidence == frozenset({"audited", "ci-provenance"})
    assert version_ranking("v2").require_evidence == frozenset()


def test_a_model_that_never_ran_is_not_ranked_and_says_why(store):
    board = build(store)
    t = tables(board)
    assert [(s["rank"], s["id"]) for s in t["main"]] == [(1, AUDITED.id), (2, VERIFIED.id)]
    (forged,) = t["unranked"]
    assert forged["id"] == NEVER_RAN.id and forged["rank"] is None
    assert forged["metrics"]["robust/linf-4/balanced_accuracy"]["value"] == 1.0  # would have ranked first
    assert forged["not_ranked_because"].startswith("no evidence that the run happened (needs: audited or "
                                                   "ci-provenance")
    readme = board.files["README.md"].decode()
    section = readme.split("### Not ranked: flagged, or no evidence that the run happened")[1]
    assert f"`{NEVER_RAN.id}`" in section and "no evidence that the run happened" in section
    ranked = readme.split("### Models (full preset, ranked)")[1].split("###")[0]
    assert NEVER_RAN.id not in ranked


def test_every_output_shows_each_entrys_evidence(store):
    board = build(store)
    t = tables(board)
    by_id = {s["id"]: s for rows in t.values() for s in rows}
    assert by_id[AUDITED.id]["evidence"]["levels"] == ["audited"]
    assert by_id[VERIFIED.id]["evidence"]["levels"] == ["ci-provenance"]
    assert by_id[VERIFIED.id]["evidence"]["ci"]["run_id"] == "777"
    assert by_id[NEVER_RAN.id]["evidence"]["label"] == "none"
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(board.files["leaderboard.csv"].decode()))}
    assert (rows[AUDITED.id]["evidence"], rows[VERIFIED.id]["evidence"], rows[NEVER_RAN.id]["evidence"]) == \
        ("audited", "CI-verified", "none")
    index = board.files["site/index.html"].decode()
    assert index.count("<span class=\"evidence\"") == 3 and "data-col=\"evidence\"" in index
    page = board.files[f"site/v3/{VERIFIED.id}.html"].decode()
    assert "Evidence: CI-verified" in page and "https://github.com/fxbench/fxbench/actions/runs/777" in page
    assert "No evidence that this run happened" in board.files[f"site/v3/{NEVER_RAN.id}.html"].decode()


def test_a_fake_ci_provenance_is_shown_as_a_claim_and_earns_no_rank(tmp_path):
    folder = tmp_path / "results" / "v3"
    with_ci(NEVER_RAN, folder, "123")
    write_stored(folder, AUDITED, version="v3")
    audit_record(folder, AUDITED.id)
    board = build(tmp_path / "results")
    (forged,) = tables(board)["unranked"]
    assert "provenance.ci names run 123 of fxbench/fxbench, not verified" in forged["not_ranked_because"]
    assert forged["evidence"]["claimed_ci"]["run_id"] == "123"
    page = board.files[f"site/v3/{NEVER_RAN.id}.html"].decode()
    assert "<strong>not verified</strong>" in page


def test_a_ci_record_for_another_run_than_the_result_names_is_refused(tmp_path):
    from fxbench.errors import ResultError

    folder = tmp_path / "results" / "v3"
    with_ci(VERIFIED, folder, "777")
    ci_record(folder, VERIFIED.id, run_id="778")
    with pytest.raises(ResultError, match="verified run fxbench/fxbench#778, but the result names"):
        build(tmp_path / "results")


def test_a_failed_audit_is_evidence_of_nothing_and_the_reason_is_shown(tmp_path):
    folder = tmp_path / "results" / "v3"
    write_stored(folder, NEVER_RAN, version="v3")
    audit_record(folder, NEVER_RAN.id, verdict="fail")
    (forged,) = tables(build(tmp_path / "results"))["unranked"]
    assert "its audit failed (clean outcome of 3 of 8 images)" in forged["not_ranked_because"]


def test_quick_results_and_reference_submissions_need_no_evidence(tmp_path):
    folder = tmp_path / "results" / "v3"
    write_stored(folder, Fake("fxb-quick", preset="quick"), version="v3")
    write_stored(folder, Fake("fxb-reference", clean=33, robust={4: 33}), version="v3")
    t = tables(build(tmp_path / "results"))
    assert [s["id"] for s in t["quick"]] == ["fxb-quick"]  # never ranked anyway: stays in its table
    assert [s["id"] for s in t["main"]] == ["fxb-reference"] and t["main"][0]["rank"] is None
    assert "unranked" not in t


def test_v2_keeps_its_ranking_without_evidence(tmp_path):
    folder = tmp_path / "results" / "v2"
    write_stored(folder, NEVER_RAN, version="v2")
    write_stored(folder, AUDITED, version="v2")
    board = build_leaderboard(results_dir=tmp_path / "results", spec_for=fake_spec, ranking_for=lambda v: V2)
    data = json.loads(board.files["leaderboard.json"])
    kinds = {t["kind"]: t["submissions"] for t in data["versions"][0]["tables"]}
    assert [(s["rank"], s["id"]) for s in kinds["main"]] == [(1, NEVER_RAN.id), (2, AUDITED.id)]
    assert "flagged" not in kinds and "unranked" not in kinds


def test_leaderboard_json_says_each_versions_sort_keys(tmp_path):
    write_stored(tmp_path / "results" / "v3", AUDITED, version="v3")
    write_stored(tmp_path / "results" / "v1", AUDITED, version="v1")
    rankings = {"v3": V3, "v1": None}
    board = build_leaderboard(results_dir=tmp_path / "results", spec_for=fake_spec, ranking_for=rankings.get)
    data = json.loads(board.files["leaderboard.json"])
    assert data["rank_by"] == list(RANK_BY)  # the newest version's, not v1's robust/linf-4/accuracy
    assert {v["version"]: v["rank_by"] for v in data["versions"]} == {
        "v3": list(RANK_BY), "v1": ["robust/linf-4/accuracy", "clean/balanced_accuracy"]}


def test_add_refuses_a_copy_of_a_stored_run_and_a_replacement_that_would_orphan_its_record(cli, tmp_path,
                                                                                           monkeypatch):
    import numpy as np
    import pandas as pd
    from fxbench.leaderboard import store as store_mod
    from leaderboard_fixtures import make_result, make_samples, write_run_dir

    monkeypatch.setattr(store_mod, "version_spec", fake_spec)
    results = tmp_path / "store"
    genuine = make_samples(AUDITED)
    genuine["clean/p_fracture"] = np.random.default_rng(1).uniform(0.01, 0.99, len(genuine))
    genuine["clean/correct"] = ((genuine["clean/p_fracture"] >= 0.5) == (genuine["label"] == 1)).astype(float)
    def result(f, samples):
        out = make_result(f, samples, version="v3")
        out["files"]["gallery"] = []
        return out

    run = write_run_dir(tmp_path / "runs" / AUDITED.id, result(AUDITED, genuine), genuine)
    assert cli("add", run, "--results", results).exit_code == 0
    copy = pd.read_parquet(run / "samples.parquet")  # the same rows under a new id
    copied = write_run_dir(tmp_path / "runs" / NEVER_RAN.id, result(NEVER_RAN, copy), copy)
    r = cli("add", copied, "--results", results)
    assert r.exit_code == 2 and "share the same clean/p_fracture to the last bit" in r.stderr, r
    assert not (results / "v3" / f"{NEVER_RAN.id}.json").exists()
    audit_record(results / "v3", AUDITED.id)
    r = cli("add", run, "--results", results, "--replace")
    assert r.exit_code == 2 and "has an evidence record, which would no longer match" in r.stderr, r
