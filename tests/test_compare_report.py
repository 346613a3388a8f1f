"""`fxbench compare` as a reader uses it (issue 13): headline metrics by default, a named multiple-comparison
correction, one p-value format, no CI below min_n_for_ci, a loud warning when the image sets differ."""

from __future__ import annotations

import json
import re

import leaderboard_fixtures as F
import numpy as np
import pytest
from fxbench.leaderboard.compare import adjust_p, compare_results, fmt_p, headline_ids, resolve_result
from test_compare import RMA, pair  # noqa: F401 - fixture

P_CELL = re.compile(r"^(<0\.001|[01]\.\d{3}|n/a|-)$")


def _rows(stdout: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", ln.strip()) for ln in stdout.splitlines() if ln.startswith(("clean/", "robust/", "xai/"))]


def test_headline_by_default_all_on_request(cli, pair):  # noqa: F811
    a, b = pair
    head, every = cli("compare", a, b), cli("compare", a, b, "--all")
    assert head.exit_code == every.exit_code == 0, (head, every)
    h, e = [r[0] for r in _rows(head.stdout)], [r[0] for r in _rows(every.stdout)]
    assert set(h) < set(e) and len(h) < len(e)
    assert {"clean/accuracy", "clean/balanced_accuracy", "robust/linf-4/accuracy", RMA} <= set(h)
    assert not any("ref_" in m for m in h)  # reference maps are not headline scores
    assert "headline metrics (--all for every shared metric)" in head.stdout
    assert f"showing {len(e)} shared metrics (--all)" in every.stdout


def test_headline_ids_follow_the_layout():
    ids = ["clean/accuracy", "clean/auroc", "clean/accuracy/hardware", "robust/linf-4/accuracy",
           "robust/linf-4/sensitivity", "robust/l2-1.75/balanced_accuracy", "xai/saliency/pointing_game",
           "xai/saliency/pointing_game/hardware", "xai/ref_centre/pointing_game", "xai/saliency/mprt"]
    assert headline_ids(ids, "v2") == ["clean/accuracy", "clean/auroc", "robust/linf-4/accuracy",
                                       "robust/l2-1.75/balanced_accuracy", "xai/saliency/pointing_game"]


def test_holm_by_hand_and_bh_against_scipy():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> 0.02, 0.03, 0.06, max(0.06, 0.04) = 0.06
    assert adjust_p(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    from scipy.stats import false_discovery_control

    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.uniform(0, 0.2, size=rng.integers(1, 30)).tolist()
        assert adjust_p(q, "bh") == pytest.approx(false_discovery_control(q, method="bh").tolist())
    assert adjust_p(p, "none") == p


def test_the_correction_is_applied_and_named(cli, pair):  # noqa: F811
    a, b = pair
    out = json.loads(cli("compare", a, b, "--json").stdout)
    assert out["correction"] == "holm"
    shown = [m for m in out["metrics"] if m["p_adjusted"] is not None]
    assert shown and all(m["p_adjusted"] >= m["p_value"] for m in shown)
    assert [m["p_adjusted"] for m in shown] == pytest.approx(adjust_p([m["p_value"] for m in shown], "holm"))
    text = cli("compare", a, b, "--correction", "bh").stdout
    assert "p (BH)" in text and "Benjamini-Hochberg (false discovery rate)" in text
    assert f"adjusted for the {len(shown)} comparisons shown" in text
    assert "Holm step-down" in cli("compare", a, b).stdout
    r = cli("compare", a, b, "--correction", "bonferroni")
    assert r.exit_code == 2 and "choose one of holm, bh, none" in r.stderr


def test_one_p_value_format():
    assert [fmt_p(x) for x in (None, 0.0004, 0.001998, 0.0599, 1.0)] == ["n/a", "<0.001", "0.002", "0.060", "1.000"]


def test_p_columns_have_one_format_and_small_n_gets_no_ci(cli, pair):  # noqa: F811
    a, b = pair
    r = cli("compare", a, b, "--all")
    rows = _rows(r.stdout)
    assert all(P_CELL.match(row[5]) and P_CELL.match(row[6]) for row in rows), rows
    small = [row for row in rows if int(row[7].split()[0]) < 20]
    big = [row for row in rows if int(row[7].split()[0]) >= 20]
    assert small and big  # the fixture has subgroup metrics over a few images
    assert all(row[4] == "n<20" and row[5] == row[6] == "-" for row in small)
    assert all(row[4].startswith("[") for row in big if row[1] != "n/a")
    c = json.loads(cli("compare", a, b, "--all", "--json").stdout)
    assert all(m["too_small"] == (m["n"] < 20) for m in c["metrics"]) and c["min_n_for_ci"] == 20


def test_different_image_sets_get_a_loud_warning(cli, pair, tmp_path):  # noqa: F811
    import pandas as pd

    a, b = pair
    s = pd.read_parquet(b / "samples.parquet").iloc[:30].reset_index(drop=True)
    obj = F.make_result(F.Fake("model-b", clean=28), s)
    obj["benchmark"]["limit"] = 30
    part = F.write_run_dir(tmp_path / "part", obj, s)
    r = cli("compare", a, part)
    assert r.exit_code == 0, r
    want = "the two results cover different images (--limit: A none, B 30): A has 40, B has 30, 30 in both"
    assert r.stdout.startswith(f"WARNING: {want}") and want in r.stdout.splitlines()[-1]
    assert f"WARNING: {want}" in r.stderr
    c = compare_results(resolve_result(str(a), results_dir="."), resolve_result(str(part), results_dir="."))
    assert c.n_shared == 30 and c.warnings
    same = compare_results(resolve_result(str(a), results_dir="."), resolve_result(str(b), results_dir="."))
    assert same.warnings == []


def test_a_bare_id_means_the_current_version(tmp_path):
    from fxbench import BENCHMARK_VERSION

    results = F.make_store(tmp_path / "results", F.DEFAULT_FAKES[:1])
    sid = F.DEFAULT_FAKES[0].id
    (results / BENCHMARK_VERSION).mkdir(exist_ok=True)
    for suffix in (".json", ".parquet"):
        src = next(results.glob(f"v1/{sid}{suffix}"))
        (results / BENCHMARK_VERSION / f"{sid}{suffix}").write_bytes(src.read_bytes())
    assert resolve_result(sid, results_dir=results).path.parent.name == BENCHMARK_VERSION
    assert resolve_result(f"v1/{sid}", results_dir=results).path.parent.name == "v1"


def test_two_bare_ids_mean_the_newest_version_holding_both(tmp_path):
    """One model re-run in a newer version must not turn a comparison both have in v1 into a cross-version
    error; once both are in the newer version, that one is compared."""
    from fxbench.leaderboard.compare import resolve_pair

    results = F.make_store(tmp_path / "results", F.DEFAULT_FAKES[:2])
    a, b = (f.id for f in F.DEFAULT_FAKES[:2])

    def copy_to(version: str, sid: str) -> None:
        (results / version).mkdir(exist_ok=True)
        for suffix in (".json", ".parquet"):
            (results / version / f"{sid}{suffix}").write_bytes((results / "v1" / f"{sid}{suffix}").read_bytes())

    copy_to("v3", a)
    ra, rb = resolve_pair(a, b, results_dir=results)
    assert ra.path.parent.name == rb.path.parent.name == "v1"
    copy_to("v3", b)
    ra, rb = resolve_pair(a, b, results_dir=results)
    assert ra.path.parent.name == rb.path.parent.name == "v3"
    ra, rb = resolve_pair(f"v1/{a}", b, results_dir=results)  # a named version is kept as named
    assert (ra.path.parent.name, rb.path.parent.name) == ("v1", "v3")


def test_the_docs_examples_run_on_the_committed_results(cli, monkeypatch):
    import shlex

    from conftest import REPO

    text = (REPO / "docs" / "leaderboard.md").read_text()
    block = text.split("Examples, on the committed results", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln.split("#")[0].split(">")[0].strip() for ln in block.splitlines() if ln.startswith("fxbench compare")]
    assert len(commands) >= 3
    monkeypatch.chdir(REPO)
    for command in commands:
        r = cli(*shlex.split(command)[1:])
        assert r.exit_code == 0, (command, r)
        assert "WARNING" not in r.stderr
