"""The layer contract: the library < potstill.models < potstill.transforms < potstill.beam_pipelines,
rooms inside each layer on floors, and no import cycles.

Every `import` and `from ... import` in the source tree (at any depth: lazy imports count) is
read with `ast`; a module may import its own room, the rooms on lower floors, never a room on
its own floor or above, and the module graph inside the project has no cycle. The card's folders
(`models/`, `transforms/`, `beam_pipelines/`, `sql/`) are installed as `potstill.<folder>`: no
module imports them by their bare names.

`python tests/test_layers.py [ROOT]` prints the house: rooms, floors, arrows, modules per folder.
"""
import ast
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CARD_FOLDERS = ["models", "transforms", "beam_pipelines", "sql"]
ENTRY_POINTS = {"potstill.__main__"}  # above every floor: `python -m potstill`

# Floors, lowest first; rooms on one floor are siblings and may not import each other. A module
# belongs to the longest room name it starts with.
FLOORS = [
    ["potstill", "potstill.progress", "potstill.memory", "potstill.store"],
    ["potstill.rows"],
    ["potstill.config"],
    ["potstill.publish"],
    ["potstill.reports"],
    ["potstill.job"],
    ["potstill.models"],
    ["potstill.models.generation"],
    ["potstill.models.teacher"],
    ["potstill.models.quality", "potstill.models.saliency"],
    ["potstill.models.student"],
    ["potstill.transforms"],
    ["potstill.beam_pipelines"],
]
LAYERS = ["potstill", "potstill.models", "potstill.transforms", "potstill.beam_pipelines"]  # lowest first
MAX_MODULES_PER_FOLDER = 15
# The root package's one arrow up: `potstill.plan`, `potstill.run`, ... (the Python API) are
# forwarded to the top floor's module on first use, inside the package's `__getattr__`, never at
# import (test_the_root_forwards_the_api_lazily). The floors leave out this arrow only.
ROOT_FORWARD = ("potstill", "potstill.beam_pipelines.api")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[0] in CARD_FOLDERS:
        parts.insert(0, "potstill")
    return ".".join(parts).removesuffix(".__init__")


