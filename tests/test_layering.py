"""The house stays a straight line (STYLE.md, "Floors and sizes"): every module of mininsnn sits on
one floor, imports only from its own floor or the floors below, never in a circle, and nothing
in the library imports a command.

The imports are read with ``ast`` from the source files: module-level and function-level ones,
absolute and relative. Importing ``a.b.c`` runs ``a/b/__init__.py`` first, so it also counts as
importing the package ``a.b`` (except from a module inside ``a.b``, which Python imports after
its package's __init__ has started).
"""
from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mininsnn"

#: The floors, bottom up, in the order a reader should learn them. A module may import from its
#: own floor and the floors below. Names may end in ``.*`` (every module of a package folder
#: that is one floor). Some names are of modules that may not exist yet; only existing modules
#: are checked, but every existing module must be listed.
FLOORS = [
    ("foundations: the package, the JIT switch, atomic files, progress, validation rules",
     ["mininsnn", "mininsnn._jit", "mininsnn.atomic", "mininsnn.progress", "mininsnn.rules"]),
    ("kernels: the maths, each forward next to its backward",
     ["mininsnn.kernels", "mininsnn.kernels.*", "mininsnn.surrogate", "mininsnn.quant"]),
    ("the settings table: every default and rule",
     ["mininsnn.config"]),
    ("layers and neurons",
     ["mininsnn.layer_base", "mininsnn.fusion", "mininsnn.layers", "mininsnn.neurons",
      "mininsnn.recurrent"]),
    ("network: layers run over a sequence, the paper's models, networks described as data",
     ["mininsnn.network", "mininsnn.models", "mininsnn.spec", "mininsnn.specwriter"]),
    ("training: loss, optimiser, schedule, data, checkpoints, run folders, the trainer",
     ["mininsnn.loss", "mininsnn.optim", "mininsnn.schedule", "mininsnn.idx", "mininsnn.data",
      "mininsnn.aedat", "mininsnn.dvs",
      "mininsnn.checkpoint", "mininsnn.runfiles", "mininsnn.runs", "mininsnn.train"]),
    ("deploy: integer engines and converters, pretrained models, model sources, NIR",
     ["mininsnn.deploy", "mininsnn.deploy.*", "mininsnn.pretrained", "mininsnn.sources",
      "mininsnn.nir_graph", "mininsnn.nir_read", "mininsnn.nir"]),
    ("studies, reports and plots of runs",
     ["mininsnn.searchspace", "mininsnn.studystore", "mininsnn.tune", "mininsnn.plot",
      "mininsnn.report"]),
    ("commands: the command line and one module per verb",
     ["mininsnn.commands", "mininsnn.commands.*", "mininsnn.cli"]),
]


