"""The import structure of dalib, read from the source (DESIGN.md, "One place per name"):

- every module imports on its own (a fresh interpreter per batch of modules);
- no import circle, counting the imports inside functions (which the first check cannot see: they run later);
- a name is imported from the module that defines it: no re-exports, no module `__getattr__`, and package
  `__init__` files import nothing;
- an import inside a function is the exception, for an optional heavy dependency, and says so in a comment.
"""
import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import dalib

MODULES = sorted(m.name for m in pkgutil.walk_packages(dalib.__path__, "dalib.") if not m.name.endswith("__main__"))
PACKAGE = Path(dalib.__file__).parent

CHECK = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "dalib" or m.startswith("dalib.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ":\\n" + traceback.format_exc(limit=-3))
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def module_files() -> dict[str, Path]:
    """{dotted module name: file} of every module of the package (packages by their __init__.py)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


FILES = module_files()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in FILES.items()}


def imports_of(module: str):
    """(node, target module, imported names, inside a function?) of each dalib import in `module`, relative
    imports resolved."""
    tree = TREES[module]
    package = module if FILES[module].name == "__init__.py" else module.rpartition(".")[0]
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "dalib":
                    yield node, alias.name, [], id(node) in local
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.split(".")[0] == "dalib":
                yield node, base, [a.name for a in node.names], id(node) in local


def resolve(target: str, name: str | None = None) -> str:
    """The module an import reaches: `from dalib.a import b` reaches dalib.a.b when b is a module, else dalib.a."""
    if name and f"{target}.{name}" in FILES:
        return f"{target}.{name}"
    return target


def import_graph() -> dict[str, set[str]]:
    graph = {m: set() for m in FILES}
    for module in FILES:
        for _, target, names, _ in imports_of(module):
            for reached in {resolve(target, n) for n in names} or {target}:
                if reached != module and reached in FILES:
                    graph[module].add(reached)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

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
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def defined_names(module: str) -> set[str]:
    """Names a module defines at its top level (functions, classes, assignments), not the ones it imports."""
    out = set()
    for node in TREES[module].body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                out |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return out


def test_module_list_covers_the_packages():
    packages = {"dalib.data.serve", "dalib.shards", "dalib.distributed", "dalib.synth.render", "dalib.train.loop"}
    assert packages <= set(MODULES)
    assert set(MODULES) <= set(FILES)


def test_each_module_imports_alone():
    proc = subprocess.run([sys.executable, "-c", CHECK, *MODULES], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"modules that fail to import alone:\n{proc.stdout}\n{proc.stderr[-2000:]}"


def test_no_import_circle_counting_imports_inside_functions():
    found = cycles(import_graph())
    assert not found, f"{len(found)} import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_sees_a_circle_made_inside_functions():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_names_are_imported_from_the_module_that_defines_them():
    wrong = []
    for module in FILES:
        for node, target, names, _ in imports_of(module):
            for name in names:
                if name == "*" or resolve(target, name) != target:
                    continue  # `from dalib.pkg import module` imports a module
                if target not in FILES or name not in defined_names(target):
                    wrong.append(f"{FILES[module].relative_to(PACKAGE.parent)}:{node.lineno} imports {name} "
                                 f"from {target}, which does not define it")
    assert not wrong, "\n".join(wrong)


def test_no_module_getattr_and_package_inits_import_nothing():
    bad = [m for m, tree in TREES.items() if "__getattr__" in defined_names(m)]
    assert not bad, f"module __getattr__ in {bad}"
    for module, path in FILES.items():
        if path.name == "__init__.py":
            imports = [n for n in TREES[module].body if isinstance(n, (ast.Import, ast.ImportFrom))]
            assert not imports, f"{path.relative_to(PACKAGE.parent)} imports: a package's modules are imported by name"


def test_imports_inside_functions_say_why():
    """An import inside a function is allowed for an optional heavy dependency, with a comment on its line or the
    line before saying so; dalib's own modules are imported at the top."""
    unexplained = []
    for module, path in FILES.items():
        lines = path.read_text().splitlines()
        for node, target, names, inside in imports_of(module):
            if inside:
                unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {target} inside a function")
        tree = TREES[module]
        for func in [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and node is not func:
                    root = (node.names[0].name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
                    if root == "dalib" or getattr(node, "level", 0):
                        continue  # reported above
                    near = lines[node.lineno - 1] + (lines[node.lineno - 2] if node.lineno > 1 else "")
                    if "#" not in near:
                        unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {root} "
                                           f"inside {func.name} without a comment saying why")
    assert not unexplained, "\n".join(sorted(set(unexplained)))


MAX_FUNCTION_LINES = 60  # a function a reader can hold on one screen; a longer one is split into named stages


def test_no_function_is_longer_than_a_screen():
    """Every function of dalib, decorators excluded and docstring included, is at most 60 lines."""
    long = []
    for name, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name} ({path.name}:{node.lineno}): {lines} lines")
    assert not long, "split these into named stages:\n" + "\n".join(long)
