"""The library's modules import one way: each module sits in a layer and imports only from
its own layer or the layers before it (lazy imports inside functions included), and no two
modules import each other, directly or through others."""

import ast
from pathlib import Path

import gananomaly

# data -> networks -> training -> scoring -> estimator -> persistence -> integrations.
LAYERS = (
    ("_version", "_atomic", "defaults", "parzen", "callbacks", "metrics", "conv", "tracking_plots",
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


def _imports(path: Path, modules: set[str]) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "gananomaly":
                names = [a.name for a in node.names]
            elif node.module.startswith("gananomaly."):
                names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("gananomaly.")]
        out |= {n for n in names if n in modules}
    return out - {path.stem}


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {m: _imports(PACKAGE / f"{m}.py", modules) for m in modules}


def test_every_module_has_a_layer():
    placed = {m for layer in LAYERS for m in layer}
    assert set(_graph()) - placed == set(), "place new modules in LAYERS"


def test_imports_point_to_the_same_or_an_earlier_layer():
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    upward = sorted(f"{a} -> {b}" for a, deps in _graph().items() for b in deps if rank[b] > rank[a])
    assert upward == []


def test_no_import_cycles():
    graph = _graph()

    def reachable(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for nxt in graph[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    assert sorted(m for m in graph if m in reachable(m)) == []
