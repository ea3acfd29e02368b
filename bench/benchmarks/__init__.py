"""The benchmark families, one package each (bench/benchmarks/<family>/: its declaration, config and checks, its
benchmarks with their axes, needs and cost models, its sizing rules and plots; bench.core.family). This package
finds them: ``load_families`` registers every family (light: the packages' declarations, and Hydra's schemas derived
from them), ``load_all`` imports every family's benchmark modules (their decorators register), ``catalog`` reads
the benchmarks' names and docstrings without importing torch, ``select`` / ``resolve`` pick a run's, and
``validate_run`` checks a config with the value checks of the families a run selects."""
from __future__ import annotations

import importlib
import pkgutil

from bench.core.errors import UserError, allowed
from bench.core.family import FAMILIES
from bench.core.family import families as registered
from bench.core.registry import REGISTRY, Benchmark


def load_families() -> list:
    """Register every family (each subpackage's ``FAMILY``) and Hydra's schemas derived from them (the root config,
    ``benchmark=all``); returns the families in their order."""
    for mod in pkgutil.iter_modules(__path__):
        if mod.ispkg:
            importlib.import_module(f"{__name__}.{mod.name}")
    from bench.core.config import register_schemas

    fams = registered()
    register_schemas(fams)
    return fams


def load_all() -> dict[str, Benchmark]:
    """Import every family's benchmark modules so that their decorators register; the registry in run order
    (families in their order, each family's benchmarks as its modules define them)."""
    fams = load_families()
    for f in fams:
        f.import_modules()
    if list(REGISTRY) != sorted(REGISTRY, key=_run_order(fams)):
        ordered = sorted(REGISTRY.items(), key=lambda kv: _run_order(fams)(kv[0]))
        REGISTRY.clear()
        REGISTRY.update(ordered)
    return REGISTRY


def _run_order(fams):
    rank = {f.name: i for i, f in enumerate(fams)}
    seen = {name: i for i, name in enumerate(REGISTRY)}
    return lambda name: (rank.get(REGISTRY[name].family, len(rank)), seen[name])


def catalog() -> list[dict]:
    """Every benchmark's name, family and description read from the source of bench/benchmarks/<family>/*.py (the
    ``@benchmark(name, family=...)`` decorators and the functions' docstrings) without importing it: `bench list`
    answers without torch. The same facts as load_all() (a test holds them equal)."""
    import ast
    from pathlib import Path

    out = []
    for path in sorted(Path(__path__[0]).glob("*/*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and getattr(dec.func, "id", None) == "benchmark" and dec.args:
                    fam = next((k.value.value for k in dec.keywords if k.arg == "family"), None)
                    doc = (ast.get_docstring(node, clean=False) or "").strip().split("\n\n")[0]
                    out.append({"name": dec.args[0].value, "family": fam, "description": " ".join(doc.split()),
                                "module": f"{__name__}.{path.parent.name}.{path.stem}"})
    return out


def families() -> dict[str, list[str]]:
    """{family: [its benchmarks in run order]}."""
    out: dict[str, list[str]] = {f: [] for f in FAMILIES}
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


def validate_run(cfg) -> list[Benchmark]:
    """The config's value checks (bench.core.config.validate) with the checks of the families this run selects;
    returns the selected benchmarks."""
    from bench.core.config import validate as validate_config

    benches = select(cfg)
    validate_config(cfg, {b.family for b in benches})
    return benches


load_families()  # Hydra's root config exists once this package is imported (commands compose through it)
