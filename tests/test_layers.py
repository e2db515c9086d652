"""The package's layers point one way: a module imports only from its own layer or those below
(``docs/architecture.md``), and no import chain comes back to where it started."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "onnx_gkp"

# Lowest first: each layer may import the ones before it, never one after.
LAYERS = (
    ("errors", "limits", "graphs"),
    ("layer",),
    ("io",),
    ("runtime",),
    ("analyse",),
    ("cost",),
    ("plan",),
    ("rewrite",),
    ("check",),
    ("refit",),
    ("report",),
    ("ship",),
    ("options",),
    ("prepare",),
    ("context",),
    ("policy",),
    ("api", "arguments", "cli", "__main__", "__init__"),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def imports_of(path: Path) -> set[str]:
    """The package's modules ``path`` imports, anywhere in it (functions and TYPE_CHECKING too)."""
    package = list(path.relative_to(PACKAGE).parts[:-1])  # what a relative import starts from
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("onnx_gkp."):
            found.add(node.module[len("onnx_gkp.") :])  # type: ignore[index]
        elif isinstance(node, ast.Import):
            found |= {a.name[len("onnx_gkp.") :] for a in node.names if a.name.startswith("onnx_gkp.")}
    return {t for t in found if t and t != "__init__"}


def _is_module(dotted: str) -> bool:
    path = PACKAGE.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(module: str) -> str:
    return module.split(".")[0]


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a higher layer, and every module of an unknown layer."""
    found = []
    for module, targets in sorted(graph.items()):
        own = RANK.get(layer_of(module))
        if own is None:
            found.append(f"{module}: in no layer (add its folder to LAYERS)")
            continue
        found += [f"{module} imports {t}, a higher layer" for t in sorted(targets) if RANK.get(layer_of(t), -1) > own]
    return found


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle among the modules, or none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return []

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return []


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) - {module_name(p)} for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_imports_a_higher_layer(graph: dict[str, set[str]]) -> None:
    assert violations(graph) == []


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    assert cycle(graph) == []


def test_every_import_names_a_module_of_the_package(graph: dict[str, set[str]]) -> None:
    """The walk reads what it should: an import it resolved wrongly would hide a violation."""
    assert {t for targets in graph.values() for t in targets if not _is_module(t)} == set()
    assert "analyse.geometry" in graph["cost.table"]


def test_the_checks_catch_what_they_are_for() -> None:
    assert violations({"analyse.sites": {"cost.table", "errors"}}) == [
        "analyse.sites imports cost.table, a higher layer"
    ]
    assert violations({"gadgets.x": set()}) == ["gadgets.x: in no layer (add its folder to LAYERS)"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) == []


def test_analysing_a_model_does_not_load_the_quantizer() -> None:
    """onnxruntime.quantization (and what it pulls in) loads only when INT8 is asked for."""
    script = (
        "import sys, onnx, onnx_gkp\n"
        "from onnx_gkp.analyse.sites import analyse\n"
        f"analyse(onnx.load({str(PACKAGE.parent / 'models' / 'resnet20_fashion_mnist.onnx')!r}))\n"
        "print('onnxruntime.quantization' in sys.modules)\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "False"
