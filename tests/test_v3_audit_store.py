"""[anti-gaming], end to end: `fxbench audit` / `fxbench audit-ci` write records the store binds to the entry's
bytes, and the leaderboard shows the evidence (leaderboard/records.py, evidence.py).

The entry is the genuine linear-model run (tests/v3_audit_fixtures.py). It was computed on the embedded subset,
which the real v3 spec refuses; the store here takes v3's real catalogue, configs and bootstrap with the
embedded subset's fingerprint, and the entry says it is eligible: everything else is checked as for a real one.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from fxbench.errors import ResultError
from fxbench.leaderboard.evidence import entry_files, orphan_records, read_evidence, read_record, sealed
from fxbench.leaderboard.generate import build_leaderboard
from fxbench.leaderboard.store import load_store, version_spec
from v3_audit_fixtures import SUBMISSION, canonical, copy_run, embedded

NONCE = "0123456789abcdef0123"


def embedded_spec(version: str):
    ev, _ = embedded()
    return dataclasses.replace(version_spec(version), fingerprint=ev.dataset.fingerprint, eval_split=None)


class FakeSubmission:
    """What load_submission returns, for the in-memory linear model (its model.yaml would need trusted code)."""

    def __init__(self, result):
        import torch

        self.model = canonical(embedded()[1])
        self.device = torch.device("cpu")
        self._json = result["submission"]

    def to_json(self):
        return dict(self._json)


def make_store(root: Path) -> Path:
    """results/v3/<id>.json + .parquet + <id>/gallery, as `fxbench add` stores them; the model.yaml stand-in."""
    run = copy_run(root / "run")
    obj = json.loads((run / "result.json").read_text())
    obj["benchmark"]["dataset"]["leaderboard_eligible"] = True
    folder = root / "results" / "v3"
    folder.mkdir(parents=True)
    (folder / f"{SUBMISSION}.json").write_text(json.dumps(obj))
    shutil.copy(run / "samples.parquet", folder / f"{SUBMISSION}.parquet")
    shutil.copytree(run / "gallery", folder / SUBMISSION / "gallery")
    (root / "model.yaml").write_text("# stands for the submission's model.yaml\n")
    return root


def patch(mp: pytest.MonkeyPatch, root: Path) -> None:
    obj = json.loads(entry(root).read_text())
    mp.setattr("fxbench.leaderboard.records.version_spec", embedded_spec)
    mp.setattr("fxbench.models.load_submission", lambda path, **kw: FakeSubmission(obj))


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = make_store(tmp_path)
    patch(monkeypatch, root)
    return root


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A store whose entry was audited (by the records' own function): copied by the tests that need one."""
    from fxbench.leaderboard.records import audit_entry

    root = make_store(tmp_path_factory.mktemp("audited"))
    with pytest.MonkeyPatch.context() as mp:
        patch(mp, root)
        audit_entry(entry(root), nonce=NONCE, submission=root / "model.yaml", device="cpu", auditor="maintainer")
    return root


@pytest.fixture
def audited_copy(audited, tmp_path, monkeypatch):
    root = tmp_path / "copy"
    shutil.copytree(audited, root)
    patch(monkeypatch, root)
    return root


def entry(store: Path) -> Path:
    return store / "results" / "v3" / f"{SUBMISSION}.json"


def audit(cli, store: Path, *extra: str):
    return cli("audit", entry(store), "--submission", store / "model.yaml", "--device", "cpu", *extra)


def loaded(store: Path):
    return load_store(store / "results", spec_for=embedded_spec)


def evidence(store: Path):
    """The entry's evidence as the store reads it (without re-checking every metric)."""
    path = entry(store)
    return read_evidence(store / "audits", "v3", path, json.loads(path.read_text()))


def test_an_audited_entry_carries_the_evidence_on_every_output(audited_copy, cli):
    store = audited_copy
    record = read_record(store / "audits" / "v3" / f"{SUBMISSION}.json", schema="fxbench.audit/1")
    assert record["files"] == entry_files(entry(store)) and record["auditor"] == "maintainer"
    assert len(record["images"]) == 64 and record["nonce"] == NONCE and record["verdict"] == "pass"
    board = build_leaderboard(results_dir=store / "results", spec_for=embedded_spec)  # the whole store check
    readme = board.files["README.md"].decode()
    row = next(line for line in readme.splitlines() if f"`{SUBMISSION}`" in line)
    assert row.rstrip(" |").endswith("audited")  # the evidence column, last
    page = board.files[f"site/v3/{SUBMISSION}.html"].decode()
    assert "Evidence: audited" in page and f"({NONCE})" in page
    data = json.loads(board.files["leaderboard.json"])
    sub = data["versions"][0]["tables"][-1]["submissions"][0]
    assert sub["evidence"]["levels"] == ["audited"] and sub["evidence"]["audit"]["verdict"] == "pass"
    assert "audited" in board.files["leaderboard.csv"].decode().splitlines()[1]
    r = audit(cli, store, "--check")  # anyone can re-run it: the same images and verdict
    assert r.exit_code == 0 and "reproduced (64 images, verdict pass)" in r.stdout, r


