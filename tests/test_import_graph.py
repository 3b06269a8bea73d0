"""The library's modules import one way: each module sits in a layer and imports only from
its own layer or the layers before it (lazy imports inside functions included), and no two
modules import each other, directly or through others."""

import ast
from pathlib import Path

import gananomaly

# data -> networks -> training -> scoring -> estimator -> persistence -> integrations.
LAYERS = (
    ("_version", "_atomic", "_args", "defaults", "parzen", "callbacks", "metrics", "conv", "tracking_plots",
     "explanations"),                                              # foundations: no library imports below them
    ("data", "context", "fidelity", "checkpoint"),                  # input handling, measures
    ("networks", "images"),                                         # networks and image input
    ("training",),                                                  # the adversarial loop
    ("scoring",),                                                   # the components
    ("model_format", "model_dir"),                                  # the model files' format
    ("thresholds", "inspection", "record", "estimator"),            # the estimator and its parts
    ("persistence", "lapgan", "distributed"),                       # built on the estimator
    ("mlflow_pyfunc", "mlflow", "tracking_callback", "tracking_store", "tracking_log",
     "tracking_runs", "tracking"),                                  # integrations
    ("demo",),                                                      # the demo job
)
PACKAGE = Path(gananomaly.__file__).parent


def _imports(path: Path, modules: set[str], package: str) -> set[str]:
    out, depth = set(), package.count(".") + 1
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == package:
                names = [a.name for a in node.names]
            elif node.module.startswith(package + "."):
                names = [node.module.split(".")[depth]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[depth] for a in node.names if a.name.startswith(package + ".")]
        out |= {n for n in names if n in modules}
    return out - {path.stem}


def _graph(folder: Path = PACKAGE, package: str = "gananomaly") -> dict[str, set[str]]:
    modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    return {m: _imports(folder / f"{m}.py", modules, package) for m in modules}


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    def reachable(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for nxt in graph[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    return sorted(m for m in graph if m in reachable(m))


def test_every_module_has_a_layer():
    placed = {m for layer in LAYERS for m in layer}
    assert set(_graph()) - placed == set(), "place new modules in LAYERS"


def test_imports_point_to_the_same_or_an_earlier_layer():
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    upward = sorted(f"{a} -> {b}" for a, deps in _graph().items() for b in deps if rank[b] > rank[a])
    assert upward == []


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_no_import_cycles_between_the_jobs():
    import gananomaly.pipelines

    graph = _graph(Path(gananomaly.pipelines.__file__).parent, "gananomaly.pipelines")
    assert {"tabular", "batch_score", "image", "cli"} <= set(graph)
    assert _cycles(graph) == []


def _private_uses(path: Path) -> list[str]:
    """``from gananomaly.x import _name`` and ``alias._name`` on an imported library module."""
    tree = ast.parse(path.read_text())
    aliases, out = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gananomaly"):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    out.append(f"{path.name}:{node.lineno} imports {node.module}.{a.name}")
                if node.module in ("gananomaly", "gananomaly.pipelines"):
                    aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.name.startswith("gananomaly.") and a.asname}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            out.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return out


def test_no_module_takes_another_modules_private_names():
    import gananomaly.pipelines

    files = [*PACKAGE.glob("*.py"), *Path(gananomaly.pipelines.__file__).parent.glob("*.py")]
    assert [use for path in files for use in _private_uses(path)] == []
