"""The layers import one way (api -> utils -> datastructure, conf beside them) and no module of
the project imports itself back through others. Imports are read with ``ast``, function-local
ones included, so a cycle cannot hide inside a function."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

PACKAGES = ("api", "utils", "datastructure", "conf")
# Which packages each layer may import: never upwards.
ALLOWED = {
    "api": {"api", "utils", "datastructure", "conf"},
    "utils": {"utils", "datastructure", "conf"},
    "datastructure": {"datastructure", "conf"},
    "conf": {"conf"},
}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the project's packages, and main.py, by dotted name."""
    modules = {"main": root / "main.py"}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported(source: str, module: str, known: set[str]) -> set[str]:
    """The project modules that ``source`` (the module ``module``) imports, anywhere in it."""
    found = set()
    package = module if module in PACKAGES else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from api import auth` imports the module api.auth; `from api.auth import x`, api.auth
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = project_modules(root)
    return {name: imported(path.read_text(), name, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_of_the_project_imports_itself_back():
    assert cycles(import_graph()) == []


def test_the_cluster_executor_imports_nothing_of_the_project():
    """The Dask executor gets the pipeline version, its probes and its error from its caller."""
    assert import_graph()["utils.cluster"] == set()


def test_layers_import_one_way():
    wrong = [(module, target) for module, targets in import_graph().items() for target in targets
             if module != "main" and target.split(".")[0] not in ALLOWED[module.split(".")[0]]]
    assert wrong == []


def test_no_blueprint_imports_the_api_package():
    graph = import_graph()
    assert [module for module, targets in graph.items() if "api" in targets] == []


def test_the_check_sees_function_local_imports_and_cycles(tmp_path):
    """The checker itself: a cycle closed by an import inside a function, and an upward import."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "main.py").write_text("")
    (tmp_path / "utils" / "a.py").write_text("from utils.b import thing\n")
    (tmp_path / "utils" / "b.py").write_text("def thing():\n    from utils import a\n    return a\n")
    (tmp_path / "datastructure" / "c.py").write_text("def up():\n    import api.d\n")
    (tmp_path / "api" / "d.py").write_text("from . import e\n")
    (tmp_path / "api" / "e.py").write_text("")
    graph = import_graph(tmp_path)
    assert cycles(graph) == [["utils.a", "utils.b"]]
    assert graph["datastructure.c"] == {"api.d"}
    assert graph["api.d"] == {"api.e"}
