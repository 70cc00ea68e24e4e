"""The library's shape, read from its source with ast (nothing is imported): no import cycle among its modules
(imports made only for type checking count too), a training loop that reads in one sitting, no function too
long to follow, and no gradio anywhere in alexnet_core (docs/architecture.md)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "alexnet_core"
MODULES = {path.stem: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in PACKAGE.glob("*.py")}
MAX_TRAIN_LINES = 100
MAX_FUNCTION_LINES = 150


def _imported_modules(tree: ast.Module) -> set[str]:
    """The alexnet_core modules a module imports anywhere: at the top, inside functions, under TYPE_CHECKING,
    as ``from . import x``, ``from .x import y`` or ``import alexnet_core.x``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            package = node.level == 1 or (node.level == 0 and (node.module or "").split(".")[0] == "alexnet_core")
            if not package:
                continue
            module = (node.module or "") if node.level == 1 else (node.module or "").partition(".")[2]
            if module:
                found.add(module.split(".")[0])
            else:   # from . import data, memory / from alexnet_core import data
                found.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith("alexnet_core.") and alias.name.count(".") >= 1)
    return found & set(MODULES)


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, tree in MODULES.items():
        # A string annotation can only name what is imported (under TYPE_CHECKING, say), and those imports
        # are walked: the type-only edges are in the graph.
        graph[name] = _imported_modules(tree) - {name, "__init__", "__main__"}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == "open":
                return path[path.index(child):] + [child]
            if child not in state and (found := visit(child)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def _functions(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node, node.end_lineno - node.lineno + 1


def test_the_import_graph_is_read_whole():
    """The graph the cycle check walks is the real one: known edges, type-only ones among them, are found."""
    graph = _graph()
    assert {"config", "events", "optim", "checkpoints", "data", "transforms"} <= graph["train"]
    assert "transforms" in graph["data"] and "images" in graph["data"]
    assert "geometry" in graph["summary"] and "geometry" in graph["checkpoints"]
    assert "config" in graph["cli"]          # cli imports TrainConfig under TYPE_CHECKING and in functions


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_the_library_modules():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_train_reads_in_one_sitting():
    train = next(node for node, _ in _functions(MODULES["train"]) if node.name == "train")
    lines = train.end_lineno - train.lineno + 1
    assert lines <= MAX_TRAIN_LINES, f"train() is {lines} lines; keep it at most {MAX_TRAIN_LINES}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_is_too_long(module):
    long = [f"{node.name} ({lines} lines)" for node, lines in _functions(MODULES[module]) if lines > MAX_FUNCTION_LINES]
    assert not long, f"alexnet_core/{module}.py: {', '.join(long)} over {MAX_FUNCTION_LINES} lines"


def test_the_library_never_imports_gradio():
    for name, tree in MODULES.items():
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert not any(n.split(".")[0] in ("gradio", "gradio_client") for n in names), \
                f"alexnet_core/{name}.py imports gradio"
