"""Value checks for `bench model` (one clear line per bad value)."""
from __future__ import annotations

from bench.core.config import check
from bench.model.cachesim import ROUTINGS
from bench.model.handoff import MODES

LOAD_COSTS = ("auto", "measured", "bandwidth")


def validate_analysis(cfg) -> None:
    f, w = cfg.fleet, cfg.workload
    check(f.gpus >= 2, "fleet.gpus", f.gpus, "an integer >= 2 (prefill and decode need a GPU each)")
    check(f.mode in ("disaggregated", "colocated"), "fleet.mode", f.mode, "disaggregated or colocated")
    if f.prefill_fraction is not None:
        check(0 < f.prefill_fraction < 1, "fleet.prefill_fraction", f.prefill_fraction, "a fraction in (0, 1) or null")
    for key in ("max_batch", "block_tokens", "sessions", "sim_instances"):
        check(f[key] >= 1, f"fleet.{key}", f[key], "an integer >= 1")
    check(0 < f.knee_gain < 1, "fleet.knee_gain", f.knee_gain, "a fraction in (0, 1) (e.g. 0.05)")
    if f.curve_sample_rate is not None:
        check(0 < f.curve_sample_rate <= 1, "fleet.curve_sample_rate", f.curve_sample_rate,
              "a fraction in (0, 1], or null for every instance (exact)")
    for key in ("reserve_fraction", "hbm_cache_fraction", "colocated_interference"):
        check(0 <= f[key] < 1, f"fleet.{key}", f[key], "a fraction in [0, 1)")
    for key in ("host_bytes_per_gpu", "storage_bytes_per_gpu"):
        check(f[key] >= 0, f"fleet.{key}", f[key], "bytes >= 0")
    for key in ("ttft_ms", "tpot_ms"):
        if f[key] is not None:
            check(f[key] >= 0 and f[key] == f[key] and f[key] != float("inf"), f"fleet.{key}", f[key],
                  "milliseconds >= 0 (0: no target), or null for the workload preset's")
        if w.get(key) is not None:
            check(w[key] >= 0, f"workload.{key}", w[key], "milliseconds >= 0 (0: no target), or null")
    check(0 < f.slo_attainment <= 1, "fleet.slo_attainment", f.slo_attainment, "a fraction in (0, 1] (e.g. 0.9)")
    if f.slo_requests is not None:
        check(f.slo_requests >= 100, "fleet.slo_requests", f.slo_requests,
              "an integer >= 100 (requests replayed per rate), or null for all")
    if f.gpus_per_instance is not None:
        check(f.gpus_per_instance >= 1, "fleet.gpus_per_instance", f.gpus_per_instance, "an integer >= 1 or null")
    check(f.handoff in MODES, "fleet.handoff", f.handoff, f"one of {', '.join(MODES)}")
    if f.handoff_block_tokens is not None:
        check(isinstance(f.handoff_block_tokens, int) and f.handoff_block_tokens >= 1, "fleet.handoff_block_tokens",
              f.handoff_block_tokens, "tokens per block: an integer >= 1, or null for the run's largest measured")
    if f.link_gbps is not None:
        check(0 < f.link_gbps < 1e5 and f.link_gbps == f.link_gbps, "fleet.link_gbps", f.link_gbps,
              "GB/s per GPU in (0, 100000), or null for the handoff's measured rate")
    check(f.load_cost in LOAD_COSTS, "fleet.load_cost", f.load_cost, f"one of {', '.join(LOAD_COSTS)}")
    check(len(f.routings) > 0, "fleet.routings", list(f.routings), f"at least one of {', '.join(ROUTINGS)}")
    for r in f.routings:
        check(r in ROUTINGS, "fleet.routings", r, f"each one of {', '.join(ROUTINGS)}")
    for key in ("shared_prefix_tokens", "session_context_tokens"):
        check(w[key] >= 0, f"workload.{key}", w[key], "tokens >= 0")
    for key in ("turns", "new_tokens", "output_tokens"):
        check(w[key] >= 1, f"workload.{key}", w[key], "an integer >= 1")
    check(w.spread >= 0, "workload.spread", w.spread, ">= 0")
    check(w.max_context_tokens >= 1, "workload.max_context_tokens", w.max_context_tokens, "tokens >= 1")
    v = cfg.verdict
    check(v.claim > 1, "verdict.claim", v.claim, "a speedup > 1 (e.g. 2.0)")
    check(0.5 <= v.interval < 1, "verdict.interval", v.interval, "a probability in [0.5, 1) (e.g. 0.9)")
    check(v.bootstrap >= 20, "verdict.bootstrap", v.bootstrap, "an integer >= 20")
    check(v.max_extrapolation >= 1, "verdict.max_extrapolation", v.max_extrapolation, "a factor >= 1")
    sp = cfg.sparse
    check(len(sp.top_k) > 0, "sparse.top_k", list(sp.top_k), "at least one k (rows per layer per step)")
    for k in sp.top_k:
        check(isinstance(k, int) and not isinstance(k, bool) and k >= 1, "sparse.top_k", k, "integers >= 1")
    check(0 <= sp.repeat_fraction < 1, "sparse.repeat_fraction", sp.repeat_fraction, "a fraction in [0, 1)")
    check(sp.local_tokens >= 0, "sparse.local_tokens", sp.local_tokens, "tokens >= 0")
    if cfg.get("users") is not None:
        check(isinstance(cfg.users, int) and cfg.users >= 1, "users", cfg.users,
              "concurrent users: an integer >= 1, or null for the trace's own timeline")
    if cfg.get("trace_format") is not None:
        from bench.model.traces import FORMATS

        check(cfg.trace_format in FORMATS, "trace_format", cfg.trace_format, f"one of {', '.join(FORMATS)}")
    if not cfg.trace:
        check_sessions_fit(cfg)
    if cfg.hit_rate is not None:
        check(0 <= cfg.hit_rate <= 1, "hit_rate", cfg.hit_rate, "a fraction in [0, 1] (or null for the workload's)")


BYTES_PER_BLOCK_ID = 120  # a block id in the generated requests (Python int in a list) and the simulator's arrays


def check_sessions_fit(cfg) -> None:
    """fleet.sessions must fit in memory: generated requests hold one id per block of every turn's input, so
    the footprint grows with sessions x turns x context. Refused with the limit, before anything is generated."""
    from bench.hw.fingerprint import _meminfo_available
    from bench.llm.workload import Workload

    w = Workload.from_cfg(cfg.workload)
    bt = max(1, int(cfg.fleet.block_tokens))
    per_session = sum(-(-min(c + n, w.max_context_tokens) // bt) for c, n, _ in w.turn_shapes()) * BYTES_PER_BLOCK_ID
    avail = _meminfo_available()
    if avail is None:
        return
    limit = int(avail * 0.5 // max(per_session, 1))
    check(cfg.fleet.sessions <= limit, "fleet.sessions", cfg.fleet.sessions,
          f"at most {limit} here: each {w.name} session needs ~{per_session / 2**20:.2f} MiB to simulate and half "
          f"of the {avail / 2**30:.1f} GiB available is the limit")