@pytest.mark.parametrize("nonce", ["short", "has a space 0123456789"])
def test_a_guessable_or_malformed_nonce_is_refused_and_nothing_is_written(cli, store, nonce):
    r = audit(cli, store, "--nonce", nonce)
    assert r.exit_code == 2 and r.stderr.startswith("error: --nonce") and "Traceback" not in r.stderr
    assert not (store / "audits").exists()


def test_a_failed_audit_exits_1_and_leaves_the_entry_without_evidence(cli, store):
    path = entry(store)
    obj = json.loads(path.read_text())
    obj["submission"]["training"] = {"adversarial": True, "method": "PGD-AT"}  # a false training claim
    path.write_text(json.dumps(obj))
    r = audit(cli, store, "--nonce", NONCE)
    assert r.exit_code == 1 and "submission.training is" in r.stderr, r
    assert "verdict fail" in r.stdout and (store / "audits" / "v3" / f"{SUBMISSION}.json").is_file()
    ev = evidence(store)
    assert ev.levels == () and "its audit failed (submission.training is" in ev.notes[0]


def _tamper_flag(path: Path) -> None:
    """An unranked flag injected with the counts that call for it: consistent, so only the record sees it."""
    obj = json.loads(path.read_text())
    obj["components"]["robustness"]["checks"]["unbounded"]["survived"] = 1
    obj["flags"].append({"code": "unbounded-attack-failed", "message": "injected by a competitor"})
    path.write_text(json.dumps(obj))


def test_a_result_changed_after_its_audit_is_refused(audited_copy):
    store = audited_copy
    _tamper_flag(entry(store))
    loaded_msg = pytest.raises(ResultError, loaded, store).value
    assert f"{SUBMISSION}.json" in str(loaded_msg) and "changed after it was checked" in str(loaded_msg)


def test_a_gallery_picture_swapped_after_its_audit_is_refused(audited_copy):
    store = audited_copy
    pngs = sorted((store / "results" / "v3" / SUBMISSION / "gallery").rglob("*.png"))
    a, b = pngs[0].read_bytes(), pngs[1].read_bytes()
    pngs[0].write_bytes(b)
    pngs[1].write_bytes(a)
    with pytest.raises(ResultError, match=pngs[0].name):
        loaded(store)


def test_a_record_edited_by_hand_or_left_without_its_entry_is_refused(audited_copy):
    store = audited_copy
    rec_path = store / "audits" / "v3" / f"{SUBMISSION}.json"
    rec = json.loads(rec_path.read_text())
    rec_path.write_text(json.dumps({**rec, "nonce": "a-nicer-nonce-0000"}))  # edited by hand
    with pytest.raises(ResultError, match="edited by hand"):
        loaded(store)
    rec_path.write_text(json.dumps(rec))
    assert evidence(store).levels == ("audited",)  # restored
    (rec_path.parent / "someone-else.json").write_text(json.dumps(sealed({**rec, "submission": "someone-else"})))
    assert orphan_records(store / "audits", {"v3": {SUBMISSION}}) == [  # load_store refuses each of these
        f"{rec_path.parent / 'someone-else.json'}: an evidence record for v3/someone-else, which is not in the "
        "results store"]


def test_a_claimed_ci_run_is_shown_unverified_until_its_artifact_is_checked(cli, store):
    path = entry(store)
    obj = json.loads(path.read_text())
    obj["provenance"]["ci"] = {"repository": "fxbench/fxbench", "run_id": "4242", "run_attempt": "1",
                               "workflow": "submission", "sha": "0" * 40, "server_url": "https://github.com"}
    path.write_text(json.dumps(obj))
    ev = evidence(store)
    assert ev.levels == () and "provenance.ci names run 4242 of fxbench/fxbench, not verified" in ev.notes[0]
    page = build_leaderboard(results_dir=store / "results", spec_for=embedded_spec).files[
        f"site/v3/{SUBMISSION}.html"].decode()
    assert "not verified" in page and "Evidence: none" in page
    artifact = store / "artifact"  # the run's files, as the workflow uploaded them
    artifact.mkdir()
    shutil.copy(path, artifact / "result.json")
    shutil.copy(path.with_suffix(".parquet"), artifact / "samples.parquet")
    shutil.copytree(path.parent / SUBMISSION / "gallery", artifact / "gallery")
    r = cli("audit-ci", path, artifact, "--repository", "someone/else", "--attestation", "gh attestation verify")
    assert r.exit_code == 2 and "not of this repository" in r.stderr
    r = cli("audit-ci", path, artifact, "--repository", "fxbench/fxbench", "--attestation",
            "gh attestation verify --signer-workflow fxbench/fxbench/.github/workflows/submission.yml")
    assert r.exit_code == 0, r
    ev = evidence(store)
    assert ev.levels == ("ci-provenance",) and ev.ci["run_id"] == "4242"
    (artifact / "samples.parquet").write_bytes(b"other bytes")  # a later artifact check fails, naming the file
    r = cli("audit-ci", path, artifact, "--repository", "fxbench/fxbench", "--attestation", "x")
    assert r.exit_code == 2 and "differs from what workflow run 4242 produced" in r.stderr
