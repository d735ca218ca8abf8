"""The layer contract: potstill/ < models/ < transforms/ < beam_pipelines/, and no import cycles.

Every `import` and `from ... import` in the source tree (at any depth: lazy imports count) is
read with `ast`; a module may import its own layer and the ones below, never one above, and the
module graph inside the project has no cycle.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["potstill", "models", "transforms", "beam_pipelines"]  # lowest first


def project_imports(path: Path) -> set[str]:
    """Dotted names of the project modules `path` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name.split(".")[0] in LAYERS}


def modules() -> dict[str, set[str]]:
    graph = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            graph[name] = project_imports(path)
    # keep edges to modules only (`from models import audit` names the module models.audit)
    return {m: {i for i in imports if i in graph} for m, imports in graph.items()}


@pytest.mark.parametrize("layer", LAYERS)
def test_no_module_imports_a_layer_above_its_own(layer):
    above = LAYERS[LAYERS.index(layer) + 1:]
    bad = sorted(f"{m} imports {i}" for m, imports in modules().items() if m.split(".")[0] == layer
                 for i in imports if i.split(".")[0] in above)
    assert not bad, "layer contract broken:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = modules()
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2
    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_contract_catches_a_violation(tmp_path, monkeypatch):
    """The checker itself: a potstill module importing models is reported."""
    fake = tmp_path / "potstill"
    fake.mkdir()
    (fake / "bad.py").write_text("def f():\n    from models.teacher import HFTeacher\n")
    assert project_imports(fake / "bad.py") == {"models.teacher", "models.teacher.HFTeacher"}
