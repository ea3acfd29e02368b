"""Goodput at a latency SLO: the discrete-event replay against a step-by-step reference and queueing theory, the
rate/split search against the fluid fleet arithmetic, and the SLO in `bench model`."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from bench.model import fleet as F
from bench.model import goodput as G


INF = math.inf


def ref_decode(ready, out, ctx0, K, B, c, prefill=None, stretch=1.0):
    """Step by step, one event at a time (plain Python): disaggregated decode when ``prefill`` is None, else
    colocated (an instance runs a waiting prefill whenever it has a free slot). Returns (first, last)."""
    n = len(ready)
    order = sorted(range(n), key=lambda i: (ready[i], i))
    first, last = list(ready), list(ready)
    act = [[] for _ in range(K)]  # [request, tokens left, context]
    end = [INF] * K
    pend = [None] * K
    queue, ai = [], 0
    step = lambda k: (c[0] + c[1] * len(act[k]) + c[2] * sum(a[2] for a in act[k])) * stretch  # noqa: E731

    def schedule(k, now):
        if prefill is not None and queue and len(act[k]) < B:
            pend[k] = queue.pop(0)
            end[k] = now + prefill[pend[k]] * stretch
            return
        if prefill is None:
            while queue and len(act[k]) < B:
                r = queue.pop(0)
                act[k].append([r, out[r] - 1, ctx0[r]])
        end[k] = now + step(k) if act[k] else INF

    while True:
        j = min(range(K), key=lambda k: (end[k], k))
        t_arr = ready[order[ai]] if ai < n else INF
        if t_arr == INF and end[j] == INF:
            break
        if t_arr <= end[j]:
            r = order[ai]
            ai += 1
            if prefill is not None or out[r] > 1:
                queue.append(r)
            for k in range(K):
                if end[k] == INF and queue:
                    schedule(k, t_arr)
                    break
            continue
        now = end[j]
        if pend[j] is not None:
            r, pend[j] = pend[j], None
            first[r] = last[r] = now
            if out[r] > 1:
                act[j].append([r, out[r] - 1, ctx0[r]])
        else:
            for a in act[j]:
                a[1] -= 1
                a[2] += 1
            for a in [a for a in act[j] if a[1] == 0]:
                last[a[0]] = now
            act[j] = [a for a in act[j] if a[1] > 0]
        schedule(j, now)
    return np.array(first), np.array(last)


@pytest.mark.parametrize("seed,K,B", [(0, 1, 1), (1, 2, 3), (2, 3, 4), (3, 2, 8), (4, 4, 2)])
def test_decode_replay_matches_a_step_by_step_reference(seed, K, B):
    """Runs of steps advanced in one go give every last token exactly where one step at a time puts it."""
    rng = np.random.default_rng(seed)
    n = 60
    ready = np.sort(rng.exponential(0.05, n).cumsum())
    out = rng.integers(1, 30, n)
    ctx0 = rng.integers(10, 500, n).astype(float)
    c = (2e-3, 1e-4, 3e-6)
    last = G.decode_pool(ready, out, ctx0, K, B, *c)
    _, ref = ref_decode(ready, out, ctx0, K, B, c)
    np.testing.assert_allclose(last, ref, rtol=1e-9, atol=1e-12)
    assert (last[out > 1] > ready[out > 1]).all() and (last[out == 1] == ready[out == 1]).all()


@pytest.mark.parametrize("seed,K,B,stretch", [(0, 1, 2, 1.0), (1, 2, 3, 1.25), (2, 3, 1, 1.0)])
def test_colocated_replay_matches_a_step_by_step_reference(seed, K, B, stretch):
    rng = np.random.default_rng(seed)
    n = 50
    arr = np.sort(rng.exponential(0.08, n).cumsum())
    out = rng.integers(1, 25, n)
    ctx0 = rng.integers(10, 400, n).astype(float)
    service = rng.uniform(0.01, 0.1, n)
    c = (2e-3, 1e-4, 3e-6)
    first, last = G.colocated_pool(arr, service, out, ctx0, K, B, tuple(c), stretch)
    rf, rl = ref_decode(arr, out, ctx0, K, B, c, prefill=service, stretch=stretch)
    np.testing.assert_allclose(first, rf, rtol=1e-9)
    np.testing.assert_allclose(last, rl, rtol=1e-9)


def test_prefill_queue_follows_queueing_theory():
    """One prefill instance, Poisson arrivals, fixed service: the mean wait is M/D/1's rho s / (2 (1 - rho))."""
    n, s, rho = 200_000, 0.01, 0.7
    arr = np.random.default_rng(0).exponential(s / rho, n).cumsum()
    finish = G.prefill_pool(arr, np.full(n, s), 1)
    wait = float(np.mean(finish - arr - s))
    assert wait == pytest.approx(rho * s / (2 * (1 - rho)), rel=0.05)


