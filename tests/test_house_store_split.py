"""The results store in modules of at most 450 lines, split along a seam: the version spec (spec.py), the checks
on the bytes of the parquet and PNG files (filechecks.py), the consistency checks and the store reading
(store.py). No import circle, no module reaching into another's private names, and the presets and config hash
come from fxbench.definition, not from copies."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LEADERBOARD = Path(__file__).resolve().parents[1] / "benchmark" / "leaderboard"
SPLIT = ("store.py", "spec.py", "filechecks.py", "add.py")
MAX_LINES = 450


def _tree(name: str) -> ast.Module:
    return ast.parse((LEADERBOARD / name).read_text())


def _relative_imports(tree: ast.Module) -> list[ast.ImportFrom]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]


@pytest.mark.parametrize("name", SPLIT)
def test_module_fits_the_line_limit(name):
    n = len((LEADERBOARD / name).read_text().splitlines())
    assert n <= MAX_LINES, f"{name}: {n} lines"


@pytest.mark.parametrize("name", ["spec.py", "filechecks.py"])
def test_the_split_off_modules_do_not_import_the_store(name):
    for node in _relative_imports(_tree(name)):
        if node.level == 1:  # from . import x / from .x import y: nothing of the leaderboard package at all
            assert node.module is not None and not (LEADERBOARD / f"{node.module}.py").is_file(), \
                f"{name} imports fxbench.leaderboard.{node.module}: the store imports {name}, keep it a leaf"
        if node.level == 0 and node.module:
            assert not node.module.startswith("fxbench.leaderboard"), f"{name} imports {node.module}"


@pytest.mark.parametrize("name", SPLIT)
def test_no_private_names_are_imported_from_another_module(name):
    for node in _relative_imports(_tree(name)):
        private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__future__"]
        assert not private, f"{name}: imports {private} from {node.module}"
    for node in ast.walk(_tree(name)):  # module.attribute access to a private name (e.g. store._is_png)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_"):
            assert node.value.id not in {"store", "spec", "filechecks"}, f"{name}: {node.value.id}.{node.attr}"


def test_presets_and_hash_config_are_the_definitions():
    from fxbench import definition
    from fxbench.leaderboard import spec, store

    tree = _tree("store.py")
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "hash_config" not in defined  # no copy: the store re-hashes with definition.hash_config
    assert store.hash_config is definition.hash_config
    assert set(store.PRESETS) == set(definition.PRESETS)  # the display order (full first), not another list
    assert store.PRESETS[0] == "full"
    assert spec.PRESETS is definition.PRESETS
    literal_tuples = [n for n in ast.walk(tree) if isinstance(n, ast.Tuple)
                      and {getattr(e, "value", None) for e in n.elts} == {"full", "quick"}]
    assert not literal_tuples, "store.py spells the presets out again"


def test_the_store_still_offers_what_its_importers_use():
    from fxbench.leaderboard import filechecks, spec, store

    for name in ("PRESETS", "VERSION_RE", "Store", "StoredResult", "VersionSpec", "load_store", "markdown_text",
                 "read_json", "read_samples", "samples_path", "version_spec", "check_belongs", "check_gallery"):
        assert hasattr(store, name), name
    assert store.VersionSpec is spec.VersionSpec and store.check_gallery is filechecks.check_gallery
