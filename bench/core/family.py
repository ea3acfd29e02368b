"""Benchmark families: a family is one registered unit (nvbandwidth's testcase, grown to a folder).

Each family is a package ``bench/benchmarks/<name>/`` whose ``__init__`` declares it (light: no torch, no
matplotlib): its config dataclass (the ``<name>:`` section of the Hydra config), the modules holding its
``@benchmark`` functions (each declaring its axes, needs and cost model beside its body) and value checks
(``@validator``), and its plots with the benchmarks each one draws. Everything that lists families is derived from
this registry: the root config (bench.core.config.register_schemas), ``benchmark=all``, the per-family budget checks,
the planner's cost models (declared with each benchmark) and the report's plots.

    FAMILY = family(Family("transfer", order=20, config=TransferConfig, package=__name__,
                           modules=("contiguous", "paged"),
                           plots=(Plot("bandwidth_vs_size", "Host <-> device copy bandwidth vs size",
                                       "plots:bandwidth_vs_size", reads=("h2d_pinned", ...)),),
                           unplotted={"h2d_pinned_streams": "one GB/s per stream count: the report's table"}))
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Mapping


@dataclass(frozen=True)
class Plot:
    """One picture a family draws: ``draw`` names ``fn(records_df, png_path) -> path or None`` as
    ``"module:function"`` within the family's package (imported only when drawn: matplotlib stays out of start-up);
    ``reads``: the benchmarks whose records it draws."""

    name: str
    title: str
    draw: str
    reads: tuple

    def function(self, package: str) -> Callable:
        module, _, name = self.draw.partition(":")
        return getattr(importlib.import_module(f"{package}.{module}"), name)


@dataclass(frozen=True)
class Family:
    """A benchmark family. ``order``: its place in every derived list (runs, config, report); ``config``: the
    dataclass of its config section; ``package``: its package (``__name__`` of its ``__init__``); ``modules``: the
    package's modules that register benchmarks and checks; ``unplotted``: benchmarks no plot draws, each with where
    its figure is read instead; ``budget_bytes``: the section also has a file-bytes budget (``<name>.budget_bytes``)."""

    name: str
    order: int
    config: type
    package: str
    modules: tuple
    plots: tuple = ()
    unplotted: Mapping[str, str] = field(default_factory=dict)
    budget_bytes: bool = False

    @property
    def description(self) -> str:
        """The first paragraph of the family package's docstring."""
        doc = importlib.import_module(self.package).__doc__ or ""
        return " ".join(doc.strip().split("\n\n")[0].split())

    def import_modules(self) -> None:
        for m in self.modules:
            importlib.import_module(f"{self.package}.{m}")


FAMILIES: dict[str, Family] = {}


def family(f: Family) -> Family:
    """Register ``f`` (its package's ``FAMILY``); a second family of the same name or order is refused."""
    if f.name in FAMILIES and FAMILIES[f.name] is not f:
        raise ValueError(f"family {f.name!r} registered twice")
    clash = [g.name for g in FAMILIES.values() if g.order == f.order and g.name != f.name]
    if clash:
        raise ValueError(f"family {f.name!r} has the order {f.order} of {clash[0]!r}: every family needs its own")
    FAMILIES[f.name] = f
    return f


def families() -> list[Family]:
    """The registered families in their order (bench.benchmarks.load_families registers them)."""
    return sorted(FAMILIES.values(), key=lambda f: f.order)
