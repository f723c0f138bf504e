"""Layers with no upward imports (issue 15): every crslib module has a layer, imports only from
its own layer or the layers below, at module level (``cli`` alone imports lazily, for start-up
speed), and no modules of one layer import each other in a circle."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "crslib"
LAYERS = [  # bottom to top
    ("util", {"__init__", "paths", "report", "metrics", "pretrained", "config"}),  # imports no crslib module
    ("data", {"data", "download", "stats", "titles", "genres", "request"}),
    ("ids", {"encode", "quantize", "semantic_ids"}),
    ("format", {"serialize", "packing", "align"}),
    ("decode", {"trie", "generation"}),
    ("model", {"model", "baselines"}),  # the backbone, and the rankers that need none
    ("train", {"train"}),
    ("run", {"runbase", "decoupled", "run"}),  # a run folder per config, each variant
    ("evaluate", {"evaluate"}),
    ("chat", {"chat"}),
    ("studies", {"experiments", "coldstart", "freemode", "casestudy", "bench", "constraints"}),
    ("claims", {"claims", "curve"}),  # judge saved results: claims, a budget from a curve
    ("top", {"cli", "__main__", "notebooks"}),
]
LAYER = {m: k for k, (_, mods) in enumerate(LAYERS) for m in mods}
LAZY_OK = {"cli"}
MODULES = sorted(p.stem for p in PKG.glob("*.py"))


def crslib_imports(name: str):
    """``(line, imported crslib module, inside a function?)`` for every import in ``name``."""
    tree = ast.parse((PKG / f"{name}.py").read_text())
    in_function, out = set(), []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(map(id, ast.walk(node)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):  # relative imports: ``.`` is crslib
            base = ".".join(filter(None, ["crslib" if node.level else "", node.module]))
            names = [base if "." in base else f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for full in names:  # ``import crslib``, ``from crslib import __version__``: __init__
            head, _, sub = full.partition(".")
            sub = sub.split(".")[0]
            if head == "crslib":
                out.append((node.lineno, sub if sub in MODULES else "__init__",
                            id(node) in in_function))
    return sorted(out)


def test_every_module_has_a_layer():
    missing, gone = sorted(set(MODULES) - set(LAYER)), sorted(set(LAYER) - set(MODULES))
    assert not missing, f"crslib modules without a layer (place them in LAYERS): {missing}"
    assert not gone, f"LAYERS names modules that no longer exist: {gone}"


def test_no_import_points_to_a_higher_layer():
    up = [f"crslib/{m}.py:{line}: {m} ({LAYERS[LAYER[m]][0]}) imports {t} ({LAYERS[LAYER[t]][0]})"
          for m in MODULES for line, t, _ in crslib_imports(m) if LAYER[t] > LAYER[m]]
    assert not up, "imports that point up:\n" + "\n".join(up)


def test_no_function_level_imports_of_crslib():
    lazy = [f"crslib/{m}.py:{line}: {m} imports {t} inside a function"
            for m in MODULES if m not in LAZY_OK for line, t, inner in crslib_imports(m) if inner]
    assert not lazy, "function-level imports:\n" + "\n".join(lazy)


def test_no_circles():
    edges = {m: {t for _, t, _ in crslib_imports(m)} - {m} for m in MODULES}
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
                if a.name in MODULES:
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("crslib.") and a.asname:
                    aliases[a.asname] = a.name.split(".")[1]
    return [f"{path.name}:{node.lineno}: {aliases[node.value.id]}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in aliases and node.attr.startswith("_")
            and not node.attr.startswith("__")]


def test_no_module_reads_another_modules_private_names():
    tools = PKG.parent / "tools"
    found = [r for p in [*PKG.glob("*.py"), *tools.glob("*.py")] for r in private_reaches(p)]
    assert not found, found
