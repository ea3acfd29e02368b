"""The benchmarks: one module per measured quantity, each registering its benchmark functions with their declared
axes (bench.core.registry). This package finds them: ``load_all`` imports every module (their decorators register),
``catalog`` reads their names and docstrings without importing torch, ``select`` / ``resolve`` pick a run's, and
``validate`` checks a config with the value checks of the families a run selects."""
from __future__ import annotations

import importlib
import pkgutil

from bench.core.errors import UserError, allowed
from bench.core.registry import REGISTRY, Benchmark


def load_all() -> dict[str, Benchmark]:
    """Import every module under bench.benchmarks so that their decorators register."""
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    return REGISTRY


def catalog() -> list[dict]:
    """Every benchmark's name, family and description read from the source of bench/benchmarks/*.py (the
    ``@benchmark(name, family=...)`` decorators and the functions' docstrings) without importing it: `bench list`
    answers without torch. The same facts as load_all() (a test holds them equal)."""
    import ast
    from pathlib import Path

    out = []
    for path in sorted(Path(__path__[0]).glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and getattr(dec.func, "id", None) == "benchmark" and dec.args:
                    fam = next((k.value.value for k in dec.keywords if k.arg == "family"), None)
                    doc = (ast.get_docstring(node, clean=False) or "").strip().split("\n\n")[0]
                    out.append({"name": dec.args[0].value, "family": fam, "description": " ".join(doc.split()),
                                "module": f"{__name__}.{path.stem}"})
    return out


def families() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for b in load_all().values():
        out.setdefault(b.family, []).append(b.name)
    return out


def select(cfg) -> list[Benchmark]:
    """The benchmarks a run executes: the suite's list, limited to families whose config is loaded
    (``benchmark=`` group) and to ``only`` when given."""
    loaded = {f for f, on in (cfg.families or {}).items() if on}
    benches = [b for b in resolve(list(cfg.suite.benchmarks)) if b.family in loaded]
    if cfg.only is not None:
        wanted = resolve(cfg.only)
        missing = [b.name for b in wanted if b.family not in loaded]
        if missing:
            raise UserError(f"only={cfg.only}: {', '.join(missing)} belong to families not loaded "
                            f"(loaded: {', '.join(sorted(loaded))}); add them with benchmark=[...] or benchmark=all")
        benches = [b for b in benches if b in wanted] or wanted
    if not benches:
        raise UserError(f"nothing to run: suite {list(cfg.suite.benchmarks)} has no benchmark in the loaded "
                        f"families ({', '.join(sorted(loaded)) or 'none'})")
    return benches


def resolve(selection) -> list[Benchmark]:
    """Benchmarks named by ``selection``: benchmark names, family names or ``all``; order kept, no duplicates."""
    reg = load_all()
    fams = families()
    names: list[str] = []
    for item in ([selection] if isinstance(selection, str) else list(selection)):
        item = str(item)
        if item == "all":
            names.extend(reg)
        elif item in reg:
            names.append(item)
        elif item in fams:
            names.extend(fams[item])
        else:
            raise allowed("benchmark", item, ["all", *reg, *fams])
    return [reg[n] for n in dict.fromkeys(names)]


def validate(cfg) -> list[Benchmark]:
    """The config's value checks (bench.core.config.validate) with the checks of the families this run selects;
    returns the selected benchmarks."""
    from bench.core.config import validate as validate_config

    benches = select(cfg)
    validate_config(cfg, {b.family for b in benches})
    return benches
