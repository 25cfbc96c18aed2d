"""Arrows point down: the library never imports `services`, nothing imports in a circle.

The imports of every module under `libs/freshrec/` and `services/` are read with `ast` —
module level, inside functions and inside `if TYPE_CHECKING:` blocks alike, since each of
them is a dependency a reader has to follow — and checked for three things:

- no module of the library imports `services` (the processes sit above the library);
- no import cycle among those modules (each cycle is reported as a path `a -> b -> a`);
- no `__file__` in the library that reaches outside the package (the checkout, `deploy/`,
  `services/`): a file beside a module, such as `tables.yaml`, is fine.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Layout:
    """What the checker found in one tree."""

    modules: dict[str, Path] = field(default_factory=dict)
    imports: dict[str, set[str]] = field(default_factory=dict)
    upward: list[str] = field(default_factory=list)
    escapes: list[str] = field(default_factory=list)


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for `libs/freshrec/**` and `services/**`."""
    found: dict[str, Path] = {}
    for base, package in ((root / "libs", "freshrec"), (root, "services")):
        for path in sorted((base / package).rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """Every dotted name an import statement makes its module depend on."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    if node.level:
        package = module.split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, node.module] if node.module else package)
    else:
        base = node.module or ""
    yield base
    # `from package import name` depends on `package.name` when that is a module
    yield from (f"{base}.{alias.name}" for alias in node.names)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest module of the tree that `name` names (None: outside the tree)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _levels_up(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> int | None:
    """How many directories above the module's own folder a `__file__` expression climbs.

    0 is the module's folder (`Path(__file__).with_name(...)`, `Path(__file__).parent`);
    None means the expression goes somewhere this checker cannot follow, which counts as
    reaching outside.
    """
    up = -1  # the file itself; its folder is 0
    current = node
    while (parent := parents.get(current)) is not None:
        if isinstance(parent, ast.Call) and current in parent.args:
            func = parent.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in {"Path", "PurePath"}:
                current = parent
                continue
            if name == "dirname":
                up, current = up + 1, parent
                continue
            return None
        if isinstance(parent, ast.Attribute):
            if parent.attr in {"resolve", "absolute"}:
                current = parents[parent]  # the call of the method
                continue
            if parent.attr == "parent":
                up, current = up + 1, parent
                continue
            if parent.attr in {"with_name", "with_suffix"}:
                return max(up, 0)
            if parent.attr == "parents":
                index = parents.get(parent)
                if isinstance(index, ast.Subscript) and isinstance(index.slice, ast.Constant):
                    return up + 1 + int(index.slice.value)
                return None
            return None
        if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div) and up >= 0:
            right = parent.right
            if isinstance(right, ast.Constant) and ".." not in str(right.value):
                return up
            return None
        return None if up < 0 else up
    return None


def _file_uses(tree: ast.Module) -> Iterator[ast.AST]:
    for node in ast.walk(tree):
        if (isinstance(node, ast.Name) and node.id == "__file__") or (
            isinstance(node, ast.Attribute) and node.attr == "__file__"
        ):
            yield node


def check_layout(root: Path) -> Layout:
    """Read every module of `root`'s library and services and collect what breaks the rules."""
    layout = Layout(modules=_modules(root))
    for module, path in layout.modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges = layout.imports.setdefault(module, set())
        where = path.relative_to(root)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            names = list(_imported(module, path, node))
            upward = [name for name in names if name.split(".")[0] == "services"]
            if not module.startswith("freshrec.offline"):  # the core never imports the tools
                upward += [name for name in names if name.startswith("freshrec.offline.")]
            if module.startswith("freshrec") and upward:
                layout.upward.append(f"{where}:{node.lineno} imports {upward[0]}")
            for name in names:
                target = _resolve(name, layout.modules)
                if target is not None and target != module:
                    edges.add(target)
        if not module.startswith("freshrec"):
            continue
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        # folders between the module and libs/: freshrec/x.py may climb 0, freshrec/a/b.py 1
        allowed = len(path.relative_to(root / "libs").parts) - 2
        for use in _file_uses(tree):
            if isinstance(use, ast.Attribute):
                # `pkg.__file__` starts at that package's folder, not at this module's
                levels = _levels_up(use, parents)
                base = _resolve(ast.unparse(use.value), layout.modules)
                depth = len(base.split(".")) - 1 if base else None
                within = levels is not None and depth is not None and levels <= depth
            else:
                levels = _levels_up(use, parents)
                within = levels is not None and levels <= allowed
            if not within:
                line = getattr(use, "lineno", 0)
                source = path.read_text().splitlines()[line - 1].strip()
                layout.escapes.append(f"{where}:{line} {source}")
    return layout


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components, iteratively (the import graph is deep enough to matter)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
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
                components.append(sorted(component))
    return components


def _cycle_path(component: list[str], graph: dict[str, set[str]]) -> str:
    """One concrete cycle through a component's first module, as `a -> b -> a`."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for child in sorted(graph[node] & members):
            if child == start:
                return " -> ".join([*paths[node], start])
            if child not in paths:
                paths[child] = [*paths[node], child]
                frontier.append(child)
    return " -> ".join(component)


def import_cycles(layout: Layout) -> dict[frozenset[str], str]:
    """Each cycle's set of modules → one path through it."""
    return {
        frozenset(component): _cycle_path(component, layout.imports)
        for component in _strongly_connected(layout.imports)
        if len(component) > 1
    }


def test_the_real_tree_keeps_its_arrows_pointing_down() -> None:
    layout = check_layout(ROOT)
    assert "freshrec.settings" in layout.modules and "services.cli.app" in layout.modules
    assert not layout.upward, "the library imports services:\n" + "\n".join(layout.upward)
    assert not layout.escapes, "the library looks outside its package through __file__:\n" + (
        "\n".join(layout.escapes)
    )
    cycles = import_cycles(layout)
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles.values()))


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_catches_cycles_upward_imports_and_escaping_file_paths(
    tmp_path: Path,
) -> None:
    _write(
        tmp_path,
        {
            "libs/freshrec/__init__.py": "",
            "libs/freshrec/settings.py": (
                "from pathlib import Path\n"
                "TABLES = Path(__file__).with_name('tables.yaml')\n"
                "HERE = Path(__file__).resolve().parent / 'static'\n"
            ),
            "libs/freshrec/a.py": "from freshrec import b\n",
            "libs/freshrec/b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from freshrec.pkg.c import C\n"
            ),
            "libs/freshrec/pkg/__init__.py": "",
            "libs/freshrec/pkg/c.py": (
                "from pathlib import Path\n"
                "def late() -> None:\n"
                "    from ..a import x\n"
                "ROOT = Path(__file__).resolve().parents[2]\n"
                "NEAR = Path(__file__).parent.parent / 'tables.yaml'\n"
            ),
            "libs/freshrec/up.py": (
                "import freshrec\n"
                "def serve() -> None:\n"
                "    from services.app import create_app\n"
                "CHECKOUT = Path(freshrec.__file__).parents[1]\n"
            ),
            "libs/freshrec/core.py": "from freshrec.offline.bench import run\n",
            "libs/freshrec/offline/__init__.py": "",
            "libs/freshrec/offline/bench.py": "from freshrec.settings import TABLES\n",
            "services/__init__.py": "",
            "services/app.py": "from freshrec.a import b\nfrom services import main\n",
            "services/main.py": "from .app import create_app\n",
        },
    )
    layout = check_layout(tmp_path)
    cycles = import_cycles(layout)
    assert set(cycles) == {
        frozenset({"freshrec.a", "freshrec.b", "freshrec.pkg.c"}),
        frozenset({"services.app", "services.main"}),
    }
    assert cycles[frozenset({"freshrec.a", "freshrec.b", "freshrec.pkg.c"})] == (
        "freshrec.a -> freshrec.b -> freshrec.pkg.c -> freshrec.a"
    )
    assert sorted(layout.upward) == [
        "libs/freshrec/core.py:1 imports freshrec.offline.bench",
        "libs/freshrec/up.py:3 imports services.app",
    ]
    assert [escape.split(" ")[0] for escape in layout.escapes] == [
        "libs/freshrec/pkg/c.py:4",
        "libs/freshrec/up.py:4",
    ]
