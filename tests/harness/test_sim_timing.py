"""The CUDA branch of the timing code on a simulated CUDA timeline (tests/simcuda.py), in CI without a GPU.

Each test states a known truth of the timeline (a host call of 10 ms, a copy of 2 ms of device time, 8,192 copies
issued 5 us apart) and checks that the clock its benchmark declares measures it, and that a wrong clock is refused
rather than reporting a wrong number.
"""
import pytest

from bench.hw.device import Device
from bench.harness.timing import (CudaClock, CudaLanes, Handoff, HostClock, HostIssuedClock, Lane, MeasurementError,
                          StoppingRule, clock_for, measure, measure_lanes, use_runtime)
from tests.simcuda import SimCuda

RULE = StoppingRule(min_samples=5, max_samples=30, noise_target=0.01, time_budget_s=5.0)
GPU = Device("cuda", 0)


@pytest.fixture
def sim():
    s = SimCuda()
    with use_runtime(s.runtime()):
        yield s


def test_clock_follows_the_declared_kind_of_work(sim):
    assert isinstance(clock_for("device", GPU), CudaClock)
    assert isinstance(clock_for("host", GPU), HostClock)
    assert isinstance(clock_for("host_issued", GPU), HostIssuedClock)
    for work in ("device", "host", "host_issued"):
        assert isinstance(clock_for(work, Device("cpu")), HostClock)  # CPU ops are synchronous host work
    with pytest.raises(ValueError, match="must declare one of"):
        clock_for("gpu", GPU)


def test_host_only_call_is_measured_by_the_host_clock_within_5_percent(sim):
    st = measure(lambda: sim.host_work(0.010), clock_for("host", GPU), RULE, warmup_s=0.0)
    assert st.median_s == pytest.approx(0.010, rel=0.05)
    assert st.clock == "perf_counter_ns"


def test_host_only_call_on_the_spin_held_event_clock_is_refused(sim):
    """The old storage timing: file I/O behind a stream-hold spin measures max(0, io - spin) (~0 once the spin
    has grown past it) and 'converges'. The event clock must refuse it instead."""
    with pytest.raises(MeasurementError, match="work='host'"):
        measure(lambda: sim.host_work(0.010), clock_for("device", GPU), RULE, warmup_s=0.0)


@pytest.mark.parametrize("host_cost_s", [1e-6, 1e-3, 1.5e-2])
def test_device_copy_is_measured_within_2_percent_whatever_the_enqueue_time(host_cost_s):
    sim = SimCuda(host_cost_s=host_cost_s)
    with use_runtime(sim.runtime()):
        nbytes = 100_000_000  # 2 ms at 50 GB/s, plus the copy latency
        truth = sim.copy_latency_s + nbytes / 50e9
        st = measure(lambda: sim.copy(nbytes, "h2d"), clock_for("device", GPU), RULE, warmup_s=0.0)
    assert st.median_s == pytest.approx(truth, rel=0.02)
    assert max(st.samples_s) == pytest.approx(truth, rel=0.02)  # every timed sample, the first included


def test_spin_is_calibrated_at_the_final_inner_before_the_first_timed_sample(sim):
    """1 us kernels are batched ~50 per sample; the spin sized for one call cannot hide fifty enqueues, so it
    must be regrown at the final inner before sampling, or the first samples time the host's issue rate."""
    st = measure(lambda: sim.kernel(1e-6), clock_for("device", GPU), RULE, warmup_s=0.0)
    assert st.inner > 10
    assert max(st.samples_s) == pytest.approx(1e-6, rel=0.02)


def _per_block_loop(sim, calls=8192, nbytes=32 << 10):
    def run():
        for _ in range(calls):
            sim.copy(nbytes, "d2h")
    return run


def test_per_block_copy_loop_is_host_issued_work():
    """8,192 cudaMemcpyAsync issued 5 us apart: the stream queue (1,000) blocks the host, no spin can hide the
    issue, and the issue rate is the method's real cost: the host-issued clock measures it."""
    sim = SimCuda(host_cost_s=5e-6)
    with use_runtime(sim.runtime()):
        st = measure(_per_block_loop(sim), clock_for("host_issued", GPU), StoppingRule(3, 5, 0.05, 5.0),
                     warmup_s=0.0)
        issue = 8192 * 5e-6
        assert st.median_s == pytest.approx(issue, rel=0.05)
        with pytest.raises(MeasurementError, match="work='host_issued'"):
            measure(_per_block_loop(sim), clock_for("device", GPU), StoppingRule(3, 5, 0.05, 5.0), warmup_s=0.0)


