"""The tiered cache simulator against a plain OrderedDict LRU: random traces with repeated ids (inside a request and
across requests), many capacities and tier mixes (absent tiers included), routing; the all-capacity pass against
the fixed-capacity replay; sampled mode against exact."""
from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from bench import conf_dir
from bench.model.cachesim import Curves, Trace, reuse_times, simulate, simulate_reference
from bench.model.workload import Request, Workload


def random_requests(seed: int, n: int = 120, universe: int = 60, bt: int = 16) -> list:
    """Requests over a small id universe: prefixes shared between requests, ids repeated inside a request, partial
    last blocks, answers that complete blocks, sessions."""
    rng = np.random.default_rng(seed)
    reqs = []
    for i in range(n):
        k = int(rng.integers(1, 12))
        if rng.random() < 0.5 and reqs:  # extend an earlier request's blocks (a shared prefix)
            base = list(reqs[int(rng.integers(len(reqs)))].hash_ids)
            ids = base[:int(rng.integers(0, len(base) + 1))] + [int(x) for x in rng.integers(0, universe, k)]
        else:
            ids = [int(x) for x in rng.integers(0, universe, k)]
        if rng.random() < 0.3:  # an id listed twice
            ids.insert(int(rng.integers(0, len(ids) + 1)), ids[int(rng.integers(len(ids)))])
        ids = ids[:20] or [int(rng.integers(universe))]
        inp = (len(ids) - 1) * bt + int(rng.integers(1, bt + 1))
        outs = [int(x) for x in rng.integers(0, universe, int(rng.integers(0, 3)))]
        reqs.append(Request(float(i), inp, 4, ids, int(rng.integers(0, 5)), outs))
    return reqs


CAPS = [(3, 0, 0), (5, 7, 0), (4, 0, 9), (2, 3, 4), (1, 1, 1), (0, 6, 5), (0, 0, 8), (30, 20, 10), (10**6, 0, 0),
        (8, 16, 32)]


@pytest.mark.parametrize("seed", range(6))
def test_replay_equals_ordereddict_lru_on_random_traces_with_repeats(seed):
    reqs = random_requests(seed)
    tr = Trace.from_requests(reqs)
    for caps in CAPS:
        hits, miss = simulate_reference(reqs, 16, caps)
        r = simulate(tr, 16, caps)
        assert np.array_equal(r.hit_tokens, hits), (seed, caps)
        assert np.array_equal(r.miss_tokens, miss), (seed, caps)
        assert (r.hit_tokens.sum(axis=1) + r.miss_tokens == [q.input_length for q in reqs]).all()


def test_the_repeated_id_case_of_the_issue():
    """HBM of 2 blocks, requests [A, A], [B], [A]: the third hits A (was 0 hit tokens)."""
    reqs = [Request(0, 1024, 0, [1, 1], 0, []), Request(1, 512, 0, [2], 0, []), Request(2, 512, 0, [1], 0, [])]
    r = simulate(Trace.from_requests(reqs), 512, (2, 0, 0))
    assert r.hit_tokens[:, 0].tolist() == [0, 0, 512]
    assert simulate_reference(reqs, 512, (2, 0, 0))[0][:, 0].tolist() == [0, 0, 512]


@pytest.mark.parametrize("routing", ["round_robin", "session", "prefix"])
def test_each_instance_is_the_reference_lru_of_its_requests(routing):
    reqs = random_requests(11, n=200)
    tr = Trace.from_requests(reqs)
    for caps in [(4, 3, 2), (6, 0, 10)]:
        r = simulate(tr, 16, caps, instances=3, routing=routing)
        for k in range(3):
            mine = [q for q, i in zip(reqs, r.instance) if i == k]
            if not mine:
                continue
            hits, miss = simulate_reference(mine, 16, caps)
            sel = r.instance == k
            assert np.array_equal(r.hit_tokens[sel], hits) and np.array_equal(r.miss_tokens[sel], miss), (routing, k)


