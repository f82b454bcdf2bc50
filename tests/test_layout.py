"""The package's layering, read from the source: no two modules import each other in a loop, no module imports from
a layer above its own, and only ``fedpse.federation`` talks to Flower and Ray.

Layers, bottom to top (a module may import from its own layer or any layer below):

    0  fedpse (the package root), config, paths, audio
    1  world, models, results
    2  distill
    3  federation
    4  cli
    (simulations/ and benchmarks/ sit on top of all of it; fedpse never imports them)

Every ``import`` counts, also inside functions: a deferred import still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fedpse

PACKAGE_ROOT = Path(fedpse.__file__).resolve().parent
LAYERS = {
    "fedpse": 0,
    "fedpse.config": 0,
    "fedpse.paths": 0,
    "fedpse.audio": 0,
    "fedpse.world": 1,
    "fedpse.models": 1,
    "fedpse.results": 1,
    "fedpse.distill": 2,
    "fedpse.federation": 3,
    "fedpse.cli": 4,
}
STUDIES = ("simulations", "benchmarks")  # above the package: fedpse never imports them
FLOWER_AND_RAY = ("flwr", "ray")
ONLY_FLOWER_AND_RAY_USER = "fedpse.federation"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


def imported_names(path: Path, name: str, modules: dict[str, Path]) -> list[str]:
    """Every module ``path`` imports, relative imports resolved; ``from a import b`` is ``a.b`` when that is a
    module of fedpse, else ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            out += [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    return out


def import_graph() -> dict[str, set[str]]:
    """fedpse module -> the fedpse modules it imports."""
    modules = package_modules()
    return {
        name: {n for n in imported_names(path, name, modules) if n in modules and n != name}
        for name, path in modules.items()
    }


def layer(name: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{name}: in no layer; add it to LAYERS in {__file__}")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One loop (as a path a -> b -> ... -> a) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [loop_in(graph, group) for group in groups]


def loop_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest loop through the first module of ``group`` (breadth-first inside the group)."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return sorted(group)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a in sorted(graph)
        for b in sorted(graph[a])
        if layer(b) > layer(a)
    ]


def test_no_module_of_fedpse_is_in_an_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(loop) for loop in found)


def test_no_module_imports_from_a_higher_layer():
    assert not upward_imports(import_graph())


def test_fedpse_never_imports_the_studies():
    offenders = [
        f"{name} imports {n}"
        for name, path in package_modules().items()
        for n in imported_names(path, name, {})
        if n.split(".")[0] in STUDIES
    ]
    assert not offenders


def test_only_the_federation_package_imports_flower_and_ray():
    offenders = [
        f"{name} imports {n}"
        for name, path in package_modules().items()
        if not (name == ONLY_FLOWER_AND_RAY_USER or name.startswith(ONLY_FLOWER_AND_RAY_USER + "."))
        for n in imported_names(path, name, {})
        if n.split(".")[0] in FLOWER_AND_RAY
    ]
    assert not offenders


def test_the_checks_see_a_loop_and_an_arrow_up():
    graph = {"fedpse.config": {"fedpse.world.noise"}, "fedpse.world.noise": {"fedpse.config"}}
    assert cycles(graph) == [["fedpse.config", "fedpse.world.noise", "fedpse.config"]]
    assert upward_imports(graph) == ["fedpse.config (layer 0) imports fedpse.world.noise (layer 1)"]


# ---------------------------------------------------------------------------------------------- the documented map
ARCHITECTURE = PACKAGE_ROOT.parent / "docs" / "architecture.md"


def documented_paths() -> set[str]:
    """Paths named in the tree of docs/architecture.md ("Where things live"), relative to the repository."""
    block = ARCHITECTURE.read_text().split("## Where things live", 1)[1].split("```")[1]
    stack: list[tuple[int, str]] = []
    paths = set()
    for line in block.splitlines()[1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        names = [n.strip() for n in line.strip().split("  ")[0].split(",")]
        if not all(n.endswith((".py", "/", ".yaml")) and " " not in n for n in names):
            continue  # a description continued on its own line
        while stack and stack[-1][0] >= indent:
            stack.pop()
        prefix = "/".join(d for _, d in stack)
        paths |= {f"{prefix}/{n}".strip("/").rstrip("/") for n in names}
        if len(names) == 1 and names[0].endswith("/"):
            stack.append((indent, names[0].rstrip("/")))
    return paths


def test_the_architecture_page_lists_every_module_and_only_modules_that_exist():
    documented = documented_paths()
    repo = PACKAGE_ROOT.parent
    missing_files = sorted(p for p in documented if not (repo / p).exists())
    assert not missing_files, f"docs/architecture.md names what does not exist: {missing_files}"
    # a folder listed without children ("one file per family") covers its modules
    folders = {
        p for p in documented if (repo / p).is_dir() and not any(q.startswith(p + "/") for q in documented)
    }
    modules = {
        path.relative_to(repo).as_posix() for path in PACKAGE_ROOT.rglob("*.py") if path.name != "__init__.py"
    }
    unlisted = sorted(
        m for m in modules if m not in documented and not any(m.startswith(f + "/") for f in folders)
    )
    assert not unlisted, f"modules missing from docs/architecture.md's tree: {unlisted}"
