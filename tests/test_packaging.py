"""What `pip install` creates: one top-level import name, `potstill`, and a command that works in a
project that has its own `models/` and `transforms/` packages.

The wheel is built from this checkout and unpacked into a folder put first on PYTHONPATH, so the
job below runs the wheel's files, not the checkout's.
"""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out, src = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("src")
    for name in ["setup.py", "README.md"]:  # built from a copy: no build/ left in the checkout
        shutil.copy(ROOT / name, src / name)
    for folder in ["potstill", "models", "transforms", "beam_pipelines", "sql"]:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(src)], check=True, capture_output=True, cwd=out)
    return next(out.glob("potstill-*.whl"))


def test_the_wheel_installs_one_top_level_name_with_every_card_folder_inside(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"potstill"}
    for inside in ["potstill/models/teacher/hf.py", "potstill/transforms/teacher.py",
                   "potstill/beam_pipelines/cli.py", "potstill/sql/curate.sql",
                   "potstill/sql/analysis/confusion_matrix.sql", "potstill/config/core.py"]:
        assert inside in names, inside
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "potstill = potstill.beam_pipelines.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_a_project_with_its_own_models_and_transforms_runs_potstill(wheel, tmp_path, tiny_lm):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    project = tmp_path / "project"
    for own in ["models", "transforms", "sql"]:
        (project / own).mkdir(parents=True)
        (project / own / "__init__.py").write_text(f"raise ImportError('the user\\'s own {own} was imported')\n")
    (project / "u.jsonl").write_text('{"text": "a fine film"}\n{"text": "a dull film"}\n')
    (project / "config.yaml").write_text(json.dumps({
        "dataset": "toy", "output_root": "out", "task": {"labels": ["negative", "positive"]},
        "corpus": {"unlabeled": {"path": "u.jsonl"}}, "teacher": {"model": tiny_lm}}))
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
           "POTSTILL_EMBEDDING_CACHE": str(tmp_path / "cache")}

    def potstill(*args):
        return subprocess.run([sys.executable, "-m", "potstill", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=600)
    help_ = potstill("--help")
    assert help_.returncode == 0 and "run" in help_.stdout
    run = potstill("run", "config.yaml")
    assert run.returncode == 0, run.stderr[-3000:]
    version = Path(run.stdout.strip().splitlines()[-1])
    assert (version / "manifest.json").exists()
    where = subprocess.run([sys.executable, "-c", "import potstill.models.teacher.hf as m; print(m.__file__)"],
                           cwd=project, env=env, capture_output=True, text=True)
    assert where.stdout.strip().startswith(str(site)), where