def test_memcpy_per_block_method_declares_host_issued_work(tmp_path):
    from tests.helpers import run_benchmarks

    recs = run_benchmarks(["paged_onload"], ["transfer.block_tokens=[16]", "transfer.layouts=[layer_major]",
                                             "transfer.methods=[memcpy_per_block,staged]",
                                             "transfer.paged_bytes=1048576", "model=tiny"], tmp_path)
    work = {r["params"]["method"]: r["metrics"]["work"] for r in recs}
    assert work == {"memcpy_per_block": "host_issued", "staged": "device"}


def test_lanes_start_together_and_spans_are_their_device_times(sim):
    durs = {"a": 0.004, "b": 0.010, "c": 0.001}
    lanes = [Lane(n, (lambda d=d, n=n: sim.kernel(d, n)), "device") for n, d in durs.items()]
    res = measure_lanes(CudaLanes(lanes, 0), RULE, warmup_s=0.0)
    for n, d in durs.items():
        assert res.lanes[n].median_s == pytest.approx(d, rel=0.01)
    assert res.total.median_s == pytest.approx(0.010, rel=0.01)
    last = {n: sim.ops_tagged(n)[-1] for n in durs}  # the last sample's kernels
    assert len({round(o.start, 9) for o in last.values()}) == 1  # one common start: the spin's end


def test_host_issued_lane_does_not_hold_back_the_compute_lane(sim):
    """copy_under_compute with memcpy_per_block: the compute lane is queued first, so it runs while the copies
    are still being issued, not after all 2,000 of them."""
    copies = Lane("copy", _per_block_loop(sim, calls=2000, nbytes=4096), "host_issued")
    compute = Lane("compute", lambda: sim.kernel(0.008, "compute"), "device")
    clock = CudaLanes([copies, compute], 0)
    assert [lane.name for lane in clock.lanes] == ["compute", "copy"]
    total, spans = clock.sample_lanes()
    k = sim.ops_tagged("compute")[-1]
    first_copy = sim.ops_tagged("copy")[0]
    assert k.start < first_copy.start + 1e-3  # compute started with the copies, not after their issue
    assert spans["copy"] >= 2000 * 5e-6  # the copy lane's span includes its issue
    assert spans["compute"] == pytest.approx(0.008, rel=0.05)
    assert max(spans.values()) <= total <= 1.01 * max(spans.values())


def test_load_lane_layer_waits_only_for_its_own_event(sim):
    L, load_s, compute_s = 6, 0.001, 0.003
    h = Handoff(L, cuda=True)

    def producer():
        for i in range(L):
            sim.copy(int(load_s * 50e9) - int(sim.copy_latency_s * 50e9), "h2d", f"load{i}")
            h.post(i)

    def consumer():
        for i in range(L):
            h.wait(i)
            sim.kernel(compute_s, f"layer{i}")

    CudaLanes([Lane("load", producer, "device"), Lane("compute", consumer, "device")], 0).sample_lanes()
    loads = [sim.ops_tagged(f"load{i}")[-1] for i in range(L)]
    layers = [sim.ops_tagged(f"layer{i}")[-1] for i in range(L)]
    for i in range(L):
        want = max(loads[i].end, layers[i - 1].end if i else 0.0)
        assert layers[i].start == pytest.approx(want, abs=1e-9)
    assert layers[0].start < loads[-1].end  # layer 0 did not wait for the whole load


def test_handoff_refuses_a_wait_queued_before_its_post(sim):
    h = Handoff(2, cuda=True)
    with pytest.raises(RuntimeError, match="producer lane must be queued before"):
        h.wait(0)


def test_lanes_clock_refuses_host_work_behind_the_spin(sim):
    lanes = [Lane("io", lambda: sim.host_work(0.005), "device")]
    with pytest.raises(MeasurementError, match="does its work on the host"):
        measure_lanes(CudaLanes(lanes, 0), RULE, warmup_s=0.0)


