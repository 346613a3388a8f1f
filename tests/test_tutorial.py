"""docs/tutorial.py keeps working: run its main() with fewer images and the clean battery only."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import REPO


@pytest.mark.slow  # 25 s on the loaded 2-core machine (robustness battery on 4 images, twice)
def test_tutorial_runs_end_to_end(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("fxbench_tutorial", REPO / "docs" / "tutorial.py")
    tutorial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tutorial)
    monkeypatch.setattr(tutorial, "LIMIT", 4)
    monkeypatch.setattr(tutorial, "BATTERIES", ["clean", "robustness"])
    tutorial.main()
    out = capsys.readouterr().out
    assert "loaded fxb-resnet10t-pgdat" in out
    # the constant reference: balanced accuracy exactly 0.5 clean and under attack (nothing to flip)
    line = next(ln for ln in out.splitlines() if "always 'no fracture'" in ln)
    assert "clean balanced accuracy 0.500" in line and "robust (L-inf 4/255) balanced accuracy 0.500" in line
    assert "p (Holm)" in out and "n<20" in out  # 4 images: no CI, said so
