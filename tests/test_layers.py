"""Layers with no upward imports (issues 15, 23): the package's sub-packages are its layers
(``data/``, ``ids/``, ``format/``, ...), every crslib module has a layer, imports only from its
own layer or the layers below, at module level (``cli`` alone imports lazily, for start-up
speed), and no modules import each other in a circle. Modules are named by their dotted path
inside ``crslib`` (``training.train``; a package's ``__init__`` by the package: ``data``)."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "crslib"
LAYERS = [  # bottom to top: a sub-package, or single modules at the top of crslib
    ("base", {"__init__", "paths", "report", "metrics", "pretrained",
              "config"}),  # no crslib imports
    ("data", {"data"}),
    ("ids", {"ids"}),
    ("format", {"format"}),
    ("decoding", {"decoding"}),
    ("training", {"training"}),  # the backbone, the loop, a run folder per config
    ("evaluation", {"evaluation"}),
    ("chat", {"chat"}),
    ("studies", {"studies"}),
    ("top", {"cli", "__main__", "notebooks"}),
]
UNIT = {u: k for k, (_, units) in enumerate(LAYERS) for u in units}
LAZY_OK = {"cli"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


MODULES = sorted(module_name(p) for p in PKG.rglob("*.py"))
PATHS = {module_name(p): p for p in PKG.rglob("*.py")}


def layer(module: str) -> int | None:
    """A module's layer: its sub-package's, or its own at the top of crslib."""
    return UNIT.get(module.split(".")[0])


LAYER = {m: layer(m) for m in MODULES}


def resolve(full: str) -> str:
    """The crslib module that ``crslib.a.b.c`` names: the longest prefix that is a module
    (``from crslib.data import Catalog`` names ``data``), ``__init__`` for ``crslib`` itself."""
    parts = full.split(".")[1:]
    while parts and ".".join(parts) not in PATHS:
        parts.pop()
    return ".".join(parts) or "__init__"


def crslib_imports(name: str):
    """``(line, imported crslib module, inside a function?)`` for every import in ``name``."""
    tree = ast.parse(PATHS[name].read_text())
    in_function, out = set(), []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(map(id, ast.walk(node)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{name}:{node.lineno}: crslib imports are absolute"
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for full in names:
            if full.split(".")[0] == "crslib":
                out.append((node.lineno, resolve(full), id(node) in in_function))
    return sorted(out)


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if LAYER[m] is None]
    gone = sorted(set(UNIT) - {m.split(".")[0] for m in MODULES})
    assert not missing, f"crslib modules without a layer (place them in LAYERS): {missing}"
    assert not gone, f"LAYERS names modules that no longer exist: {gone}"


def test_every_module_reads_in_one_sitting():
    """One concept per file (issue 23): no module over 400 lines."""
    long = {m: n for m in MODULES if (n := len(PATHS[m].read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def test_no_import_points_to_a_higher_layer():
    up = [f"crslib/{PATHS[m].relative_to(PKG)}:{line}: {m} ({LAYERS[LAYER[m]][0]}) imports {t} "
          f"({LAYERS[LAYER[t]][0]})"
          for m in MODULES for line, t, _ in crslib_imports(m) if LAYER[t] > LAYER[m]]
    assert not up, "imports that point up:\n" + "\n".join(up)


def test_no_function_level_imports_of_crslib():
    lazy = [f"crslib/{PATHS[m].relative_to(PKG)}:{line}: {m} imports {t} inside a function"
            for m in MODULES if m not in LAZY_OK for line, t, inner in crslib_imports(m) if inner]
    assert not lazy, "function-level imports:\n" + "\n".join(lazy)


def test_no_circles():
    edges = {m: {t for _, t, _ in crslib_imports(m)} - {m, "__init__"} for m in MODULES}
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError("circle: " + " -> ".join(path[path.index(m):] + [m]))
        if m not in done:
            path.append(m)
            for t in sorted(edges[m]):
                visit(t)
            path.pop()
            done.add(m)

    for m in MODULES:
        visit(m)


def private_reaches(path: Path) -> list[str]:
    """``path:line: module._name`` for every attribute access to a leading-underscore name of
    another crslib module (dunder names excepted), through ``import crslib.x``, ``from crslib
    import x`` or ``from crslib import x as y``."""
    tree = ast.parse(path.read_text())
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "crslib":
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if resolve(full) == full.partition(".")[2]:  # the name is a module
                    aliases[a.asname or a.name] = resolve(full)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("crslib.") and a.asname:
                    aliases[a.asname] = resolve(a.name)
    return [f"{path.name}:{node.lineno}: {aliases[node.value.id]}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in aliases and node.attr.startswith("_")
            and not node.attr.startswith("__")]


def test_no_module_reads_another_modules_private_names():
    tools = PKG.parent / "tools"
    found = [r for p in [*PKG.rglob("*.py"), *tools.glob("*.py")] for r in private_reaches(p)]
    assert not found, found


def test_a_config_is_typed_once_where_it_enters():
    """Issue 23: ``config.resolve`` is called at the edges only (the CLI; notebooks, tools and
    tests are outside the package); inside crslib a RunConfig is passed, read from files by
    ``run.load_config`` / ``runbase.saved_config``."""
    calls = []
    for m in MODULES:
        if m in ("config", "cli"):
            continue
        tree = ast.parse(PATHS[m].read_text())
        for node in ast.walk(tree):
            f = getattr(node, "func", None)
            if isinstance(node, ast.Call) and (
                    isinstance(f, ast.Attribute) and f.attr == "resolve"
                    and isinstance(f.value, ast.Name) and f.value.id == "config"
                    or isinstance(f, ast.Name) and f.id == "resolve"):
                calls.append(f"crslib/{PATHS[m].relative_to(PKG)}:{node.lineno}")
    assert not calls, "config.resolve inside the package:\n" + "\n".join(calls)