def _storage_on_simulated_gpu(tmp_path, names, force_work=None, monkeypatch=None):
    """The real storage benchmarks (real file I/O) run through the harness as on a GPU node: device=cuda, the
    clocks' CUDA calls answered by the simulated timeline, host time real."""
    import bench.benchmarks.storage.benchmarks  # noqa: F401 (registers)
    from bench.harness import RunContext, run_point
    from bench.hw.nvml import ClockSampler
    from bench.commands.overrides import compose_checked
    from bench.benchmarks import load_all

    cfg = compose_checked(["suite=quick", "model=tiny", "harness.progress=false", f"storage.path={tmp_path}",
                           "storage.file_bytes=16777216", "storage.request_bytes=[1048576]",
                           "storage.kv_block_tokens=[]", "storage.queue_depths=[1]", "storage.patterns=[random]",
                           "storage.pass_s=0.01", "storage.pass_depths=8", "harness.time_budget_s=0.3", "harness.min_samples=5"])
    reg = load_all()
    sim = SimCuda(real_time=True)
    out = []
    with use_runtime(sim.runtime()):
        ctx = RunContext()
        try:
            for name in names:
                for params in reg[name].points(cfg):
                    out.append(run_point(reg[name], params, cfg, GPU, StoppingRule(5, 50, 0.05, 0.3), 0.0, None,
                                         1 << 30, ClockSampler(GPU), {}, ctx))
        finally:
            ctx.close()
    return out


def test_storage_rates_on_a_gpu_node_agree_with_their_own_latencies(o_direct_dir):
    """A file_read pass at queue depth 1 is its requests back to back: the pass time the harness reports must be
    about the sum of the per-request latencies the same pass measured on the host. The old timing (host I/O behind
    the CUDA event clock's spin) reported ~0 s per pass and GB/s orders of magnitude too high."""
    recs = _storage_on_simulated_gpu(o_direct_dir, ["file_read", "file_write"])
    assert recs and all(r["status"] == "ok" for r in recs), [r["reason"] for r in recs]
    for r in recs:
        m = r["metrics"]
        assert m["clock"] == "perf_counter_ns" and m["work"] == "host"
        per_request = m["median_s"] / r["info"]["requests_per_pass"]
        assert 0.5 * m["lat_p50_us"] * 1e-6 <= per_request <= 3 * m["lat_p99_us"] * 1e-6, m
        assert m["iops"] == pytest.approx(r["info"]["requests_per_pass"] / m["median_s"])


def test_storage_read_timed_on_the_event_clock_is_refused_not_reported(o_direct_dir, monkeypatch):
    """What the old storage timing did (state.exec with the device clock) is now a refused measurement: status
    error with the reason, and no GB/s in the record."""
    from bench.harness import State

    orig = State.exec

    def old_exec(self, fn, *, work, **kw):
        return orig(self, fn, work="device", **kw)

    monkeypatch.setattr(State, "exec", old_exec)
    recs = _storage_on_simulated_gpu(o_direct_dir, ["file_read"])
    assert recs and all(r["status"] == "error" and "does its work on the host" in r["reason"] for r in recs)
    assert all("gbps" not in r["metrics"] for r in recs)


def test_two_host_issued_lanes_are_issued_at_once():
    """memcpy_per_block beside an MoE (or 32-layer) compute: both lanes are host-issued; issued one after the
    other, the second would start only when the first had been issued (8,192 copies: ~40 ms), and the pair
    would measure a sequence, not an overlap."""
    sim = SimCuda(host_cost_s=5e-6)
    with use_runtime(sim.runtime()):
        copies = Lane("copy", _per_block_loop(sim, calls=4000, nbytes=4096), "host_issued")

        def compute():
            for i in range(4000):
                sim.kernel(2e-6, "compute")

        lanes = [copies, Lane("compute", compute, "host_issued")]
        total, spans = CudaLanes(lanes, 0).sample_lanes()
    first = {n: sim.ops_tagged(n)[0].start for n in ("copy", "compute")}
    last = {n: sim.ops_tagged(n)[-1].end for n in ("copy", "compute")}
    assert abs(first["copy"] - first["compute"]) < 1e-3  # both began issuing at the start
    assert first["compute"] < last["copy"] and first["copy"] < last["compute"]  # they overlap
    assert spans["copy"] == pytest.approx(4000 * 5e-6, rel=0.05)
    assert spans["compute"] == pytest.approx(4000 * 5e-6, rel=0.05)


def test_device_lane_longer_than_the_stream_queue_is_refused(sim):
    """A 2,000-launch layer loop declared device work: the queue blocks the host behind the spin, the spin cannot
    hide the issue, the lanes clock refuses it (layer_work declares such stacks host-issued)."""
    def loop():
        for _ in range(2000):
            sim.kernel(3e-6, "k")

    with pytest.raises(MeasurementError, match="work='host_issued'"):
        measure_lanes(CudaLanes([Lane("compute", loop, "device")], 0), RULE, warmup_s=0.0)


