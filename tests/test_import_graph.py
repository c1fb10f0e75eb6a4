"""The house's layering holds: no module of llmcli/ imports itself round a circle, and its folders and top-level
modules import each other in one direction only. Every import counts, also those inside functions (the lazy
imports that keep torch off the start-up path are still dependencies), read with `ast`, never by importing.

A layer is a folder (engine/load/ and engine/ are two) or a module at the top of llmcli/ (plan.py).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import ROOT


@dataclass(frozen=True)
class Import:
    """`source` (a file, relative to the tree's root) imports module `target` at `line`."""

    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def modules_of(root: Path, package: str) -> dict[str, str]:
    """Dotted module name → its file relative to `root`, for every module of `package`."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path.relative_to(root).as_posix()
    return found


def imports_of(root: Path, package: str) -> list[Import]:
    """Every import of one module of `package` by another, wherever in the file it stands."""
    modules = modules_of(root, package)
    found = []
    for name, file in modules.items():
        is_package = file.endswith("__init__.py")
        for node in ast.walk(ast.parse((root / file).read_text(), file)):
            for target in _targets(node, name, is_package, modules):
                if target != name:
                    found.append(Import(file, target, node.lineno))
    return found


def _targets(node: ast.AST, module: str, is_package: bool, modules: dict[str, str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [_owner(alias.name, modules) for alias in node.names if _owner(alias.name, modules)]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the module's own package, one level up per extra dot
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    # `from pkg import mod` depends on pkg.mod where that is a module, else on pkg itself
    named = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
    if named and len(named) == len(node.names):
        return named
    owner = _owner(base, modules)
    return [*named, owner] if owner else named


def _owner(name: str, modules: dict[str, str]) -> str | None:
    """The module of `package` that `name` names (or lies in); None outside the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def layer_of(file: str) -> str:
    """A module's layer: its folder, or the module itself at the top of the package."""
    parts = file.split("/")
    if len(parts) == 2:
        return file
    return "/".join(parts[:-1]) + "/"


def circles(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """One circle through each strongly connected group of nodes (Tarjan), each as its list of nodes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [_circle_in(sorted(group)[0], group, edges) for group in groups]


def _circle_in(start: str, group: set[str], edges: dict[str, dict[str, Import]]) -> list[str]:
    """The shortest way from `start` back to itself inside its group (breadth first)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(edges.get(node, {})):
                if nxt == start:
                    return paths[node]
                if nxt in group and nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    raise AssertionError(f"{start} is in no circle")


def graph(imports: list[Import], node_of) -> dict[str, dict[str, Import]]:
    """node → node it imports → the first import that makes the edge (for the message)."""
    edges: dict[str, dict[str, Import]] = defaultdict(dict)
    for imp in imports:
        a, b = node_of(imp.source), node_of(imp.target)
        if a != b:
            edges[a].setdefault(b, imp)
    return edges


def problems(root: Path, package: str) -> list[str]:
    """Each module circle and each loop of layers, named by the imports that close it."""
    modules = modules_of(root, package)
    imports = [Import(i.source, modules[i.target], i.line) for i in imports_of(root, package)]
    found = []
    for kind, node_of in (("import circle", lambda f: f), ("layers import each other", layer_of)):
        edges = graph(imports, node_of)
        for circle in circles(edges):
            steps = [edges[a][b] for a, b in zip(circle, [*circle[1:], circle[0]], strict=True)]
            found.append(f"{kind}: " + " -> ".join(str(s) for s in steps))
    return found


def test_llmcli_has_no_import_circle_and_its_layers_point_one_way():
    assert problems(ROOT, "llmcli") == []


def test_every_folder_says_what_it_is_for_and_what_it_may_import():
    for init in sorted((ROOT / "llmcli").rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc, f"{init.relative_to(ROOT)}: its docstring should say what the folder may import"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_circle_through_a_lazy_import_is_found_and_named(tmp_path):
    root = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/room/__init__.py": "",
            "pkg/room/a.py": "from pkg.room.b import x\n",
            "pkg/room/b.py": "def x():\n    from pkg.room import c\n",
            "pkg/room/c.py": "import pkg.room.a\n",
        },
    )
    [found] = problems(root, "pkg")  # one folder: a circle of modules, no loop of layers
    assert found.startswith("import circle: ")
    for step in (
        "room/a.py:1 imports pkg/room/b.py",
        "room/b.py:2 imports pkg/room/c.py",
        "c.py:1 imports pkg/room/a.py",
    ):
        assert step in found


def test_two_folders_importing_each_other_are_named_by_their_files(tmp_path):
    root = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low/__init__.py": "",
            "pkg/low/base.py": "",
            "pkg/low/reader.py": "def f():\n    from pkg.high.view import show\n",
            "pkg/high/__init__.py": "",
            "pkg/high/other.py": "from pkg.low import base\n",
            "pkg/high/view.py": "def show():\n    pass\n",
            "pkg/top.py": "from .high import view\n",
        },
    )
    assert problems(root, "pkg") == [  # no module circle, but the two folders lean on each other
        "layers import each other: pkg/high/other.py:1 imports pkg/low/base.py -> "
        "pkg/low/reader.py:2 imports pkg/high/view.py"
    ]


def test_a_loop_between_top_level_modules_is_a_loop_of_layers(tmp_path):
    root = _tree(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "import pkg.b\n", "pkg/b.py": "from pkg import a\n"})
    assert sorted(p.split(":")[0] for p in problems(root, "pkg")) == ["import circle", "layers import each other"]


def test_imports_that_point_down_are_no_problem(tmp_path):
    root = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/base.py": "",
            "pkg/mid/__init__.py": "from pkg import base\n",
            "pkg/mid/part.py": "from . import other\nfrom ..base import *\n",
            "pkg/mid/other.py": "import pkg.base\n",
            "pkg/top.py": "from pkg.mid.part import thing\n",
        },
    )
    assert problems(root, "pkg") == []