def _pool(**kw):
    base = dict(gpus=16, gpus_per_instance=1, mode="disaggregated", batch=32, step_coef=(0.01, 2e-4, 1e-7),
                ttft_s=None, tpot_s=None, attainment=0.9)
    return G.Pool(**{**base, **kw})


def _reqs(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return G.Requests.build(rng.integers(1000, 8000, n).astype(float), rng.integers(20, 200, n), seed=seed), rng


def _d(reqs, pool):
    b = pool.batch
    c0, c1, c2 = pool.step_coef
    return float(np.mean(reqs.out_tokens * (c0 + c1 * b + c2 * b * (reqs.ctx0 + reqs.out_tokens / 2)) / b))


def test_loose_slo_gives_the_unconstrained_throughput():
    reqs, rng = _reqs()
    pf = rng.uniform(0.05, 0.4, reqs.out_tokens.size)
    for mode in ("disaggregated", "colocated"):
        pool = _pool(ttft_s=1e6, tpot_s=1e6, mode=mode)
        d = _d(reqs, pool)
        res = G.search("x", G.Replay(reqs, pf, pool), float(pf.mean()), d)
        want = F.best_split(16, float(pf.mean()), d).requests_per_s if mode == "disaggregated" else \
            F.colocated_rate(16, float(pf.mean()), d)
        assert res.goodput == pytest.approx(want, rel=1e-12) and res.capacity == pytest.approx(want, rel=1e-12)
        assert res.at_goodput.both_ok == 1.0


def test_a_ttft_below_the_prefill_time_needs_reuse():
    """No reuse: every prefill alone takes longer than the TTFT target, so goodput is zero; with reuse the
    prefills are short enough and goodput is positive, below the capacity (queueing costs some)."""
    reqs, rng = _reqs()
    n = reqs.out_tokens.size
    full = rng.uniform(1.0, 2.0, n)
    reused = full * 0.1
    pool = _pool(ttft_s=0.5, tpot_s=0.2)
    d = _d(reqs, pool)
    none = G.search("none", G.Replay(reqs, full, pool), float(full.mean()), d)
    hbm = G.search("hbm", G.Replay(reqs, reused, pool), float(reused.mean()), d)
    assert none.goodput == 0 and "TTFT target" in none.reason
    assert 0 < hbm.goodput <= hbm.capacity
    o = hbm.at_goodput
    assert o.both_ok >= 0.9 and o.ttft_ok >= 0.9
    # just above the goodput the SLO is missed (the search stopped at the edge)
    rp = G.Replay(reqs, reused, pool)
    over = rp.run(hbm.goodput * 1.05, hbm.prefill_instances)
    assert over.both_ok < 0.9 or hbm.goodput * 1.05 > hbm.capacity


def test_seed_2x_holds_at_a_loose_slo():
    """The seed's arithmetic: 50:50 with equal prefill and decode GPU-seconds, then every prefill removed."""
    reqs, _ = _reqs()
    pool = _pool(ttft_s=1e6, tpot_s=1e6)
    d = _d(reqs, pool)
    n = reqs.out_tokens.size
    base = G.search("none", G.Replay(reqs, np.full(n, d), _pool(ttft_s=1e6, tpot_s=1e6, prefill_fraction=0.5)),
                    d, d)
    reuse = G.search("hbm", G.Replay(reqs, np.zeros(n), pool), 0.0, d)
    assert reuse.prefill_instances == 0
    assert reuse.goodput / base.goodput == pytest.approx(2.0, rel=1e-9)


def test_tpot_target_limits_the_decode_batch_and_goodput():
    reqs, rng = _reqs()
    pf = rng.uniform(0.05, 0.2, reqs.out_tokens.size)
    loose = G.search("x", G.Replay(reqs, pf, _pool(tpot_s=1.0)), float(pf.mean()), _d(reqs, _pool()))
    tight = G.search("x", G.Replay(reqs, pf, _pool(tpot_s=0.02)), float(pf.mean()), _d(reqs, _pool()))
    assert tight.goodput < loose.goodput
    assert tight.at_goodput is None or tight.at_goodput.tpot_ok >= 0.9


def test_trace_arrivals_keep_their_bursts():
    ts = np.array([0.0, 0.0, 0.0, 10.0, 10.0, 20.0])
    r = G.Requests.build(np.ones(6) * 100, np.ones(6, int) * 5, timestamps_s=ts)
    assert np.allclose(r.unit_arrival, [0, 0, 0, 2.5, 2.5, 5.0]) and "timestamps" in r.arrivals_from
    with pytest.raises(ValueError):
        G.Requests.build(np.ones(3), np.ones(3, int), timestamps_s=np.array([0.0, 2.0, 1.0]))


# -- through `bench model` ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    """A recorded CPU run of the suite (tiny model: transfer, storage, layers), see tests/data/runs."""
    import shutil

    from tests.helpers import ROOT

    dst = tmp_path_factory.mktemp("grun") / "cpu_a"
    shutil.copytree(ROOT / "tests" / "data" / "runs" / "cpu_a", dst)
    return dst


def _model(run, tmp_path, *over):
    out = tmp_path / ("m" + str(abs(hash(over)) % 10**8))
    p = subprocess.run([sys.executable, "-m", "bench", "model", str(run), "fleet.sessions=60", "verdict.bootstrap=20",
                        f"out={out}", *over], capture_output=True, text=True, timeout=600)
    return p, out


def test_model_prints_goodput_and_the_verdict_at_the_slo(model_run, tmp_path):
    p, out = _model(model_run, tmp_path)
    assert p.returncode == 0, p.stderr
    r = json.loads((out / "model.json").read_text())
    gp = r["goodput"]
    assert gp["targets"]["ttft_ms"] == 6000 and "MLPerf" in gp["targets"]["ttft_ms_from"]
    assert set(gp["configs"]) >= {"none", "hbm", "host"}
    assert "goodput" in p.stdout and "SLO" in r["verdict"]["sentence"]
    assert (out / "goodput.png").is_file()
    # loose targets: goodput is the unconstrained rate of each configuration
    p, out = _model(model_run, tmp_path, "fleet.ttft_ms=1e9", "fleet.tpot_ms=1e9", "plots=false")
    assert p.returncode == 0, p.stderr
    r = json.loads((out / "model.json").read_text())
    base = r["baseline"]["requests_per_s"]
    for k, c in r["goodput"]["configs"].items():
        want = base if k == "none" else r["verdict"]["tiers"][k]["speedup"] * base
        assert c["goodput_rps"] == pytest.approx(want, rel=1e-9)
    # a TTFT target below the unloaded no-reuse prefill: no goodput without reuse, some with it
    q0 = r["goodput"]["ttft_by_hit_rate"]["hbm"]["ttft_quantile_s"][0]
    p, out = _model(model_run, tmp_path, f"fleet.ttft_ms={q0 * 1e3 * 0.5:.6g}", "fleet.tpot_ms=0", "plots=false")
    assert p.returncode == 0, p.stderr
    r = json.loads((out / "model.json").read_text())
    c = r["goodput"]["configs"]
    assert c["none"]["goodput_rps"] == 0 and c["hbm"]["goodput_rps"] > 0, c


@pytest.mark.parametrize("arg,expect", [("fleet.ttft_ms=-5", "fleet.ttft_ms=-5 is not allowed"),
                                        ("fleet.slo_attainment=1.5", "fleet.slo_attainment=1.5 is not allowed"),
                                        ("fleet.slo_requests=3", "fleet.slo_requests=3 is not allowed")])
def test_bad_slo_values_get_one_line(model_run, tmp_path, arg, expect):
    p, _ = _model(model_run, tmp_path, arg)
    assert p.returncode == 2 and expect in p.stderr and "Traceback" not in p.stderr
