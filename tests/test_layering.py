"""The floors of ../shared/DESIGN.md, checked on every import of the source tree (including imports inside
functions): no import climbs a floor, converters and runtimes never import each other, and no circle."""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("targets", "edgechat", "converters", "runtimes")

# (module prefix, floor); the longest matching prefix wins. `edgechat` itself is the lazy public facade over
# the app layer, so importing it is importing floor 5.
FLOORS = [("targets", 1), ("edgechat.core", 2), ("edgechat.probes", 3), ("edgechat.reports", 3),
          ("converters", 4), ("runtimes", 4), ("edgechat.app", 5), ("edgechat", 5), ("edgechat.cli", 6)]
SIBLINGS_APART = {"converters": "runtimes", "runtimes": "converters"}  # floor 4: never each other


def floor_of(module: str) -> int | None:
    best = None
    for prefix, floor in FLOORS:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, floor)
    return best and best[1]


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(root: Path, path: Path, modules: set[str]) -> list[tuple[int, str]]:
    """(line, imported project module) for every import statement in the file, at any depth."""
    me = module_name(root, path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:  # `from pkg import mod` depends on pkg.mod when that is a module
                out.append((node.lineno, f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base))
    return [(line, m) for line, m in out if m.split(".")[0] in PACKAGES]


def check_tree(root: Path) -> list[str]:
    """Every violation of the floors in the tree at root, as 'file:line: message'."""
    files = [p for pkg in PACKAGES if (root / pkg).is_dir() for p in sorted((root / pkg).rglob("*.py"))]
    modules = {module_name(root, p) for p in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    problems = []
    for path in files:
        me = module_name(root, path)
        for line, target in imports_of(root, path, modules):
            where = f"{path.relative_to(root)}:{line}"
            mine, theirs = floor_of(me), floor_of(target)
            if theirs > mine:
                problems.append(f"{where}: {me} (floor {mine}) imports {target} (floor {theirs}), a higher floor")
            top = me.split(".")[0]
            if SIBLINGS_APART.get(top) == target.split(".")[0]:
                problems.append(f"{where}: {me} imports {target}: converters and runtimes never import each other")
            if target in modules and target != me:
                graph[me].add(target)
    problems += [f"import circle: {' -> '.join(c + [c[0]])}" for c in circles(graph)]
    return problems


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_source_tree_keeps_its_floors():
    assert check_tree(ROOT) == []


def test_every_source_module_has_a_floor():
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    assert files and all(floor_of(module_name(ROOT, p)) for p in files)


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


CLEAN = {
    "targets/__init__.py": "", "targets/quants.py": "",
    "edgechat/__init__.py": "", "edgechat/core/__init__.py": "",
    "edgechat/core/config.py": "from targets import quants\n",
    "edgechat/core/model.py": "from edgechat.core.config import X\n",
    "edgechat/app/__init__.py": "", "edgechat/app/sampling.py": "", "edgechat/app/api.py": "from edgechat.core import model\nimport runtimes.base\n",
    "edgechat/cli/__init__.py": "", "edgechat/cli/main.py": "def f():\n    from edgechat.app.api import load\n",
    "runtimes/__init__.py": "", "runtimes/base.py": "from edgechat.core.model import Model\n",
    "converters/__init__.py": "", "converters/gguf.py": "from . import ggml\n", "converters/ggml.py": "",
}


def test_a_clean_synthetic_tree_passes(tmp_path):
    assert check_tree(write_tree(tmp_path, CLEAN)) == []


def test_an_upward_import_inside_a_function_fails(tmp_path):
    tree = write_tree(tmp_path, {**CLEAN, "edgechat/core/model.py": "def f():\n    import edgechat.app.sampling\n"})
    assert check_tree(tree) == [
        "edgechat/core/model.py:2: edgechat.core.model (floor 2) imports edgechat.app.sampling (floor 5), a higher floor"]


def test_importing_the_public_facade_from_below_fails(tmp_path):
    tree = write_tree(tmp_path, {**CLEAN, "runtimes/base.py": "import edgechat\n"})
    assert check_tree(tree) == ["runtimes/base.py:1: runtimes.base (floor 4) imports edgechat (floor 5), a higher floor"]


def test_converters_and_runtimes_never_import_each_other(tmp_path):
    tree = write_tree(tmp_path, {**CLEAN, "converters/ggml.py": "from runtimes.base import Engine\n"})
    assert check_tree(tree) == [
        "converters/ggml.py:1: converters.ggml imports runtimes.base: converters and runtimes never import each other"]


def test_a_circle_on_one_floor_fails(tmp_path):
    tree = write_tree(tmp_path, {**CLEAN, "edgechat/core/config.py": "def f():\n    from edgechat.core import model\n"})
    assert check_tree(tree) == ["import circle: edgechat.core.config -> edgechat.core.model -> edgechat.core.config"]


def test_relative_imports_are_resolved(tmp_path):
    tree = write_tree(tmp_path, {**CLEAN, "edgechat/core/model.py": "from ..app import sampling\n"})
    assert check_tree(tree) == [
        "edgechat/core/model.py:1: edgechat.core.model (floor 2) imports edgechat.app.sampling (floor 5), a higher floor"]