def imported_names(path: Path) -> set[str]:
    """Every dotted name `path` imports (modules and the names taken from them)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def project_imports(path: Path) -> set[str]:
    """Dotted names of the project modules `path` imports."""
    return {name for name in imported_names(path) if name.split(".")[0] == "potstill"}


def source_files(root: Path = ROOT) -> list[Path]:
    return sorted(p for top in ["potstill", *CARD_FOLDERS] for p in (root / top).rglob("*.py"))


def modules(root: Path = ROOT) -> dict[str, set[str]]:
    graph = {module_name(p, root): project_imports(p) for p in source_files(root)}
    # keep edges to modules only (`from potstill.models.quality import audit` names a module)
    return {m: {i for i in imports if i in graph and i != m and (m, i) != ROOT_FORWARD}
            for m, imports in graph.items()}


def room_of(module: str) -> str:
    rooms = [r for floor in FLOORS for r in floor if module == r or module.startswith(r + ".")]
    return max(rooms, key=len)


def floor_of(module: str) -> int:
    room = room_of(module)
    return next(i for i, floor in enumerate(FLOORS) if room in floor)


def layer_of(module: str) -> str:
    return max((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), key=len)


@pytest.mark.parametrize("layer", LAYERS)
def test_no_module_imports_a_layer_above_its_own(layer):
    above = LAYERS[LAYERS.index(layer) + 1:]
    bad = sorted(f"{m} imports {i}" for m, imports in modules().items()
                 if m not in ENTRY_POINTS and layer_of(m) == layer
                 for i in imports if layer_of(i) in above)
    assert not bad, "layer contract broken:\n" + "\n".join(bad)


def test_no_room_imports_a_room_on_its_floor_or_above():
    bad = sorted(f"{m} ({room_of(m)}) imports {i} ({room_of(i)})"
                 for m, imports in modules().items() if m not in ENTRY_POINTS
                 for i in imports
                 if room_of(i) != room_of(m) and floor_of(i) >= floor_of(m))
    assert not bad, "room floors broken:\n" + "\n".join(bad)


def test_every_module_has_a_room_and_every_room_says_what_it_owns():
    for m in modules():
        assert m in ENTRY_POINTS or room_of(m), m
    for floor in FLOORS:
        for room in floor:
            init = (ROOT / room.replace(".", "/") / "__init__.py")
            card = ROOT / "/".join(room.split(".")[1:]) / "__init__.py"
            path = init if init.exists() else card
            if path.exists():  # a room may be one module (potstill.store)
                assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no docstring"


def test_no_folder_holds_more_than_15_modules():
    per_folder = Counter(p.parent for p in source_files() if p.name != "__init__.py")
    crowded = {str(f.relative_to(ROOT)): n for f, n in per_folder.items() if n > MAX_MODULES_PER_FOLDER}
    assert not crowded, crowded


def test_the_card_folders_are_never_imported_by_their_bare_names():
    files = source_files() + sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    bad = sorted(f"{p.relative_to(ROOT)} imports {name}" for p in files for name in imported_names(p)
                 if name.split(".")[0] in CARD_FOLDERS)
    assert not bad, "\n".join(bad)


# The whole Config enters potstill.models only through these entry functions; everything below
# them takes its own config section or typed values.
CONFIG_ENTRIES = {
    "potstill.models.quality.audit.read_seed", "potstill.models.quality.audit.build_teacher",
    "potstill.models.quality.audit.tune_and_gate", "potstill.models.quality.evaluate.read_test_split",
    "potstill.models.quality.evaluate.evaluate_teacher", "potstill.models.student.data.read_test",
    "potstill.models.student.rationale_input.compute_test_rationales",
    "potstill.models.student.data.seed_dataset",
    "potstill.models.student.trainer.train", "potstill.models.student.trainer.evaluate",
    "potstill.models.student.trainer.gold_only_baseline",  # train() again, on the seed rows
    "potstill.models.teacher.remote_endpoint.resolved_config",
    "potstill.models.teacher.teacher_setup.TeacherSetup.from_config",
}


def config_parameters(path: Path, module: str) -> set[str]:
    """Qualified names of the functions in `path` with a parameter that is the whole Config."""
    found = set()

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}.{child.name}")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = child.args.posonlyargs + child.args.args + child.args.kwonlyargs
                if any(a.arg == "cfg" or (a.annotation is not None and
                       ast.unparse(a.annotation).strip("'\"").split(".")[-1] == "Config") for a in args):
                    found.add(f"{prefix}.{child.name}")
                visit(child, f"{prefix}.{child.name}")
    visit(ast.parse(path.read_text()), module)
    return found


def test_the_whole_config_enters_models_only_through_its_entry_functions(tmp_path):
    takers = {f for p in source_files() if module_name(p).startswith("potstill.models.")
              for f in config_parameters(p, module_name(p))}
    assert takers <= CONFIG_ENTRIES, sorted(takers - CONFIG_ENTRIES)
    fake = "def judge(cfg, gold):\n    pass\nclass A:\n    def f(self, c: 'Config'):\n        pass\n"
    (tmp_path / "probe.py").write_text(fake)  # the checker itself finds both forms
    assert config_parameters(tmp_path / "probe.py", "m") == {"m.judge", "m.A.f"}


def test_the_root_forwards_the_api_lazily():
    """The arrow `modules()` leaves out is the root's only project import, inside its
    `__getattr__`, and `import potstill` loads no other module of the project."""
    import subprocess

    def project(nodes):
        return {a.name if isinstance(n, ast.Import) else f"{n.module}.{a.name}"
                for n in nodes if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names if (a.name if isinstance(n, ast.Import) else n.module or "").startswith("potstill")}
    tree = ast.parse((ROOT / "potstill" / "__init__.py").read_text())
    forward = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__")
    assert project(ast.walk(tree)) == project(ast.walk(forward)) == {ROOT_FORWARD[1]}
    code = "import sys, potstill; print(sorted(m for m in sys.modules if m.startswith('potstill')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['potstill']"]


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
    """The checker itself: a library module importing models is reported, and so is a sibling
    room on the same floor."""
    fake = tmp_path / "potstill"
    fake.mkdir()
    (fake / "bad.py").write_text("def f():\n    from potstill.models.teacher.hf import HFTeacher\n")
    assert project_imports(fake / "bad.py") == {"potstill.models.teacher.hf", "potstill.models.teacher.hf.HFTeacher"}
    assert layer_of("potstill.bad") == "potstill" and layer_of("potstill.models.teacher.hf") == "potstill.models"
    assert floor_of("potstill.models.quality.gate") == floor_of("potstill.models.saliency.attribution")
    assert room_of("potstill.models.registry") == "potstill.models"


# --- the house, measured --------------------------------------------------------------------------

def house(root: Path) -> dict:
    """Rooms (folders), floors (longest import chain between rooms), arrows (room -> room and
    module -> module edges), modules per folder: of any checkout, old layout or new."""
    files = [p for top in ["potstill", *CARD_FOLDERS] if (root / top).exists() for p in (root / top).rglob("*.py")]
    names = {p: ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__") for p in files}
    known = set(names.values())

    def resolve(name):  # a bare card-folder name (old layout) or potstill.<folder>... (new layout)
        for cand in (name, name.removeprefix("potstill.")):
            if cand in known:
                return cand
        if name.startswith("potstill.") and name.split(".")[1] in CARD_FOLDERS:
            return name.removeprefix("potstill.") if name.removeprefix("potstill.") in known else None
        return None

    folder = {m: str(p.parent.relative_to(root)) for p, m in names.items()}
    edges = {(m, r) for p, m in names.items() for n in imported_names(p) if (r := resolve(n)) and r != m}
    room_edges = {(folder[a], folder[b]) for a, b in edges if folder[a] != folder[b]}
    rooms = sorted(set(folder.values()))
    floor: dict[str, int] = {}

    def height(room, seen=()):
        if room not in floor:
            below = [b for a, b in room_edges if a == room and b not in seen]
            floor[room] = 1 + max((height(b, seen + (room,)) for b in below), default=0)
        return floor[room]
    per_folder = Counter(folder[m] for p, m in names.items() if p.name != "__init__.py")
    depth: dict[str, int] = {}

    def module_floor(m, seen=()):  # the longest import chain below a module (cycles cut)
        if m not in depth:
            below = [b for a, b in edges if a == m and b not in seen]
            depth[m] = 1 + max((module_floor(b, seen + (m,)) for b in below), default=0)
        return depth[m]
    deepest_in = Counter()
    for m in known:
        deepest_in[folder[m].split("/")[0]] = max(deepest_in[folder[m].split("/")[0]], module_floor(m))
    return {"rooms": len(rooms), "floors": max(map(height, rooms)), "room_arrows": len(room_edges),
            "module_arrows": len(edges), "module_floors": dict(sorted(deepest_in.items())),
            "modules_per_folder": dict(sorted(per_folder.items()))}


if __name__ == "__main__":
    import json

    print(json.dumps(house(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT), indent=1))
