"""The analysis as named steps (bench.model.analyze): each step called on its own sets what it owns, refuses a
state an earlier step did not build, and the steps in order give exactly what ``analyze`` gives."""
from __future__ import annotations

import json
import math

import pytest

from bench.commands.overrides import compose_checked
from bench.model import analyze as AN
from tests.helpers import RUNS



@pytest.fixture(scope="module")
def cfg():
    return compose_checked(["fleet.sessions=80", "verdict.bootstrap=30"], config_name="analysis")


def test_each_step_sets_what_it_owns(cfg):
    a = AN.load(RUNS / "cpu_a", cfg)
    assert a.shape.name == "tiny" and a.costs is None and a.device == "cpu"

    a = AN.fit(a)
    assert a.costs is not None and "host" in a.tiers
    assert a.costs.prefill.rel_rms >= 0 and a.costs.decode.rel_rms >= 0
    # the decode step grows with the batch: a fit, not a constant
    assert a.costs.decode_step_s(64, 1000.0) > a.costs.decode_step_s(1, 1000.0) > 0

    a = AN.workload(a)
    assert len(a.I) == len(a.O) == len(a.c) == len(a.n) > 0
    assert (a.c <= a.I).all() and (a.n == a.I - a.c).all()  # cached tokens never exceed the input

    a = AN.fleet(a)
    assert a.g >= 1 and a.B >= 1 and a.hbm > 0 and a.weights > 0

    a = AN.simulate_caches(a)
    assert a.sims and a.pricer is not None
    for sim in a.sims.values():  # a tiered cache hits no more than the infinite one
        assert sim.hit_tokens.sum() <= a.c.sum() + 1e-9

    a = AN.price(a)
    a = AN.verdict(a)
    v = a.result["verdict"]
    assert v["outcome"] in ("supported", "not_supported", "undetermined")
    assert v["speedup"]["low"] <= v["speedup"]["point"] <= v["speedup"]["high"]
    assert v["speedup"]["point"] <= a.result["baseline"]["amdahl_bound"] + 1e-9

    a = AN.capacity(a)
    a = AN.goodput(a)
    a = AN.sparse(a)  # the recorded runs predate the warm family: the mode says why it has no figures
    assert "no warm_fetch records" in a.result["sparse_decode"]["skipped"]
    res = AN.finish(a)
    assert res["verdict"]["sentence"] and "Sparse decode" not in " ".join(res["verdict"]["details"])


def test_a_step_out_of_order_is_refused(cfg):
    a = AN.load(RUNS / "cpu_a", cfg)
    with pytest.raises((AttributeError, TypeError)):
        AN.fleet(a)  # no costs fitted yet: the fleet cannot size a decode batch


def _numbers(d, prefix=""):
    """Every number of a result (key path -> value), NaN kept comparable; the steps' own wall times left out."""
    if isinstance(d, dict):
        for k, v in d.items():
            if k != "seconds":
                yield from _numbers(v, f"{prefix}/{k}")
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _numbers(v, f"{prefix}/{i}")
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        yield prefix, ("nan" if isinstance(d, float) and math.isnan(d) else d)


def test_steps_in_order_are_the_analysis(cfg, tmp_path):
    a = AN.load(RUNS / "cpu_a", cfg)
    for step in AN.STEPS:
        a = step(a)
    stepwise = AN.finish(a)
    whole = AN.analyze(RUNS / "cpu_a", cfg)
    assert dict(_numbers(stepwise)) == dict(_numbers(whole))
    path = AN.write_model_json(whole, tmp_path / "variant")
    assert json.loads(path.read_text())["verdict"]["sentence"] == whole["verdict"]["sentence"]
