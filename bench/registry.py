"""Benchmark registry: a benchmark is a function of a :class:`bench.harness.State` plus declared axes.

    @benchmark("h2d_pinned", family="transfer", axes=lambda c: {"size_bytes": c.transfer.sizes})
    def h2d_pinned(state): ...

``axes`` maps the resolved Hydra config to ``{axis: [values]}`` (the harness sweeps the cartesian product) or
to an explicit list of parameter dicts. ``supports(device)`` returns None when the benchmark can run on that
device, else the reason it cannot (recorded as a skipped point, nvbandwidth's ``filter()``).
"""
from __future__ import annotations

import importlib
import itertools
import pkgutil
from dataclasses import dataclass
from typing import Callable, Optional

from bench.errors import UserError, allowed


@dataclass(frozen=True)
class Benchmark:
    name: str
    family: str
    fn: Callable
    axes: Callable
    description: str
    supports: Callable

    def points(self, cfg) -> list[dict]:
        spec = self.axes(cfg)
        if isinstance(spec, list):
            return [dict(p) for p in spec]
        keys = list(spec)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(list(spec[k]) for k in keys))]


REGISTRY: dict[str, Benchmark] = {}


def _any_device(device) -> Optional[str]:
    return None


def benchmark(name: str, *, family: str, axes: Callable, supports: Callable = _any_device):
    """Register ``fn`` under ``name``; its docstring's first paragraph is the description."""

    def wrap(fn):
        if name in REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().split("\n\n")[0]
        REGISTRY[name] = Benchmark(name, family, fn, axes, " ".join(doc.split()), supports)
        return fn

    return wrap


def load_all() -> dict[str, Benchmark]:
    """Import every module under bench.benchmarks so that their decorators register."""
    import bench.benchmarks as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")
    return REGISTRY


def catalog() -> list[dict]:
    """Every benchmark's name, family and description read from the source of bench/benchmarks/*.py (the
    ``@benchmark(name, family=...)`` decorators and the functions' docstrings) without importing it: `bench list`
    answers without torch. The same facts as load_all() (a test holds them equal)."""
    import ast
    from pathlib import Path

    import bench.benchmarks as pkg

    out = []
    for path in sorted(Path(pkg.__path__[0]).glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and getattr(dec.func, "id", None) == "benchmark" and dec.args:
                    fam = next((k.value.value for k in dec.keywords if k.arg == "family"), None)
                    doc = (ast.get_docstring(node, clean=False) or "").strip().split("\n\n")[0]
                    out.append({"name": dec.args[0].value, "family": fam, "description": " ".join(doc.split()),
                                "module": f"bench.benchmarks.{path.stem}"})
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