@pytest.mark.parametrize("routing", ["round_robin", "session", "prefix"])
def test_all_capacity_pass_equals_the_fixed_replay(routing):
    """One pass of stack distances gives, for any capacities, the fixed replay's integer hit counts (the routing's
    assignment taken from a replay: exact for every capacity under round_robin and session, at the replay's own
    capacities under prefix routing, whose decisions depend on what is cached)."""
    for seed in (1, 2):
        tr = Trace.from_requests(random_requests(seed, n=150))
        ref = simulate(tr, 16, (5, 5, 5), instances=3, routing=routing)
        cv = Curves(tr, 16, ref.instance, 3, routing)
        caps_list = CAPS if routing != "prefix" else [(5, 5, 5)]
        for caps in caps_list:
            fixed = simulate(tr, 16, caps, instances=3, routing=routing)
            got = cv.at(caps)
            assert np.array_equal(got.hit_tokens, fixed.hit_tokens), (seed, caps)
            assert np.array_equal(got.miss_tokens, fixed.miss_tokens), (seed, caps)


def agentic():
    return Workload.from_cfg(OmegaConf.load(conf_dir() / "workload" / "agentic_coding.yaml"))


def test_sampled_mode_is_within_half_a_point_of_exact():
    """Sampled mode replays a quarter of the instances with their whole load: every tier's hit rate within 0.5
    percentage points of the exact pass over a capacity grid, for session and round-robin routing, on an agentic
    trace large enough to sample (8,000 sessions, ~300k requests); it reports its own standard error."""
    from bench.model.workload import generate_trace

    tr = generate_trace(agentic(), 8000, 512, seed=4)
    for routing in ("session", "round_robin"):
        ref = simulate(tr, 512, (2000, 0, 0), 8, routing)
        exact = Curves(tr, 512, ref.instance, 8, routing)
        sampled = Curves(tr, 512, ref.instance, 8, routing, rate=0.25)
        assert sampled.sampled and len(sampled.kept_instances) == 2
        worst = 0.0
        for caps in [(2000, 0, 0), (5000, 10000, 0), (1000, 2000, 40000), (20000, 0, 0), (500, 500, 500),
                     (3000, 0, 0), (4000, 0, 0)]:
            e, res = exact.at(caps).rates(), sampled.at(caps)
            s = res.rates()
            worst = max(worst, *(abs(e[k] - s[k]) for k in e))
            assert np.isfinite(sampled.stderr(res)["hit_rate"])
        assert worst < 0.005, (routing, worst)


def test_reuse_times_from_timestamps():
    """A block reused 5 and then 60 minutes later: the reuse times are those (in minutes), and the share kept
    grows with the time a block is kept."""
    m = 60e3
    reqs = [Request(0.0, 32, 1, [1, 2], 0, []), Request(5 * m, 48, 1, [1, 2, 3], 0, []),
            Request(65 * m, 16, 1, [1], 0, [])]
    tr = Trace.from_requests(reqs)
    res = reuse_times(tr, np.zeros(3, int), 1, shares=(0.5, 1.0))
    assert res["hits"] == 3  # blocks 1 and 2 at 5 min, block 1 at 60 min
    assert res["minutes"] == pytest.approx([5.0, 60.0])
    assert res["cdf"]["share"][-1] == 1.0


def test_requests_replay_in_timestamp_order():
    a = Request(10.0, 16, 0, [1], 0, [])
    b = Request(5.0, 16, 0, [1], 0, [])
    tr = Trace.from_requests([a, b])
    assert tr.timestamp_ms.tolist() == [5.0, 10.0]
    r = simulate(tr, 16, (4, 0, 0))
    assert r.hit_tokens[:, 0].tolist() == [0, 16]


def test_the_capacity_curve_in_one_pass_equals_a_replay_at_each_capacity():
    """Curves.hit_tokens (every capacity in one pass over the stack distances) gives exactly the hit tokens of
    at() (one classification per capacity), also at capacities between the grid's."""
    from bench.model.workload import generate_trace

    tr = generate_trace(agentic(), 300, 512, seed=11)
    res = simulate(tr, 512, (500, 0, 0), 3, "session")
    cv = Curves(tr, 512, res.instance, 3, "session")
    caps = [0, 1, 7, 64, 300, 1001, 5000, tr.n_unique + 1]
    assert cv.hit_tokens(caps).tolist() == [int(cv.at((c, 0, 0)).hit_tokens.sum()) for c in caps]
    assert cv.hit_tokens(caps[::-1]).tolist() == cv.hit_tokens(caps).tolist()[::-1]
