"""The import graph of ``r3dp_core``, read from the source with ``ast``: no import loops, nothing in the product
leaning on the parity harness, and no ComfyUI anywhere in the core.

Every import counts, at module level and inside functions (a lazy import is still a dependency; it only hides a loop
until the day the two modules are imported in the other order), with relative imports resolved. Importing
``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` too, so an import also depends on the packages above the module
it names (those that do not hold the importer: a package's own modules import its ``__init__`` freely). Imports
under ``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
import warnings
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "r3dp_core"
PARITY = f"{PACKAGE}.parity"
COMFYUI_MODULES = ("comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "execution", "nodes")

#: Import edges (importer, imported) still being removed by someone else's change, ignored by the loop and layer
#: checks. Each entry names the loop it closes and who removes it; once that change lands the entry is stale (a
#: warning names it) and goes.
PENDING_BACK_EDGES: dict[tuple[str, str], str] = {}


def module_files() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name → (file, is a package ``__init__``)."""
    modules = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _type_checking_only(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(tree: ast.AST, package: str) -> list[str]:
    """The absolute dotted names ``tree`` imports (``from x import y`` gives ``x.y``: a submodule or a name in
    ``x``), relative imports resolved against ``package``; ``if TYPE_CHECKING:`` blocks skipped."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.append(source)
            names.extend(f"{source}.{alias.name}" for alias in node.names if alias.name != "*")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports (see the module docstring)."""
    modules = module_files()
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        targets: set[str] = set()
        for imported in imported_names(ast.parse(path.read_text(), str(path)), package):
            if imported != PACKAGE and not imported.startswith(PACKAGE + "."):
                continue
            # ``from x import y``: y is a module when x.y is one; otherwise a name defined in x
            while imported not in modules:
                imported = imported.rpartition(".")[0]
            parts = imported.split(".")
            targets.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1))
                           if p in modules and p not in own_packages)
        targets.discard(name)
        graph[name] = targets
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One shortest loop through the component's first module, as ``[a, b, ..., a]``."""
    start, members = component[0], set(component)
    previous = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & members):
            if child == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{component} is not strongly connected")


def test_the_graph_reader_sees_every_kind_of_import():
    tree = ast.parse("import r3dp_core.a.b\nfrom .c import d\nfrom .. import e\n"
                     "def f():\n    from ..g.h import i\n"
                     "if TYPE_CHECKING:\n    from .typing_only import t\nelse:\n    from .runtime import r\n")
    assert imported_names(tree, "r3dp_core.x.y") == [
        "r3dp_core.a.b", "r3dp_core.x.y.c", "r3dp_core.x.y.c.d", "r3dp_core.x", "r3dp_core.x.e",
        "r3dp_core.x.g.h", "r3dp_core.x.g.h.i", "r3dp_core.x.y.runtime", "r3dp_core.x.y.runtime.r"]
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}}
    assert strongly_connected(graph) == [["a", "b", "c"], ["e", "e2"]]
    assert shortest_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    # the real graph holds lazy imports and packages run by their modules' imports
    real = import_graph()
    assert "r3dp_core.pipeline.generate" in real["r3dp_core.pipeline.selftest"]        # inside a function
    assert "r3dp_core.talk3d" in real["r3dp_core.parity.stage_t3d_tokens"]              # talk3d/__init__ runs


def test_no_import_loops():
    graph = import_graph()
    stale = [f"{a} -> {b} ({why})" for (a, b), why in PENDING_BACK_EDGES.items() if b not in graph.get(a, ())]
    if stale:
        warnings.warn("import edges allowed while their loop was being removed are gone; drop them from "
                      "PENDING_BACK_EDGES: " + "; ".join(stale), stacklevel=1)
    pruned = {name: {t for t in targets if (name, t) not in PENDING_BACK_EDGES} for name, targets in graph.items()}
    loops = [" -> ".join(shortest_cycle(pruned, component)) for component in strongly_connected(pruned)]
    assert not loops, "import loops in r3dp_core:\n  " + "\n  ".join(loops)


#: The package's layers, lowest first: a module imports only from its own layer and those below (README, Development:
#: render/ and geometry/ know nothing of the networks, models/ uses render/, audio/ runs models/, pipeline/ sits on
#: top). The parity harness sits above everything and nothing imports it (next test).
LAYERS = (
    ("errors", "defaults"),
    ("images", "device", "inert_pickle", "checkpoint", "model_files", "video_io", "performance", "metrics",
     "host"),
    ("render", "geometry"),
    ("models",),
    ("audio", "talk3d"),
    ("model_import", "gdrive"),
    ("pipeline", "standins"),
    ("batch",),
    ("cli",),
    ("parity",),
)


def test_layers_only_lean_downward():
    rank = {area: level for level, areas in enumerate(LAYERS) for area in areas}

    def area(module: str) -> str:
        return module.split(".")[1] if "." in module else ""

    graph = import_graph()
    unplaced = sorted({area(name) for name in graph} - set(rank) - {""})
    assert not unplaced, f"place these in LAYERS: {unplaced}"
    upward = sorted(f"{name} imports {target}" for name, targets in graph.items() for target in targets
                    if area(target) and rank[area(target)] > rank[area(name)]
                    and (name, target) not in PENDING_BACK_EDGES)
    assert not upward, "imports that lean upward:\n  " + "\n  ".join(upward)


def test_only_the_parity_harness_imports_itself():
    leaning = sorted(f"{name} imports {target}" for name, targets in import_graph().items()
                     if not name.startswith(PARITY) for target in targets
                     if target == PARITY or target.startswith(PARITY + "."))
    assert not leaning, "the product imports the parity harness:\n  " + "\n  ".join(leaning)


def test_the_core_never_imports_comfyui():
    found = []
    for name, (path, is_package) in module_files().items():
        package = name if is_package else name.rpartition(".")[0]
        for imported in imported_names(ast.parse(path.read_text(), str(path)), package):
            if imported.split(".")[0] in COMFYUI_MODULES:
                found.append(f"{name} imports {imported}")
    assert not found, "r3dp_core imports ComfyUI:\n  " + "\n  ".join(found)
