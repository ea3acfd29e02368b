"""The wheel ships every package of bench/ (a package left out of pyproject breaks `pip install -e .`)."""
import tomllib

from tests.helpers import ROOT


def test_pyproject_lists_every_package():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(meta["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "bench").rglob("__init__.py")}
    assert on_disk - listed == set(), "packages missing from pyproject"
    data = {name for name in listed if name.startswith("bench._")}
    assert listed - data - on_disk == set(), "pyproject lists packages that do not exist"
