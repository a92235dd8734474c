"""Layers that point one way: no import cycles, nothing imports upward.

The import graph of every module under ``src/fedpeft`` is built statically (``ast``
over each file; nothing is imported). An edge ``a -> b`` means module ``a``
imports module ``b``:

* ``import fedpeft.x.y`` and ``from fedpeft.x import y`` (``y`` a submodule) point
  at ``fedpeft.x.y``; ``from fedpeft.x import name`` (``name`` not a submodule)
  points at the package ``fedpeft.x`` (its ``__init__``); relative imports are
  resolved against the importing module.
* Imports inside functions count (they run when the function is called).
* Imports under ``if TYPE_CHECKING:`` never run. They count for the layer rules
  (a type in a signature is still a dependency on that layer) but not for the
  cycle check (they cannot leave a module half initialised, and a type-only
  back reference, e.g. a config naming the class it builds, is allowed).
* Dynamic imports (``importlib.import_module`` in ``data/partition/__init__``
  and ``peft/__init__``, the registry's ``"module:attr"`` entries) are not
  seen; they only load a package's own children or registered plug-ins.
* Importing ``fedpeft.x.y`` also runs ``fedpeft/x/__init__``; that implicit
  parent import is not an edge, so a package ``__init__`` re-exporting its
  children is not a cycle. A child importing its package back
  (``from fedpeft.client import x`` inside ``fedpeft/client/local.py`` while
  ``client/__init__`` imports ``local``) is an explicit edge, and a cycle.

Layers, lowest first (:data:`LAYERS`); a module may import its own layer or a
lower one:

0. ``math``: shared types and pure functions over plain arrays (``types``,
   ``messages``, ``registry``, ``wire``, ``seeding``, ``metrics``,
   ``aggregation``, ``data.partition``, the SecAgg number theory).
1. ``components``: the parts a run is assembled from (models, adapters,
   clients, strategies, server algorithms, privacy, SecAgg protocol, data,
   devices, the experiment, run directories, reports, baselines) and
   ``config`` (with ``config_sections``, ``config_privacy`` and
   ``config_threats``, the sections it composes). ``config`` is the schema of
   a whole run: it composes each component's own section (``peft.config``,
   ``data.partition.config``) and is read by components (``client``,
   ``models.device``, ``devices.plan``), so it sits in the components layer;
   no math module may read it.
2. ``runtimes``: what drives rounds and talks to the user (``engine``, the
   CLI, the remote runtime and node worker, the Flower apps). The message
   format of remote clients and their secure sums (``remote.envelope``,
   ``remote.secure_sum`` with its wire names ``remote.secure_wire`` and its
   stages run ahead ``remote.secure_ahead``) are components.

In addition baselines and reports never import the engine, and the shared type
aliases of :mod:`fedpeft.types` are defined there only and imported from there.
"""

from __future__ import annotations

import ast
import itertools
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "fedpeft"

MATH, COMPONENTS, RUNTIMES = 0, 1, 2
LAYER_NAMES = {MATH: "math", COMPONENTS: "components", RUNTIMES: "runtimes"}

