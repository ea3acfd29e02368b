"""The warm tier's access patterns (bench.llm.selection): what a sparse decode step selects, fetches and keeps."""
import numpy as np
import pytest

from bench.llm.selection import copy_calls, fetched_rows, parse_locality, plan_steps, runs_of


@pytest.mark.parametrize("value, parsed", [("uniform", ("uniform", 0)), ("runs_8", ("runs", 8)),
                                           ("repeat_0.6", ("repeat", 0.6)), ("repeat_0", ("repeat", 0.0))])
def test_localities_parse(value, parsed):
    assert parse_locality(value) == parsed


@pytest.mark.parametrize("value", ["random", "runs_0", "runs_", "repeat_1.5", "repeat_1", "runs_-2", ""])
def test_bad_localities_refused(value):
    with pytest.raises(ValueError, match="locality"):
        parse_locality(value)


def test_runs_of_splits_at_gaps():
    first, length, at = runs_of(np.array([3, 4, 5, 9, 11, 12]))
    assert first.tolist() == [3, 9, 11] and length.tolist() == [3, 1, 2] and at.tolist() == [0, 3, 4]
    assert [a.tolist() for a in runs_of(np.array([], dtype=np.int64))] == [[], [], []]


def test_fetched_rows_and_copy_calls():
    assert fetched_rows(100, "repeat_0.6") == 40 and fetched_rows(100, "uniform") == 100
    assert copy_calls(128, "runs_16") == 8 and copy_calls(128, "uniform") == 128 and copy_calls(100, "repeat_0.6") == 40


@pytest.mark.parametrize("locality", ["uniform", "runs_16", "repeat_0.6"])
def test_steps_select_k_distinct_rows_in_the_pool(locality):
    plan = plan_steps(4096, 256, locality, steps=5, seed=1)
    assert len(plan.steps) == 5 and len(plan.x0) == 256
    for s in plan.steps:
        assert len(s.order) == 256 and len(np.unique(s.order)) == 256
        assert s.order.min() >= 0 and s.order.max() < 4096
        assert np.all(np.diff(s.fetched) > 0), "fetched rows sorted, so adjacent rows are one copy"


def test_runs_locality_fetches_whole_runs():
    plan = plan_steps(4096, 256, "runs_16", steps=4, seed=2)
    for s in plan.steps:
        _, lengths, _ = runs_of(s.fetched)
        assert np.all(lengths % 16 == 0)  # adjacent runs may merge, never split
    assert plan.max_runs() <= 16
    assert plan_steps(4096, 256, "uniform", steps=4, seed=2).max_runs() > 100


def test_repeat_keeps_rows_of_the_previous_step_and_the_cycle_replays():
    """Step s keeps rows of step s-1 (step 0 of the warm start x0); the fetched rows are new. Replaying the cycle
    (step 0 after the last) stays correct because step 0 always keeps from x0, which never changes."""
    plan = plan_steps(8192, 200, "repeat_0.6", steps=6, seed=3)
    assert plan.n_fetch == 80 and plan.n_keep == 120
    prev = plan.x0
    for s in plan.steps:
        kept = s.order[s.n_fetch:]
        assert np.array_equal(kept, prev[s.keep_src])
        assert not np.intersect1d(s.fetched, prev).size, "a fetched row was already in HBM"
        prev = s.order


def test_plan_is_seeded():
    a, b = plan_steps(4096, 64, "uniform", 3, seed=7), plan_steps(4096, 64, "uniform", 3, seed=7)
    assert all(np.array_equal(x.order, y.order) for x, y in zip(a.steps, b.steps))
    assert not np.array_equal(a.steps[0].order, plan_steps(4096, 64, "uniform", 3, seed=8).steps[0].order)


def test_pool_too_small_and_partial_runs_refused():
    with pytest.raises(ValueError, match="over a quarter of the pool"):
        plan_steps(1000, 251, "uniform", 2, 0)
    with pytest.raises(ValueError, match="whole number of runs"):
        plan_steps(4096, 100, "runs_16", 2, 0)
