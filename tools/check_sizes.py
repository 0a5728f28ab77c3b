"""Size and cycle check of a package: fails listing every module over 500 lines, every function over
120 lines, every import cycle between its files, every test of a model family's name outside
``families/`` (the only place that knows a family), and every use of a resolver outside the plan
module and ``families/`` (everything else consumes a plan, issue #18).

Usage: ``python tools/check_sizes.py [PACKAGE_DIR]`` (default ``workbench``); exit 1 if anything is
found. ``make lint`` runs it, and ``tests/test_layout.py`` does the same checks.

A cycle counts every import of the package's own modules wherever it is written (module level,
inside a function, under ``TYPE_CHECKING``), and ``from pkg.sub import name`` is an edge to
``pkg/sub/__init__.py`` too (importing ``pkg.sub.name`` runs it). import-linter's layers contract
(``lint-imports``) checks the direction between packages; this finds cycles between single files,
inside one package included.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 120
FAMILY_NAMES = ("yolo", "ssd")  # the registered families' names
FAMILIES_DIR = "families"
PLAN_MODULE = "plan.py"
# The resolvers: only the plan module and families/ use them (besides the module defining each, and
# for recipe names the config's validation of its `recipes:` field and the recipes package itself).
RESOLVERS = {
    "resolve_model": ("locations.py",),
    "resolve_weights": ("locations.py",),
    "prepare_dataset": ("data/prepare.py",),
    "family_of": (),
    "parse_recipes": ("recipe_names.py", "config.py", "recipes/__init__.py"),
}


def module_names(root: Path) -> dict[Path, str]:
    """Every ``.py`` file under the package ``root`` with its dotted module name."""
    base = root.resolve().parent
    return {
        path: ".".join(path.relative_to(base).with_suffix("").parts).removesuffix(".__init__")
        for path in sorted(root.resolve().rglob("*.py"))
    }


def oversized(root: Path) -> list[str]:
    """One line per module over :data:`MAX_MODULE_LINES` and per function over :data:`MAX_FUNCTION_LINES`."""
    base = root.resolve().parent
    found = []
    for path in module_names(root):
        text = path.read_text()
        where = path.relative_to(base)
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{where}: {lines} lines (limit {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(
                        f"{where}:{node.lineno}: function {node.name} is {length} lines "
                        f"(limit {MAX_FUNCTION_LINES})"
                    )
    return found


def import_edges(root: Path) -> dict[Path, set[Path]]:
    """For each file of the package, the package's files its imports run."""
    files = module_names(root)
    package = root.resolve().name
    by_name = {name: path for path, name in files.items()}

    def file_of(name: str) -> Path | None:
        while name and name not in by_name:  # ``pkg.mod.function`` -> ``pkg.mod``
            name = name.rpartition(".")[0]
        return by_name.get(name)

    edges: dict[Path, set[Path]] = {path: set() for path in files}
    for path, name in files.items():
        package_of = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # relative: from the importing file's package up
                    parts = package_of.split(".")[: len(package_of.split(".")) - node.level + 1]
                    module = ".".join(parts + ([module] if module else []))
                imported = [f"{module}.{alias.name}" for alias in node.names] + [module]
            else:
                continue
            for target in imported:
                if target.split(".")[0] == package and (found := file_of(target)) and found != path:
                    edges[path].add(found)
    return edges


def import_cycles(root: Path) -> list[list[str]]:
    """Each set of files that import one another in a cycle (a strongly connected component of
    more than one file), as sorted paths relative to the package's parent."""
    edges = import_edges(root)
    base = root.resolve().parent
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    on_stack: set[Path] = set()
    cycles = []

    def visit(node: Path) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(str(m.relative_to(base)) for m in component))

    for node in edges:
        if node not in index:
            visit(node)
    return sorted(cycles)


def family_name_tests(root: Path) -> list[str]:
    """``x == "yolo"``, ``x != "ssd"``, ``x in ("yolo", ...)`` outside ``families/``: a branch on a
    family that belongs in the family's own class."""

    def names_a_family(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in FAMILY_NAMES
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(names_a_family(e) for e in node.elts)
        return False

    found = []
    for path in sorted(root.rglob("*.py")):
        if FAMILIES_DIR in path.relative_to(root).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                names_a_family(n) for n in (node.left, *node.comparators)
            ):
                found.append(f"{path}:{node.lineno}: tests a family's name (ask the family instead)")
    return found


def resolver_uses(root: Path) -> list[str]:
    """Each import, call or mention of a resolver (:data:`RESOLVERS`) in a module that may not use
    it: anything but ``plan.py``, ``families/`` and the resolver's own allowed modules."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.as_posix() == PLAN_MODULE or FAMILIES_DIR in relative.parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = (
                node.name
                if isinstance(node, ast.alias)
                else node.id
                if isinstance(node, ast.Name)
                else node.attr
                if isinstance(node, ast.Attribute)
                else None
            )
            if name in RESOLVERS and relative.as_posix() not in RESOLVERS[name]:
                line = getattr(node, "lineno", "?")
                found.append(f"{path}:{line}: uses {name} (only the plan and families/ resolve: use a plan)")
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "workbench")
    if not (root / "__init__.py").is_file():
        print(f"{root}: not a package (no __init__.py)", file=sys.stderr)
        return 2
    problems = oversized(root) + [f"import cycle: {', '.join(c)}" for c in import_cycles(root)]
    problems += family_name_tests(root) + resolver_uses(root)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s) in {len(module_names(root))} files of {root}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
