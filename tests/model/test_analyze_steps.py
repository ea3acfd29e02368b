"""The analysis as named steps (bench.model.analyze): each step called on its own sets what it owns, refuses a
state an earlier step did not build, and the steps in order give exactly what ``analyze`` gives."""
from __future__ import annotations

import dataclasses
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
    assert a.inputs.shape.name == "tiny" and a.fitted is None and a.inputs.device == "cpu"

    b = AN.fit(a)
    assert a.fitted is None, "a step returns a new analysis, never changes the one it was given"
    costs = b.fitted.costs
    assert "host" in b.fitted.tiers and costs.prefill.rel_rms >= 0 and costs.decode.rel_rms >= 0
    # the decode step grows with the batch: a fit, not a constant
    assert costs.decode_step_s(64, 1000.0) > costs.decode_step_s(1, 1000.0) > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.fitted.costs = None  # the steps' results are frozen

    a = AN.workload(b)
    r = a.requests
    assert len(r.input_tokens) == len(r.output_tokens) == len(r.reused_tokens) == len(r.new_tokens) > 0
    assert (r.reused_tokens <= r.input_tokens).all()  # cached tokens never exceed the input
    assert (r.new_tokens == r.input_tokens - r.reused_tokens).all()

    a = AN.fleet(a)
    sz = a.sizing
    assert sz.gpus_per_instance >= 1 and sz.decode_batch >= 1 and sz.hbm_bytes_per_gpu > 0 and sz.weight_bytes > 0

    a = AN.simulate_caches(a)
    sc = a.scenario
    assert sc.sims_by_routing and sc.pricer is not None and sc.verdict_tier == list(sc.scenario_capacities)[-1]
    for sim in sc.sims_by_routing.values():  # a tiered cache hits no more than the infinite one
        assert sim.hit_tokens.sum() <= r.reused_tokens.sum() + 1e-9

    a = AN.price(a)
    a = AN.handoff(a)
    lat = a.latencies
    assert set(lat.prefill_s) == set(lat.handoff_exposed_s) == {"none", *sc.tier_sims}
    assert all(len(v) == len(r.input_tokens) and (v >= 0).all() for v in lat.handoff_exposed_s.values())
    assert a.result["handoff"]["mode"] == "full" and not a.result["handoff"]["cost"]["measured"]  # no records: estimate
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
