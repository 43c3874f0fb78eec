"""The layering rules of DESIGN.md §2.10, checked on the source: no import cycle between files or sub-packages
(imports inside functions count), and the library does not import the CLI, the study runner or the report."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "medrobust").rglob("*.py"):
        name = ".".join(p.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


MODULES = _modules()


def _targets(module: str, node: ast.AST) -> list[str]:
    """The medrobust modules an import statement depends on (a package only when names come from it)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".")
            pkg = base if MODULES[module].name == "__init__.py" else base[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            origin = ".".join(pkg + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        subs = [f"{origin}.{a.name}" for a in node.names if f"{origin}.{a.name}" in MODULES]
        names = subs + ([origin] if len(subs) < len(node.names) else [])
    out = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name.startswith("medrobust") and name != module:
            out.append(name)
    return out


def import_graph() -> dict[str, set[str]]:
    graph = {m: set() for m in MODULES}
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[m].update(_targets(m, node))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m, targets in graph.items():
        a = package_of(m)
        out.setdefault(a, set())
        for t in targets:
            b = package_of(t)
            out.setdefault(b, set())
            if a != b and "medrobust" not in (a, b):
                out[a].add(b)
    return out


def test_no_file_level_import_cycle():
    assert cycles(import_graph()) == []


def test_no_package_level_import_cycle():
    assert cycles(package_graph(import_graph())) == []


@pytest.mark.parametrize("upper", ["medrobust.cli", "medrobust.study", "medrobust.report"])
def test_library_does_not_import_the_layers_above_it(upper):
    lib = {"attacks", "corruptions", "data", "defenses", "engine", "evaluation", "methods", "models"}
    graph = package_graph(import_graph())
    offenders = [p for p, targets in graph.items() if p.split(".")[-1] in lib and upper in targets]
    assert offenders == []


def test_the_report_reads_records_not_the_library():
    graph = package_graph(import_graph())
    assert graph["medrobust.report"] <= {"medrobust.record", "medrobust.fileio"}


def test_detector_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