LAYERS: Mapping[str, int] = {
    # the package root only re-exports fedpeft.types
    "fedpeft": MATH,
    "fedpeft.types": MATH,
    "fedpeft.messages": MATH,
    "fedpeft.registry": MATH,
    "fedpeft.wire": MATH,
    "fedpeft.seeding": MATH,
    "fedpeft.metrics": MATH,
    "fedpeft.aggregation": MATH,
    "fedpeft.data.partition": MATH,
    "fedpeft.secagg.graph": MATH,
    "fedpeft.secagg.prg": MATH,
    "fedpeft.secagg.quantize": MATH,
    "fedpeft.secagg.shamir": MATH,
    "fedpeft.config": COMPONENTS,
    "fedpeft.config_privacy": COMPONENTS,
    "fedpeft.config_threats": COMPONENTS,
    "fedpeft.config_sections": COMPONENTS,
    "fedpeft.models": COMPONENTS,
    "fedpeft.peft": COMPONENTS,
    "fedpeft.client": COMPONENTS,
    # gradient-free client and server algorithms behind a model service
    "fedpeft.blackbox": COMPONENTS,
    # FedSP: the auxiliary model, its distillation, server step and model stage
    "fedpeft.fedsp": COMPONENTS,
    "fedpeft.strategies": COMPONENTS,
    # server algorithms: what the server computes each round, over messages
    "fedpeft.server": COMPONENTS,
    "fedpeft.privacy": COMPONENTS,
    "fedpeft.secagg": COMPONENTS,
    "fedpeft.data": COMPONENTS,
    "fedpeft.devices": COMPONENTS,
    "fedpeft.experiment": COMPONENTS,
    "fedpeft.rundir": COMPONENTS,
    "fedpeft.reporting": COMPONENTS,
    "fedpeft.baselines": COMPONENTS,
    "fedpeft.engine": RUNTIMES,
    "fedpeft.cli": RUNTIMES,
    "fedpeft.cli_console": RUNTIMES,
    "fedpeft.cli_inspect": RUNTIMES,
    "fedpeft.cli_privacy": RUNTIMES,
    "fedpeft.cli_results": RUNTIMES,
    "fedpeft.flower": RUNTIMES,
    "fedpeft.cli_flower": RUNTIMES,
    "fedpeft.remote": RUNTIMES,
    "fedpeft.remote.envelope": COMPONENTS,
    "fedpeft.remote.secure_sum": COMPONENTS,
    "fedpeft.remote.secure_wire": COMPONENTS,
    "fedpeft.remote.secure_ahead": COMPONENTS,
}
"""Layer of each module; an entry covers the module and everything below it
(the most specific entry wins; ``fedpeft`` covers only the root ``__init__``)."""

FORBIDDEN: tuple[tuple[str, str], ...] = (
    ("fedpeft.baselines", "fedpeft.engine"),
    ("fedpeft.reporting", "fedpeft.engine"),
)
"""(importer, imported) subtrees that must never meet, whatever the layers."""

