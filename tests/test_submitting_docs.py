"""The submitting paperwork (issue 13): the path in docs/submissions.md, the PR template, CONTRIBUTING.md and
CITATION.cff exist and say what they must."""

from __future__ import annotations

import yaml
from conftest import REPO


def test_docs_give_the_whole_path_to_a_pull_request():
    text = (REPO / "docs" / "submissions.md").read_text()
    how = text.split("## How to submit", 1)[1].split("\n## ", 1)[0]
    for step in ("Fork", "cp -r submissions/_template", "fxbench validate --strict", "pull request"):
        assert step in how, step
    small = text.split("## Keeping weights small", 1)[1].split("\n## ", 1)[0]
    assert "float16" in small and "url:" in small and "sha256" in small


def test_pr_template_and_contributing():
    pr = (REPO / ".github" / "pull_request_template.md").read_text()
    assert "fxbench validate --strict" in pr and "example.org" not in pr
    contributing = (REPO / "CONTRIBUTING.md").read_text()
    assert "docs/submissions.md" in contributing and "FXBENCH_FRACATLAS" in contributing
    workflow = (REPO / ".github" / "workflows" / "submission.yml").read_text()
    assert "fxbench validate --strict" in workflow  # the check the docs promise


def test_citation_cff_has_the_required_fields():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"].startswith("1.2") and cff["message"] and cff["title"]
    assert cff["authors"] and all("name" in a or "family-names" in a for a in cff["authors"])
    from fxbench import __version__

    assert cff["version"] == __version__
    dois = [r.get("doi") for r in cff.get("references", [])]
    assert "10.1038/s41597-023-02432-4" in dois  # FracAtlas, whose licence asks for attribution
