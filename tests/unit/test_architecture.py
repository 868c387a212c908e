"""The package's shape, as DESIGN.md draws it: no import cycles, and every module the
module table names exists."""

import ast
import glob
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bench", "workloads", "reports")
DOC = (ROOT / "DESIGN.md").read_text()


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Every module of ours `name` imports, at the top or inside a function alike."""
    def ours(dotted: str) -> str | None:
        while dotted and dotted not in mods:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {ours(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for a in node.names:
                found.add(ours(f"{base}.{a.name}") if f"{base}.{a.name}" in mods else ours(base))
    return found - {None, name}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    mods = _modules()
    graph = {m: _imports(m, p, mods) & set(mods) for m, p in mods.items()}
    assert "bench.runner" in graph["bench.session"]            # the walk sees lazy imports too
    found = cycles(graph)
    assert found == [], f"import cycles: {[sorted(c) for c in found]}"


def test_every_module_in_designs_table_exists():
    table = DOC[DOC.index("| module | one concern |"):]
    table = table[:table.index("\n\n")]
    named = [p for row in table.splitlines()[2:]
             for p in re.findall(r"`([\w./*-]+)`", row.split(" | ")[0])]
    assert len(named) > 30
    missing = [p for p in named if not (glob.glob(str(ROOT / p)) if "*" in p else (ROOT / p).exists())]
    assert missing == [], f"DESIGN.md's module table names modules that do not exist: {missing}"
