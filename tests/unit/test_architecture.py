"""The code's shape, read from its source with ast (nothing is imported): no import cycle among the modules of
the library or of the app's ui/ package (imports made only for type checking count too), a training loop that
reads in one sitting, no function too long to follow, no gradio anywhere in alexnet_core, and tabs that only
share what ui/'s shared modules hold (docs/architecture.md)."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _parse(package: str) -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in (REPO / package).glob("*.py")}


MODULES = _parse("alexnet_core")
UI_MODULES = _parse("ui")
PACKAGES = {"alexnet_core": MODULES, "ui": UI_MODULES}
# What the tabs of ui/ share; a tab module imports only these, never another tab.
UI_SHARED = {"settings", "visitors", "choices", "photos", "fields", "messages", "room"}
MAX_MODULE_LINES = 400  # a module of ui/ (and gradio_app.py) reads in one sitting
MAX_TRAIN_LINES = 100
MAX_FUNCTION_LINES = 150


def _imported_modules(tree: ast.Module, package: str = "alexnet_core") -> set[str]:
    """The modules of ``package`` a module of it imports anywhere: at the top, inside functions, under
    TYPE_CHECKING, as ``from . import x``, ``from .x import y`` or ``import alexnet_core.x``."""
    modules = PACKAGES[package]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            inside = node.level == 1 or (node.level == 0 and (node.module or "").split(".")[0] == package)
            if not inside:
                continue
            module = (node.module or "") if node.level == 1 else (node.module or "").partition(".")[2]
            if module:
                found.add(module.split(".")[0])
            else:   # from . import data, memory / from alexnet_core import data
                found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith(package + ".") and alias.name.count(".") >= 1)
    return found & set(modules)


def _graph(package: str = "alexnet_core") -> dict[str, set[str]]:
    graph = {}
    for name, tree in PACKAGES[package].items():
        # A string annotation can only name what is imported (under TYPE_CHECKING, say), and those imports
        # are walked: the type-only edges are in the graph.
        graph[name] = _imported_modules(tree, package) - {name, "__init__", "__main__"}
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


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycle_among_the_modules(package):
    cycle = _cycle(_graph(package))
    assert cycle is None, f"import cycle in {package}: " + " → ".join(cycle or [])


def test_the_ui_graph_is_read_whole():
    graph = _graph("ui")
    assert {"choices", "photos", "visitors", "settings"} <= graph["predict"]
    assert "visitors" in graph["choices"] and "settings" in graph["visitors"]


def _tab_of(module: str, tabs: set[str]) -> str:
    """The tab a module of ui/ belongs to: a tab's own module, or a part of it named ``<tab>_<part>.py`` (the
    Train tab's form, view and live view), which only that tab imports."""
    return next((tab for tab in tabs if module.startswith(tab + "_")), module)


def test_each_tab_shares_only_what_ui_shares():
    """A tab module (and its parts) imports the shared modules of ui/, never another tab: each tab can be read,
    and changed, alone. (The page, gradio_app.py, joins the tabs.)"""
    modules = set(UI_MODULES) - UI_SHARED - {"__init__"}
    tabs = {m for m in modules if not any(m.startswith(other + "_") for other in modules if other != m)}
    assert {"architecture", "predict", "inside", "train", "evaluate", "compare"} <= tabs
    assert {"train_form", "train_view", "train_live"} <= modules - tabs
    graph = _graph("ui")
    for module in sorted(modules):
        others = {m for m in graph[module] & modules if _tab_of(m, tabs) != _tab_of(module, tabs)}
        assert not others, f"ui/{module}.py imports another tab's module: {sorted(others)}"
    for shared in sorted(UI_SHARED):
        assert not graph[shared] & modules, \
            f"ui/{shared}.py (shared) imports a tab: {sorted(graph[shared] & modules)}"


@pytest.mark.parametrize("path", ["gradio_app.py", *sorted(f"ui/{name}.py" for name in UI_MODULES)])
def test_each_part_of_the_app_reads_in_one_sitting(path):
    lines = len((REPO / path).read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path} is {lines} lines; split it (at most {MAX_MODULE_LINES})"


def test_train_reads_in_one_sitting():
    train = next(node for node, _ in _functions(MODULES["train"]) if node.name == "train")
    lines = train.end_lineno - train.lineno + 1
    assert lines <= MAX_TRAIN_LINES, f"train() is {lines} lines; keep it at most {MAX_TRAIN_LINES}"


@pytest.mark.parametrize("path", [*(f"alexnet_core/{m}.py" for m in sorted(MODULES)),
                                  *(f"ui/{m}.py" for m in sorted(UI_MODULES)), "gradio_app.py"])
def test_no_function_is_too_long(path):
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    long = [f"{node.name} ({lines} lines)" for node, lines in _functions(tree) if lines > MAX_FUNCTION_LINES]
    assert not long, f"{path}: {', '.join(long)} over {MAX_FUNCTION_LINES} lines"


def test_the_library_never_imports_gradio_or_the_app():
    for name, tree in MODULES.items():
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert not any(n.split(".")[0] in ("gradio", "gradio_client", "ui", "gradio_app") for n in names), \
                f"alexnet_core/{name}.py imports gradio or the app"
