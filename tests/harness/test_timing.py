import time

import pytest

from bench.harness.timing import HostClock, StoppingRule, measure, relative_iqr, summarize


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_spin_workload_median_matches_known_duration():
    rule = StoppingRule(min_samples=10, max_samples=200, noise_target=0.05, time_budget_s=1.0)
    st = measure(lambda: spin(0.002), HostClock(), rule, warmup_s=0.01)
    assert st.median_s == pytest.approx(0.002, rel=0.15)
    assert st.min_s <= st.p10_s <= st.median_s <= st.p90_s
    assert st.n >= 10 and st.inner == 1 and st.warmup_calls >= 2


def test_sleep_workload_never_reports_less_than_slept():
    rule = StoppingRule(min_samples=5, max_samples=30, noise_target=0.2, time_budget_s=0.5)
    st = measure(lambda: time.sleep(0.005), HostClock(), rule, warmup_s=0.0)
    assert st.min_s >= 0.005
    assert st.median_s < 0.05


def test_tiny_calls_are_batched_into_resolvable_samples():
    st = measure(lambda: None, HostClock(), StoppingRule(3, 20, 0.5, 0.2), warmup_s=0.0)
    assert st.inner > 1  # one empty call is far below the clock's useful resolution
    assert st.median_s < 1e-5


def test_stopping_rule_converges_on_quiet_samples_at_min_samples():
    rule = StoppingRule(min_samples=5, max_samples=100, noise_target=0.02, time_budget_s=10)
    samples = [1.0] * 4
    assert rule.check(samples, 0.1) is None
    assert rule.check(samples + [1.0], 0.1) == ("noise_target", True)


def test_stopping_rule_gives_up_on_noise_with_converged_false():
    rule = StoppingRule(min_samples=5, max_samples=8, noise_target=0.02, time_budget_s=10)
    noisy = [1.0, 2.0, 1.0, 3.0, 1.0, 2.0, 1.0]
    assert rule.check(noisy, 0.1) is None
    assert rule.check(noisy + [2.5], 0.1) == ("max_samples", False)
    assert StoppingRule(5, 100, 0.02, 0.5).check(noisy, 0.6) == ("time_budget", False)


def test_measure_stops_on_time_budget_for_noisy_workload():
    i = iter(range(10**9))
    rule = StoppingRule(min_samples=5, max_samples=10**6, noise_target=0.001, time_budget_s=0.3)
    t0 = time.perf_counter()
    st = measure(lambda: spin(0.0005 * (1 + next(i) % 3)), HostClock(), rule, warmup_s=0.0)
    assert time.perf_counter() - t0 < 2.0
    assert st.stop_reason == "time_budget" and not st.converged


def test_summary_quantiles():
    st = summarize([float(x) for x in range(1, 101)], 1, "noise_target", True, 2)
    assert st.median_s == pytest.approx(50.5)
    assert st.p10_s == pytest.approx(10.9)
    assert st.p90_s == pytest.approx(90.1)
    assert relative_iqr([1.0]) == float("inf")


def test_prepare_runs_before_every_sample_untimed():
    calls = {"prep": 0, "fn": 0}

    def prep():
        calls["prep"] += 1
        spin(0.003)  # must not show up in the samples

    def fn():
        calls["fn"] += 1
        spin(0.001)

    st = measure(fn, HostClock(), StoppingRule(5, 10, 0.5, 1.0), warmup_s=0.0, prepare=prep)
    assert st.inner == 1
    assert calls["prep"] == calls["fn"] == st.n + st.warmup_calls
    assert st.median_s < 0.0025


def test_stream_hold_spin_grows_with_enqueue_time_and_is_bounded():
    from bench.harness.timing import next_spin

    assert next_spin(50_000, 1e-6) == 50_000             # 2 us to queue behind a 25 us spin: keep it
    assert next_spin(50_000, 1e-3) == 8_000_000          # 1 ms to queue: 4x that (at ~2 GHz)
    assert next_spin(50_000, 1.0) == 100_000_000         # never more than ~50 ms
