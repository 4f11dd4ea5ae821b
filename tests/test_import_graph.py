"""The package's import graph: module-level imports form no cycle, and no sampler imports a concrete
model (samplers see recommenders through :class:`reinforcens.models.base.Recommender` only)."""

from __future__ import annotations

import ast
from pathlib import Path

import reinforcens

ROOT = Path(reinforcens.__file__).parent
CONCRETE_MODELS = {"reinforcens.models.gmf", "reinforcens.models.lightgcn"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module, module: str, is_package: bool, top_level_only: bool) -> set[str]:
    """The ``reinforcens`` modules a module imports (relative imports resolved); with
    ``top_level_only``, those run at import time (not inside functions or ``if TYPE_CHECKING``)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if top_level_only and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if top_level_only and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("reinforcens"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module.split(".") if is_package else module.split(".")[:-1]
                    pkg = pkg[: len(pkg) - child.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                if base.startswith("reinforcens"):
                    found.add(base)
                    found.update(f"{base}.{a.name}" for a in child.names)
            visit(child)

    visit(tree)
    return found


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        deps = _imports(tree, name, path.name == "__init__.py", top_level_only)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_module_level_imports_have_no_cycle():
    graph = _graph(top_level_only=True)
    # a package's __init__ importing its own submodules is not a cycle of the graph's meaning
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in graph[node]:
            if node.startswith(dep + "."):  # a submodule importing its parent package's __init__
                continue
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                dfs(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)


def test_no_sampler_imports_a_concrete_model():
    graph = _graph(top_level_only=False)
    for name, deps in graph.items():
        if name.startswith("reinforcens.samplers") or name.startswith("reinforcens.ops"):
            assert not deps & CONCRETE_MODELS, f"{name} imports {sorted(deps & CONCRETE_MODELS)}"
