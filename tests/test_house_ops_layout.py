"""The lent-GPU window operations live in ops/gpu/, not among the benchmarks in scripts/: every reference points
there, the scripts find the repository root from their new place, and CI lints them."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OPS = REPO / "ops" / "gpu"
MOVED = ("gpu_baselines.sh", "gpu_env.sh", "gpu_pack.sh", "gpu_pack_data.py", "gpu_reference.py",
         "gpu_robustness_floor.py", "gpu_scale_out.sh", "gpu_summary.py", "gpu_v2.py", "gpu_v2.sh")
# committed bytes that name the old path on purpose: model.yaml is hashed into the committed results
FROZEN = {"submissions/fxb-reference-no-fracture/model.yaml", "submissions/fxb-reference-no-fracture/README.md",
          "ops/gpu/gpu_reference.py"}


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    return [REPO / p for p in out.splitlines()
            if p.endswith((".md", ".py", ".sh", ".yml", ".yaml", ".toml", ".txt")) or p in (".ci/run", "tasks.py")]


def test_the_gpu_scripts_moved_to_ops_gpu_with_a_readme():
    assert not list((REPO / "scripts").glob("gpu_*")), "GPU-window operations belong in ops/gpu/"
    for name in MOVED:
        assert (OPS / name).is_file(), name
    readme = (OPS / "README.md").read_text()
    assert "lent-GPU" in readme and "scripts/" in readme and "bench_" in readme


def test_no_reference_to_the_old_paths_is_left():
    old = re.compile(r"scripts/(" + "|".join(re.escape(n) for n in MOVED) + r")\b")
    stale = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in _tracked_text_files() if p.is_file()
             and p.relative_to(REPO).as_posix() not in FROZEN
             for m in old.finditer(p.read_text(errors="replace"))]
    assert not stale, stale


def test_every_ops_gpu_path_named_in_the_docs_exists():
    named = set()
    for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), OPS / "README.md"]:
        named |= set(re.findall(r"ops/gpu/[\w.]+\.(?:sh|py)", p.read_text()))
    assert named, "the docs name the ops scripts"
    assert [n for n in sorted(named) if not (REPO / n).is_file()] == []


@pytest.mark.parametrize("name", [n for n in MOVED if n.endswith(".sh")])
def test_shell_scripts_parse_and_cd_to_the_repository_root(name):
    text = (OPS / name).read_text()
    assert subprocess.run(["bash", "-n", str(OPS / name)], capture_output=True).returncode == 0
    for line in text.splitlines():
        if line.startswith("cd ") and "dirname" in line:
            assert line.strip() == 'cd "$(dirname "$0")/../.."', line


def test_gpu_v2_finds_the_repository_root():
    spec = importlib.util.spec_from_file_location("house_gpu_v2", OPS / "gpu_v2.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["house_gpu_v2"] = mod  # dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop("house_gpu_v2", None)
    assert mod.REPO == REPO


def test_ci_lints_ops():
    lint = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("ruff check")]
    assert lint and all(" ops " in f" {line} " for line in lint)
