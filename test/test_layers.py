"""The package layout's rules, checked on the source: every module imports only from its own
folder or from folders in layers below it, the torch-free layers never import torch, and no
import hides inside a function except a lazy import of a lower layer (a backend chosen at run
time, a heavy dependency a command needs). docs/ARCHITECTURE.md explains the layers."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "tinygpt_ros"

# Lowest first. A module may import its own folder and any folder of a lower layer.
LAYERS: list[set[str]] = [
    {"__init__"},  # the package root: version only
    {"spec"},  # shapes, knobs, types, tokenizer, cost model
    {"ops", "data"},  # numpy per-frame algorithms; generated data
    {"model"},  # the torch model and its files
    {"runtime"},  # the streaming controller and the torch backend
    {"hf"},  # pretrained Hugging Face captioners behind the streaming controller
    {"deploy"},  # ONNX graphs, onnxruntime engine, providers, power, engine factory
    {"train", "bags"},  # training recipe; bag reading and writing
    {"ros"},  # nodes, conversions, launch graph
    {"evaluation"},  # bag replay, metrics, reports, benchmarks
    {"demo"},  # the README's main job
    {"cli"},  # the command line
]
TORCH_FREE = {"spec", "ops", "data", "bags", "ros", "deploy"}
TORCH_ALLOWED_IN = {"deploy/export.py", "deploy/factory.py"}  # export needs torch; factory lazily


def _folder(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _rank(folder: str) -> int:
    for i, layer in enumerate(LAYERS):
        if folder in layer:
            return i
    raise AssertionError(f"folder {folder!r} has no layer in test_layers.LAYERS")


def _package_imports(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                raise AssertionError(f"relative import at line {node.lineno}: use absolute imports")
            if node.module == "tinygpt_ros":
                out += [(node, f"tinygpt_ros.{a.name}") for a in node.names]
            elif node.module.startswith("tinygpt_ros."):
                out.append((node, node.module))
        elif isinstance(node, ast.Import):
            out += [(node, a.name) for a in node.names if a.name.startswith("tinygpt_ros.")]
    return out


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_import_points_down_or_sideways_within_its_folder():
    bad = []
    for path in _modules():
        src = _folder(path)
        for node, target in _package_imports(ast.parse(path.read_text())):
            parts = target.split(".")
            dst = parts[1] if len(parts) > 1 else "__init__"
            if dst == "__version__":
                dst = "__init__"
            if dst != src and _rank(dst) >= _rank(src):
                bad.append(f"{path.relative_to(PKG)}:{node.lineno} imports {target}")
    assert not bad, "imports that point up or sideways across folders:\n" + "\n".join(bad)


def test_torch_free_layers_never_import_torch():
    bad = []
    for path in _modules():
        rel = str(path.relative_to(PKG))
        if _folder(path) not in TORCH_FREE or rel in TORCH_ALLOWED_IN:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "torch" or n.startswith("torch.") for n in names):
                bad.append(f"{rel}:{node.lineno}")
    assert not bad, "torch imported in a torch-free layer: " + ", ".join(bad)


def test_no_module_level_import_cycles():
    """Module-level imports of the package form no cycle (function-level ones are checked
    above to point down, so they cannot close one either)."""
    graph: dict[str, set[str]] = {}
    for path in _modules():
        rel = path.relative_to(PKG).with_suffix("")
        name = ".".join(("tinygpt_ros", *rel.parts)).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        graph[name] = set()
        for n in top:
            for _, t in _package_imports(n):
                graph[name].add(t)
                if isinstance(n, ast.ImportFrom) and n.module == t:  # names may be submodules
                    graph[name] |= {f"{t}.{a.name}" for a in n.names}
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in graph.get(n, ()):
            if m not in graph or m == n:
                continue
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, n, m]))
            if not state.get(m):
                visit(m, [*stack, n])
        state[n] = 2

    for n in graph:
        if not state.get(n):
            visit(n, [])
