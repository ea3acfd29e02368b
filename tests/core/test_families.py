"""A benchmark family is one registered unit (bench.core.family): every benchmark belongs to a registered family,
has a cost model and a plot owner (or says where its figure is read instead); the root config, benchmark=all, the
report's plots and the budget checks all come from the registry."""
from __future__ import annotations

from dataclasses import fields

import pytest

from bench.benchmarks import load_all, load_families
from bench.core.checks import CHECKS
from bench.core.family import Family, families
from bench.core.registry import benchmark


def test_every_benchmark_has_a_family_a_cost_model_and_a_plot_owner():
    reg = load_all()
    fams = {f.name: f for f in families()}
    assert {b.family for b in reg.values()} <= set(fams)
    assert all(callable(b.cost) for b in reg.values()), [b.name for b in reg.values() if not callable(b.cost)]
    drawn = {b for f in fams.values() for p in f.plots for b in p.reads}
    unplotted = {b for f in fams.values() for b in f.unplotted}
    assert drawn.isdisjoint(unplotted), drawn & unplotted
    assert set(reg) == drawn | unplotted, ("no plot owner", set(reg) - drawn - unplotted,
                                           "owned but not registered", (drawn | unplotted) - set(reg))
    assert all(reason.strip() for f in fams.values() for reason in f.unplotted.values())
    for f in fams.values():  # every plot's function exists
        for p in f.plots:
            assert callable(p.function(f.package)), p.name
    assert {name for name, _ in CHECKS} == set(fams), "a family without value checks"


def test_root_config_all_and_plots_come_from_the_registry():
    from bench.commands.overrides import compose_checked
    from bench.report.html import plots

    fams = load_families()
    cfg = compose_checked([])
    assert list(cfg.families) == [f.name for f in fams]  # benchmark=all: every family, in their order
    for f in fams:
        assert set(cfg[f.name]) == {fl.name for fl in fields(f.config)}
    assert [name for name, _, _ in plots()] == [p.name for f in fams for p in f.plots]


def test_a_benchmark_of_an_unknown_family_or_without_a_cost_model_is_refused_at_import():
    with pytest.raises(ValueError, match="family 'tranfser' is not registered"):
        benchmark("x", family="tranfser", cost=lambda c: None, axes=lambda c: {})
    with pytest.raises(TypeError):
        benchmark("x", family="transfer", axes=lambda c: {})  # cost is required
    with pytest.raises(ValueError, match="has the order"):
        from bench.core.family import family
        family(Family("clash", order=families()[0].order, config=object, package="x", modules=()))


def test_a_family_budget_is_checked_by_name_from_the_registry():
    from bench.commands.overrides import compose_checked
    from bench.core.errors import UserError

    for f in load_families():
        with pytest.raises(UserError, match=rf"{f.name}\.budget_s=-1"):
            load_all()
            from bench.benchmarks import validate_run
            validate_run(compose_checked([f"{f.name}.budget_s=-1"]))