SHARED_ALIASES = ("FloatArray", "Float64Array", "Params", "ParamsLike")
"""Type aliases of :mod:`fedpeft.types` that no other module may define."""


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` imports ``target`` at ``line`` of ``source``."""

    source: str
    target: str
    line: int
    type_only: bool

    def where(self) -> str:
        kind = " (TYPE_CHECKING)" if self.type_only else ""
        return f"{self.source}:{self.line} imports {self.target}{kind}"


def module_files(src: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package __init__)}`` of every module."""
    modules: dict[str, tuple[Path, bool]] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = (path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imports(
    nodes: Iterable[ast.AST], type_only: bool = False
) -> Iterator[tuple[ast.stmt, bool]]:
    """Every import statement under ``nodes`` (functions included), and whether
    it sits under ``if TYPE_CHECKING:``."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, type_only
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.body, True)
            yield from _imports(node.orelse, type_only)
        else:
            yield from _imports(ast.iter_child_nodes(node), type_only)


def _existing(name: str, modules: Mapping[str, object]) -> str | None:
    """``name`` or its closest enclosing module that has a file."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in modules else None


def _absolute(node: ast.ImportFrom, source: str, is_package: bool) -> str:
    """The absolute module name ``from ... import`` reads from."""
    if not node.level:
        return node.module or ""
    anchor = source.split(".") if is_package else source.split(".")[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, *([node.module] if node.module else [])])


def resolve(
    node: ast.stmt,
    source: str,
    is_package: bool,
    modules: Mapping[str, object],
    package: str,
) -> list[str]:
    """The package's modules that one import statement loads explicitly."""
    found: list[str | None] = []
    if isinstance(node, ast.Import):
        found = [
            _existing(alias.name, modules)
            for alias in node.names
            if alias.name.split(".")[0] == package
        ]
    elif isinstance(node, ast.ImportFrom):
        base = _absolute(node, source, is_package)
        if base.split(".")[0] == package:
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.append(child if child in modules else _existing(base, modules))
    return sorted({t for t in found if t is not None and t != source})


def import_graph(src: Path = SRC, package: str = PACKAGE) -> list[Edge]:
    """Every import between the package's modules, in file and line order."""
    modules = module_files(src, package)
    edges: list[Edge] = []
    for source, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, type_only in _imports(tree.body):
            for target in resolve(node, source, is_package, modules, package):
                edges.append(Edge(source, target, node.lineno, type_only))
    return sorted(edges, key=lambda e: (e.source, e.line, e.target))


def _strong_components(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
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
            if child is None:
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
                    components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def _shortest_cycle(start: str, graph: Mapping[str, set[str]]) -> list[str]:
    """A shortest path ``start -> ... -> start`` (breadth first)."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph.get(node, ())):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is on no cycle")


def find_cycles(edges: Iterable[Edge]) -> list[tuple[list[str], list[Edge]]]:
    """Each group of mutually importing modules and one shortest cycle in it
    (as its edges), ignoring ``TYPE_CHECKING`` imports."""
    runtime = [e for e in edges if not e.type_only]
    graph: dict[str, set[str]] = {}
    first: dict[tuple[str, str], Edge] = {}
    for edge in runtime:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
        first.setdefault((edge.source, edge.target), edge)
    cycles = []
    for component in _strong_components(graph):
        if len(component) > 1:
            members = set(component)
            inside = {m: graph[m] & members for m in component}
            path = _shortest_cycle(component[0], inside)
            cycles.append((component, [first[p] for p in itertools.pairwise(path)]))
    return cycles


def layer_of(module: str, layers: Mapping[str, int] = LAYERS) -> int | None:
    """The layer of the most specific :data:`LAYERS` entry covering ``module``."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in layers and (end > 1 or len(parts) == 1):
            return layers[prefix]
    return None


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_violations(
    edges: Iterable[Edge], layers: Mapping[str, int] = LAYERS
) -> list[str]:
    """Each import of a module in a higher layer than the importer's."""
    found = []
    for edge in edges:
        source, target = layer_of(edge.source, layers), layer_of(edge.target, layers)
        if source is not None and target is not None and target > source:
            found.append(
                f"{edge.where()}: {LAYER_NAMES[source]} -> {LAYER_NAMES[target]}"
            )
    return found


def forbidden_imports(edges: Iterable[Edge]) -> list[str]:
    """Each import matching a :data:`FORBIDDEN` pair."""
    return [
        f"{edge.where()}: {importer} never imports {imported}"
        for edge in edges
        for importer, imported in FORBIDDEN
        if _under(edge.source, importer) and _under(edge.target, imported)
    ]


def alias_definitions(src: Path = SRC, package: str = PACKAGE) -> list[str]:
    """Module-level definitions of :data:`SHARED_ALIASES` outside
    ``fedpeft.types``."""
    found = []
    for module, (path, _) in module_files(src, package).items():
        if module == f"{package}.types":
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            found += [
                f"{module}:{node.lineno} defines {t.id}"
                for t in targets
                if isinstance(t, ast.Name) and t.id in SHARED_ALIASES
            ]
    return found


def alias_imports(src: Path = SRC, package: str = PACKAGE) -> list[str]:
    """Imports of :data:`SHARED_ALIASES` from a module other than
    ``fedpeft.types`` (a re-export that should go)."""
    found = []
    home = f"{package}.types"
    for module, (path, is_package) in module_files(src, package).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node, _type_only in _imports(tree.body):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = _absolute(node, module, is_package)
            found += [
                f"{module}:{node.lineno} imports {alias.name} from {base}"
                for alias in node.names
                if alias.name in SHARED_ALIASES and base != home
            ]
    return found


def _report(title: str, lines: list[str]) -> str:
    """Print ``lines`` under ``title`` (shown by pytest on failure) and return
    them as one assertion message."""
    text = f"{title} ({len(lines)}):\n  " + "\n  ".join(lines)
    print(text)
    return text


# -- the checker on small synthetic packages ----------------------------------


def _write(src: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return src


def test_graph_resolves_submodules_relative_and_lazy_imports(tmp_path: Path) -> None:
    src = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a/__init__.py": "from pkg.a import b\nfrom pkg.a.b import thing\n",
            "pkg/a/b.py": "from . import c\nfrom ..d import x\n",
            "pkg/a/c.py": "def f():\n    import pkg.d.e as e\n",
            "pkg/d/__init__.py": "x = 1\n",
            "pkg/d/e.py": "import os\nfrom typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from pkg.a import c\n",
        },
    )
    edges = {(e.source, e.target, e.type_only) for e in import_graph(src, "pkg")}
    assert edges == {
        ("pkg.a", "pkg.a.b", False),
        ("pkg.a.b", "pkg.a.c", False),
        ("pkg.a.b", "pkg.d", False),
        ("pkg.a.c", "pkg.d.e", False),
        ("pkg.d.e", "pkg.a.c", True),
    }


def test_a_child_importing_its_package_back_is_a_cycle(tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": "",
        "pkg/client/__init__.py": "from pkg.client.local import run\n",
        "pkg/client/local.py": "def run():\n    from pkg.client import other\n",
        "pkg/client/other.py": "",
    }
    # ``other`` is a submodule: a re-export by the package, not a cycle
    assert find_cycles(import_graph(_write(tmp_path / "ok", files), "pkg")) == []

    files["pkg/client/local.py"] = "def run():\n    from pkg.client import VALUE\n"
    cycles = find_cycles(import_graph(_write(tmp_path / "bad", files), "pkg"))
    assert [(group, [(e.source, e.target) for e in c]) for group, c in cycles] == [
        (
            ["pkg.client", "pkg.client.local"],
            [("pkg.client", "pkg.client.local"), ("pkg.client.local", "pkg.client")],
        )
    ]


def test_type_checking_imports_count_for_layers_not_cycles(tmp_path: Path) -> None:
    src = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from pkg.high import H\n",
            "pkg/high.py": "from pkg.low import L\n",
        },
    )
    edges = import_graph(src, "pkg")
    assert find_cycles(edges) == []
    layers = {"pkg.low": MATH, "pkg.high": RUNTIMES}
    assert len(layer_violations(edges, layers)) == 1


def test_aliases_are_found_where_defined_and_imported(tmp_path: Path) -> None:
    src = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/types.py": "Params = dict\nParamsLike = dict\n",
            "pkg/mean.py": "from pkg.types import Params\nParamsLike: type = dict\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/use.py": "from ..mean import ParamsLike\n",
        },
    )
    assert alias_definitions(src, "pkg") == ["pkg.mean:2 defines ParamsLike"]
    assert alias_imports(src, "pkg") == [
        "pkg.sub.use:1 imports ParamsLike from pkg.mean"
    ]


def test_layer_of_takes_the_most_specific_entry() -> None:
    assert layer_of("fedpeft") == MATH
    assert layer_of("fedpeft.secagg.prg") == MATH
    assert layer_of("fedpeft.secagg.server") == COMPONENTS
    assert layer_of("fedpeft.engine.loop") == RUNTIMES
    assert layer_of("fedpeft.unknown") is None


# -- the real package ---------------------------------------------------------


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_graph()


def test_every_module_has_a_layer(edges: list[Edge]) -> None:
    unplaced = [m for m in module_files(SRC, PACKAGE) if layer_of(m) is None]
    assert not unplaced, _report("modules missing from LAYERS", unplaced)


def test_no_import_cycles(edges: list[Edge]) -> None:
    cycles = [
        " -> ".join([*(f"{e.source}:{e.line}" for e in cycle), cycle[0].source])
        + f"  [group: {', '.join(group)}]"
        for group, cycle in find_cycles(edges)
    ]
    assert not cycles, _report("import cycles (each: a shortest cycle)", cycles)


def test_no_module_imports_a_higher_layer(edges: list[Edge]) -> None:
    violations = layer_violations(edges)
    assert not violations, _report("imports that point upward", violations)


def test_baselines_and_reporting_never_import_the_engine(edges: list[Edge]) -> None:
    found = forbidden_imports(edges)
    assert not found, _report("imports of the engine", found)


def test_shared_type_aliases_are_defined_in_types_only() -> None:
    found = alias_definitions()
    assert not found, _report(
        "shared aliases defined outside fedpeft.types (import them from there)",
        found,
    )


def test_shared_type_aliases_are_imported_from_types() -> None:
    found = alias_imports()
    assert not found, _report(
        "shared aliases imported from elsewhere (import them from fedpeft.types)",
        found,
    )