def modules_of(package: Path) -> dict[str, tuple[Path, bool]]:
    """{dotted name: (file, is a package)} of every module under ``package``."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_package)
    return out


def _targets(node, name: str, is_package: bool, known) -> list[str]:
    """The dotted names an import statement in module ``name`` refers to."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:                                    # from . import x, from ..a import b
        base = (name if is_package else name.rpartition(".")[0]).split(".")
        base = base[:len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module
    # `from p import x`: x is a module of p, or a name defined in p
    return [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module
            for a in node.names]


def import_graph(package: Path) -> dict[str, set[str]]:
    """{module: the modules of the package it imports}, at module level or inside functions."""
    known = modules_of(package)
    root = package.name
    graph = {}
    for name, (path, is_package) in known.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(node, name, is_package, known):
                if target.split(".")[0] != root:
                    continue
                while target not in known:            # a name inside a module
                    target = target.rpartition(".")[0]
                deps.add(target)
                parent = target.rpartition(".")[0]
                while parent and parent != root:      # its packages' __init__ run first
                    if not (name == parent or name.startswith(parent + ".")):
                        deps.add(parent)
                    parent = parent.rpartition(".")[0]
        deps.discard(name)
        graph[name] = deps
    return graph


def floor_of(module: str, floors) -> int | None:
    for i, (_, names) in enumerate(floors):
        if any(fnmatch.fnmatchcase(module, n) for n in names):
            return i
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def check(package: Path, floors) -> dict[str, list]:
    """What breaks the floors: unplaced modules, upward imports, circles, library -> command."""
    graph = import_graph(package)
    floor = {m: floor_of(m, floors) for m in graph}
    top = len(floors) - 1
    return {
        "unplaced": sorted(m for m, f in floor.items() if f is None),
        "upward": sorted(f"{a} (floor {floor[a]}) imports {b} (floor {floor[b]})"
                         for a, deps in graph.items() for b in deps
                         if None not in (floor[a], floor[b]) and floor[b] > floor[a]),
        "cycles": cycles(graph),
        "commands": sorted(f"{a} imports {b}" for a, deps in graph.items() for b in deps
                           if floor[b] == top and floor[a] != top),
    }


# ---------------------------------------------------------------------------------------------
# the package itself

@pytest.fixture(scope="module")
def found():
    return check(PACKAGE, FLOORS)


def test_every_module_has_a_floor(found):
    assert found["unplaced"] == [], "place these modules on a floor in FLOORS"


def test_no_import_circle(found):
    assert found["cycles"] == []


def test_no_import_climbs_a_floor(found):
    assert found["upward"] == []


def test_the_library_imports_no_command(found):
    assert found["commands"] == []


# ---------------------------------------------------------------------------------------------
# the checker, on a tiny package with planted faults

def _fake_package(tmp_path: Path) -> Path:
    pkg = tmp_path / "fake"
    files = {
        "__init__.py": "",
        "low.py": "def f():\n    from .high import g      # planted: climbs\n    return g\n",
        "high.py": "from fake import low\n\ndef g():\n    return low\n",
        "a.py": "import fake.b\n",                            # planted: a <-> b
        "b.py": "def h():\n    from fake.a import x\n",
        "sub/__init__.py": "from . import leaf\n",
        "sub/leaf.py": "from .. import low\n",
        "lost.py": "",                                        # planted: on no floor
        "cmd/__init__.py": "",
        "cmd/run.py": "from fake.sub.leaf import low\n",
        "user.py": "from fake.cmd import run\n",               # planted: library -> command
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    return pkg


FAKE_FLOORS = [("bottom", ["fake", "fake.low", "fake.sub", "fake.sub.*"]),
               ("middle", ["fake.high", "fake.a", "fake.b", "fake.user"]),
               ("commands", ["fake.cmd", "fake.cmd.*"])]


def test_the_checker_reads_every_kind_of_import(tmp_path):
    graph = import_graph(_fake_package(tmp_path))
    assert graph["fake.low"] == {"fake.high"}                 # relative, inside a function
    assert graph["fake.high"] == {"fake.low"}                 # from package import module
    assert graph["fake.a"] == {"fake.b"}                      # import a.b
    assert graph["fake.b"] == {"fake.a"}                      # a name of a module
    assert graph["fake.sub"] == {"fake.sub.leaf"}             # from . import module
    assert graph["fake.sub.leaf"] == {"fake.low"}             # from .. import module
    assert graph["fake.cmd.run"] == {"fake.sub", "fake.sub.leaf"}     # with its package


def test_the_checker_finds_each_planted_fault(tmp_path):
    found = check(_fake_package(tmp_path), FAKE_FLOORS)
    assert found["unplaced"] == ["fake.lost"]
    assert found["upward"] == ["fake.low (floor 0) imports fake.high (floor 1)",
                               "fake.user (floor 1) imports fake.cmd (floor 2)",
                               "fake.user (floor 1) imports fake.cmd.run (floor 2)"]
    assert sorted(found["cycles"]) == [["fake.a", "fake.b"], ["fake.high", "fake.low"]]
    assert found["commands"] == ["fake.user imports fake.cmd", "fake.user imports fake.cmd.run"]


def test_a_clean_package_passes(tmp_path):
    pkg = _fake_package(tmp_path)
    for name in ("lost.py", "user.py", "a.py", "b.py"):
        (pkg / name).unlink()
    (pkg / "low.py").write_text("X = 1\n")
    assert check(pkg, FAKE_FLOORS) == {"unplaced": [], "upward": [], "cycles": [],
                                       "commands": []}
