"""The shape of the code (issue 19): no import circle in the package (imports inside functions count: they
still tie two modules together), no module importing another module's private name, no module over 450 lines.
Read from the source with ast, so it needs nothing installed and runs in well under a second."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "benchmark"
MAX_LINES = 450


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["fxbench", *parts])] = p
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """Imports under `if TYPE_CHECKING:` are for type checkers only: they never run."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            for sub in node.body:
                skip.update(id(n) for n in ast.walk(sub))
    return skip


def imports(mods: dict[str, Path]):
    """(importer, imported module, name or None) for every fxbench import that runs."""
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("fxbench"):
                    continue
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    yield name, (full if full in mods else target), (None if full in mods else alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods:
                        yield name, alias.name, None


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    mods = modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for src, dst, _ in imports(mods):
        if dst in mods and dst != src and not src.startswith(dst + "."):  # a package's own __init__ runs first
            edges[src].add(dst)
    assert circles(edges) == []


def test_the_circle_finder_finds_circles():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_another_modules_private_names():
    mods = modules()
    private = [(src, dst, n) for src, dst, n in imports(mods)
               if n is not None and n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
    assert private == []


def test_no_module_over_450_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