def test_layer_stacks_beyond_a_stream_queue_are_declared_host_issued():
    from types import SimpleNamespace

    from bench.benchmarks.layers.benchmarks import DEVICE_MAX_OPS, layer_work

    state = SimpleNamespace(notes={}, note=lambda **kw: state.notes.update(kw))
    assert layer_work(state, SimpleNamespace(ops=lambda: 4 * 65)) == "device"  # 4 layers
    assert layer_work(state, SimpleNamespace(ops=lambda: 32 * 65)) == "host_issued"  # a whole model's layers
    assert layer_work(state, SimpleNamespace(ops=lambda: 4 * 65), calls=8) == "host_issued"  # repeated
    assert 4 * 65 <= DEVICE_MAX_OPS < 1000
    state.notes["moe"] = True
    assert layer_work(state, SimpleNamespace(ops=lambda: 10)) == "host_issued"  # host sync inside


def test_layer_ops_are_counted_without_views():
    import torch
    from omegaconf import OmegaConf

    from bench.benchmarks.layers.benchmarks import dispatched_ops
    from bench.core.config import conf_dir
    from bench.llm.layer import Layer
    from bench.llm.shapes import ModelShape

    shape = ModelShape.from_cfg(OmegaConf.load(conf_dir() / "model" / "tiny.yaml"))
    layer = Layer(shape, 0, torch.float32, "cpu", seed=1)
    cache = layer.new_cache(1, 64, 3)
    x = torch.randn(1, 16, shape.hidden)
    n = dispatched_ops(lambda: layer.forward(x, cache, 32, decode=False))
    assert 30 <= n <= 150  # norms, projections, RoPE, cache writes, attention, MLP


def test_a_sample_the_spin_did_not_hide_is_redone_not_kept(sim):
    """A one-off host stall (GC pause) while queuing: that sample timed the issue; it is discarded and redone."""
    calls = {"n": 0}

    def fn():
        calls["n"] += 1
        if calls["n"] == 6:  # during timed sampling (after 2 warm-up calls and 1 calibration sample)
            sim.host_work(0.2)  # longer than the spin (~50 ms at most)
        sim.kernel(1e-3)

    st = measure(fn, clock_for("device", GPU), StoppingRule(8, 30, 0.01, 5.0), warmup_s=0.0)
    assert st.discarded == 1
    assert max(st.samples_s) == pytest.approx(1e-3, rel=0.02)


def test_a_small_copys_latency_is_above_its_amortised_cost_on_a_gpu(sim):
    """transfer_contiguous's two figures for a small copy: amortised (back-to-back copies behind the spin, the
    point's own timing) and latency (one copy issued and completed: host round trip). On a GPU the latency carries
    the issue, the copy's fixed latency and the synchronize; the amortised figure hides the issue behind the spin:
    the latency is the larger (the CPU, where both are one synchronous memcpy, cannot show this)."""
    nbytes = 4096
    amortised = measure(lambda: sim.copy(nbytes, "h2d"), clock_for("device", GPU), RULE, warmup_s=0.0)
    latency = measure(lambda: sim.copy(nbytes, "h2d"), clock_for("host_issued", GPU), RULE, warmup_s=0.0, inner=1)
    assert latency.median_s > amortised.median_s
    assert latency.median_s >= sim.copy_latency_s + nbytes / 50e9


def test_distribution_times_each_call_alone_on_the_gpu_clock(sim):
    """State.distribution (warm_fetch's per-step p50/p99): every sample is one call issued and completed, so a
    step that is slow one time in ten shows in the upper percentiles instead of averaging away."""
    import numpy as np

    from bench.harness.state import State

    rule = StoppingRule(min_samples=3, max_samples=50, noise_target=0.01, time_budget_s=5.0)
    state = State(None, {}, GPU, None, rule, 0.0, None, 1 << 30)
    calls = {"n": 0}

    def step():
        calls["n"] += 1
        sim.copy(1 << 20, "h2d")  # 20 us at 50 GB/s
        if calls["n"] % 10 == 0:
            sim.kernel(1e-3)  # one step in ten waits 1 ms more

    st = state.distribution(step, work="host_issued", samples=40)
    a = np.asarray(st.samples_s)
    assert st.n == len(a) == 40 and st.clock == "perf_counter_ns+synchronize"
    fast = sim.copy_latency_s + (1 << 20) / 50e9
    assert fast <= np.percentile(a, 50) <= 1.5 * fast  # the copy, plus its issue and the synchronize
    assert np.percentile(a, 99) >= fast + 1e-3 * 0.95
