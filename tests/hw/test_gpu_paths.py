"""GPU-path logic that runs on the CPU: NVML throttle sampling inside timed regions, exact pinned allocation,
NUMA placement under a restricted cpuset, the PCIe peak never below the GPU's own link generation or a measured
copy, kernels given the device address of pinned memory, memory counted before a point allocates, and the numbers
that must be what their names say (MLA prefill FLOPs, zero times).

NVML and the CUDA runtime are replaced by small fakes with the real call signatures (nvidia-ml-py 13,
torch.cuda.cudart()); what only a GPU can show is in the GPU check (scripts/gpu_check.sh)."""
import os
import types

import pytest
import torch

import bench.hw.nvml as nv
from bench.hw.device import Device
from bench.plan.suite import run_suite
from bench.core.registry import benchmark
from bench.core.store import RunStore, read_records
from tests.helpers import NO_COST

GPU = Device("cuda", 0)


class FakeNvml:
    """nvidia-ml-py's surface the sampler uses, with counters that advance while 'throttled' is set."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    def __init__(self):
        import pynvml

        for const in nv.COUNTER_CONSTANTS.values():  # the installed binding's field ids
            setattr(self, const, getattr(pynvml, const))
        self.throttled = False
        self.power_ns = 0
        self.sm = 1980

    def nvmlDeviceGetClockInfo(self, h, kind):
        return self.sm if kind == 1 else 2619

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return 0x4 if self.throttled else 0x0

    def nvmlDeviceGetTemperature(self, h, kind):
        return 61

    def nvmlDeviceGetFieldValues(self, h, ids):
        out = []
        for i in ids:
            val = types.SimpleNamespace(ullVal=self.power_ns if i == self.NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP
                                        else 0)
            out.append(types.SimpleNamespace(fieldId=i, nvmlReturn=0, value=val))
        return out

    def nvmlDeviceGetViolationStatus(self, h, policy):
        return types.SimpleNamespace(violationTime=self.power_ns if policy == 0 else 0)


@pytest.fixture
def fake_nvml(monkeypatch):
    lib = FakeNvml()
    monkeypatch.setattr(nv, "_nvml", lib)
    monkeypatch.setattr(nv, "_nvml_error", None)
    monkeypatch.setattr(nv, "handle_for", lambda i: "h0")
    return lib


def test_throttle_inside_the_timed_region_is_seen(fake_nvml):
    """A power-cap event that starts and ends inside the timed region: invisible to readings before and after
    the point, visible in the counters diffed around the region and in the clocks sampled during it."""
    s = nv.ClockSampler(GPU, period_s=0.001)
    s.begin_point()
    before = s.read()
    with s.region():
        fake_nvml.throttled, fake_nvml.sm = True, 1410
        fake_nvml.power_ns += 3_000_000
        import time
        time.sleep(0.02)
        fake_nvml.throttled, fake_nvml.sm = False, 1980
    after = s.read()
    assert not before["reasons_mask"] and not after["reasons_mask"]  # the old before/after view: nothing
    clocks, throttle = s.end_point()
    assert throttle["throttled"] is True and "sw_power_cap" in throttle["reasons"]
    assert throttle["counters_ns"]["sw_power_cap"] == 3_000_000
    assert throttle["counters_ns"]["violation_power"] == 3_000_000
    assert clocks["sm_mhz_min"] == 1410 and 1410 < clocks["sm_mhz_mean"] <= 1980
    assert clocks["busy_samples"] >= 2


def test_quiet_region_is_not_throttled_and_untimed_point_is_unknown(fake_nvml):
    s = nv.ClockSampler(GPU, period_s=0.001)
    s.begin_point()
    clocks, throttle = s.end_point()
    assert throttle["throttled"] is None  # nothing was timed: no claim either way
    s.begin_point()
    with s.region():
        pass
    clocks, throttle = s.end_point()
    assert throttle["throttled"] is False and throttle["reasons"] == []


def test_counter_field_ids_match_the_installed_nvml_binding():
    """Field ids 269-271 were renumbered between nvidia-ml-py 12 and 13 (251-253 before): the ids here must be the
    installed binding's own constants."""
    import pynvml

    names = {"sw_power_cap": "NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP",
             "sw_thermal_slowdown": "NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN",
             "hw_thermal_slowdown": "NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN",
             "hw_power_brake_slowdown": "NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN"}
    assert {reason: fid for fid, reason in nv.counter_fields(pynvml).items()} == \
        {reason: getattr(pynvml, const) for reason, const in names.items()}


class FakeCudart:
    def __init__(self):
        self.registered = {}

    def cudaHostRegister(self, ptr, size, flags):
        self.registered[ptr] = size
        return 0

    def cudaHostUnregister(self, ptr):
        self.registered.pop(ptr)
        return 0


def test_pinned_buffers_are_exact_and_released_with_the_tensor(monkeypatch):
    import gc

    from bench.hw import hostmem

    rt = FakeCudart()
    monkeypatch.setattr(torch.cuda, "cudart", lambda: rt)
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: synced.append(1))
    n = (3 << 20) + 123  # torch's caching allocator would hold 4 MiB for this, forever
    t = hostmem.pinned_empty(n)
    assert t.numel() == n and t.data_ptr() % 4096 == 0
    assert list(rt.registered.values()) == [-(-n // 4096) * 4096]
    view = t[10:20]
    del t
    gc.collect()
    assert rt.registered  # a view still uses it
    view.fill_(1)
    del view
    gc.collect()
    assert rt.registered == {} and synced  # unpinned after the device went idle (no copy in flight)


class FakeCupy:
    """CuPy's surface the launchers use: pinned ("registered") host ranges the driver maps to other device
    addresses (as where cudaDevAttrCanUseHostPointerForRegisteredMem is 0), anything else device memory (its own
    address); kernels record the arguments they are launched with."""

    MAP = 1 << 44  # device address = host address + MAP (keeps every alignment)

    def __init__(self):
        self.registered: list = []  # (host base, bytes)
        self.launches: list = []
        self.cuda = types.SimpleNamespace(
            Device=_Ctx, ExternalStream=lambda handle, index: _Ctx(), Stream=types.SimpleNamespace(),
            runtime=types.SimpleNamespace(pointerGetAttributes=self._attrs))

    def register(self, t: torch.Tensor) -> torch.Tensor:
        self.registered.append((t.data_ptr(), t.numel() * t.element_size()))
        return t

    def device_address(self, ptr: int) -> int:
        for base, n in self.registered:
            if base <= ptr < base + n:
                return ptr + self.MAP
        return ptr

    def _attrs(self, ptr):
        return types.SimpleNamespace(devicePointer=self.device_address(ptr))

    def RawModule(self, code, options):  # noqa: N802 (CuPy's name)
        def get_function(name):
            return lambda grid, block, args: self.launches.append((name, [int(a) for a in args]))
        return types.SimpleNamespace(get_function=get_function)


class _Ctx:
    def __init__(self, *a):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *e):
        return False


class _TorchOnGpu:
    """torch as the launchers see it on a GPU, on the CPU: 'cuda' tensors are CPU tensors, one 132-SM device."""

    cuda = types.SimpleNamespace(current_device=lambda: 0,
                                 get_device_properties=lambda i: types.SimpleNamespace(multi_processor_count=132),
                                 current_stream=lambda: types.SimpleNamespace(cuda_stream=7,
                                                                              device=types.SimpleNamespace(index=0)))

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def device(*a, **kw):
        return torch.device("cpu")


def test_every_launcher_gives_its_kernel_the_device_address_of_pinned_memory(monkeypatch):
    """kv_transfer, row_gather and score_keys are handed data_ptr() addresses (pinned host memory, HBM); where the
    driver maps registered host memory to another device address, each kernel must get that address, never the
    host one, while device memory keeps its own (cudaPointerGetAttributes.devicePointer, one place)."""
    import sys

    from bench.hw import cuda_kernels as ck

    cp = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(ck, "torch", _TorchOnGpu())
    monkeypatch.setattr(ck, "_STREAMS", {})
    ck.module.cache_clear()
    try:
        pinned = cp.register(torch.zeros(4096, dtype=torch.uint8))
        hbm = torch.zeros(4096, dtype=torch.uint8)  # not registered: device memory, its own address
        srcs = [hbm[i * 1024:(i + 1) * 1024] for i in range(2)]
        ptrs = [s.data_ptr() for s in srcs]
        for offload in (True, False):
            run = ck.kv_transfer_launcher(ptrs, 64, 32, torch.arange(4), pinned[:512], offload)
            run()
            name, args = cp.launches[-1]
            table = run.keepalive[0]
            assert name == ("kv_gather" if offload else "kv_scatter")
            assert table.tolist() == ptrs and args[6] == pinned.data_ptr() + cp.MAP  # pool: HBM; packed: pinned
        run = ck.kv_transfer_launcher([pinned.data_ptr(), pinned[1024:].data_ptr()], 64, 32, torch.arange(4),
                                      hbm[:512], True)  # the other way round: sources in pinned memory
        run()
        assert run.keepalive[0].tolist() == [pinned.data_ptr() + cp.MAP, pinned[1024:].data_ptr() + cp.MAP]
        assert cp.launches[-1][1][6] == hbm.data_ptr()

        dst = torch.zeros(4, 64, dtype=torch.uint8)
        ck.row_gather_launcher(pinned[64:].data_ptr(), 64, torch.arange(4), torch.arange(4), dst)()
        name, args = cp.launches[-1]
        assert name == "row_gather" and args[0] == pinned[64:].data_ptr() + cp.MAP and args[5] == dst.data_ptr()

        keys = cp.register(torch.zeros(8, 16, dtype=torch.bfloat16))
        q, scores = torch.zeros(16), torch.zeros(8)
        ck.score_keys_launcher(keys.data_ptr(), 8, 16, torch.bfloat16, q, scores)()
        name, args = cp.launches[-1]
        assert name == "score_keys_bf16" and args[0] == keys.data_ptr() + cp.MAP and args[1] == q.data_ptr()
        with pytest.raises(ValueError, match="not 16-byte aligned"):
            ck.row_gather_launcher(pinned[8:].data_ptr(), 64, torch.arange(4), torch.arange(4), dst)
    finally:
        ck.module.cache_clear()  # fake modules never outlive the test


def test_numa_binding_never_leaves_the_allowed_cpus(monkeypatch):
    from bench.hw import hostmem

    allowed = set(os.sched_getaffinity(0))
    outside = {max(allowed) + 1000}
    monkeypatch.setattr(hostmem, "node_cpus", lambda node: outside)
    calls = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: calls.append(set(cpus)))
    with hostmem.on_numa_node(1) as used:
        assert isinstance(used, str) and "outside this process's allowed CPUs" in used
    assert calls == []  # never bound: the kernel would refuse (EINVAL) and every pinned allocation would fail
    inside = {min(allowed)}
    monkeypatch.setattr(hostmem, "node_cpus", lambda node: inside | outside)
    with hostmem.on_numa_node(0) as used:
        assert used == 0
    assert calls[0] == inside


def test_link_peak_is_never_below_the_gpus_own_generation_or_a_measured_copy(monkeypatch, tmp_path):
    """NVML's link max is gen 4 for a gen-5 GPU (a Gen4 slot, or a VM's virtual root port under-reporting the
    link): the peak results are held to is the GPU's own gen 5 (~63 GB/s), so a true 55 GB/s copy is not
    flagged; with only the link's figure, it is that (~31.5); and a pinned copy this run measured above NVML's
    figure (largest size of h2d_pinned / d2h_pinned) raises it. Fingerprint and record say which source."""
    import json

    from bench.benchmarks.transfer.contiguous import pcie_peak
    from bench.harness import RunContext, State
    from bench.harness.point import plausibility
    from bench.hw import fingerprint as fp

    class Lib(FakeNvml):
        def nvmlDeviceGetMaxPcieLinkGeneration(self, h):
            return 4

        def nvmlDeviceGetGpuMaxPcieLinkGeneration(self, h):
            return 5

        def nvmlDeviceGetMaxPcieLinkWidth(self, h):
            return 16

    class LinkOnly(Lib):
        def nvmlDeviceGetGpuMaxPcieLinkGeneration(self, h):
            raise RuntimeError("NVMLError_NotSupported")

    props = types.SimpleNamespace(name="H100", multi_processor_count=132, total_memory=80 << 30,
                                  L2_cache_size=50 << 20, major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(fp, "handle_for", lambda i: "h0")
    monkeypatch.setattr(fp, "nvml", lambda: Lib())
    g = fp.gpu_info(0, fp._Probe())
    assert g["pcie"]["gen_max"] == 4 and g["pcie"]["gen_gpu_max"] == 5
    assert g["pcie"]["peak_gbps_per_direction"] == pytest.approx(63.0, rel=0.01)
    assert g["pcie"]["peak_source"] == "nvml gpu max gen"
    monkeypatch.setattr(fp, "nvml", lambda: LinkOnly())
    link = fp.gpu_info(0, fp._Probe())["pcie"]
    assert link["peak_gbps_per_direction"] == pytest.approx(31.5, rel=0.01) and link["peak_source"] == "nvml link"

    records = tmp_path / "records.jsonl"
    records.write_text("")

    def state():
        return State(None, {}, GPU, None, None, 0.0, None, 0, {"gpu": {"pcie": link}}, RunContext(records))

    s = state()
    assert pcie_peak(s) == pytest.approx(31.5, rel=0.01) and s.notes["link_peak_source"] == "nvml link"
    assert "implausible" in plausibility({"gbps": 55.0}, {"gbps": pcie_peak(s)})
    rec = lambda name, size, gbps, device="cuda", status="ok": {  # noqa: E731
        "benchmark": name, "status": status, "device": device, "params": {"size_bytes": size},
        "metrics": {"gbps": gbps} if status == "ok" else {}}
    rows = [rec("h2d_pinned", 1 << 30, 55.0), rec("h2d_pinned", 1 << 20, 40.0), rec("d2h_pinned", 1 << 30, 53.0),
            rec("d2h_pinned", 1 << 31, 0.0, status="skipped"), rec("h2d_pinned", 1 << 32, 99.0, device="cpu"),
            rec("h2d_pageable", 1 << 30, 70.0)]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = state()
    assert pcie_peak(s) == 55.0 and s.notes["link_peak_source"] == "measured pinned copy"
    assert "implausible" not in plausibility({"gbps": 55.0}, {"gbps": pcie_peak(s)})
    s = State(None, {}, GPU, None, None, 0.0, None, 0, {"gpu": {"pcie": g["pcie"]}}, RunContext(records))
    assert pcie_peak(s) == pytest.approx(63.0, rel=0.01) and s.notes["link_peak_source"] == "nvml gpu max gen"


def test_mla_prefill_flops_count_decompressing_the_cached_latent():
    from bench.llm.shapes import ModelShape
    from omegaconf import OmegaConf

    from bench.core.config import conf_dir

    s = ModelShape.from_cfg(OmegaConf.load(conf_dir() / "model" / "deepseek_v3.yaml"))
    nope = s.head_dim - s.rope_head_dim
    per_cached = 2.0 * s.kv_lora_rank * s.heads * (nope + s.v_dim)
    grow = s.prefill_flops(1024, 8192, layers=1) - s.prefill_flops(1024, 0, layers=1)
    from bench.llm.shapes import causal_pairs
    scores = s.attn_score_flops(causal_pairs(1024, 8192) - causal_pairs(1024, 0), False, layers=1)
    assert grow == pytest.approx(scores + 8192 * per_cached)
    gqa = ModelShape.from_cfg(OmegaConf.load(conf_dir() / "model" / "llama3_8b.yaml"))
    assert gqa.mla_decompress_flops(8192) == 0.0


def test_moe_numerics_check_runs_on_a_slimmed_layer():
    from omegaconf import OmegaConf

    from bench.benchmarks.layers.benchmarks import check_bytes, check_shape, layer_param_bytes, representative_index
    from bench.core.config import conf_dir
    from bench.llm.shapes import ModelShape

    s = ModelShape.from_cfg(OmegaConf.load(conf_dir() / "model" / "deepseek_v3.yaml"))
    idx = representative_index(s)
    full = layer_param_bytes(s, idx, torch.bfloat16)
    assert full > 20e9  # 22.9 GB: its float64 copy alone would not fit an 80 GB GPU
    slim = check_shape(s)
    assert slim.experts == 16 and slim.experts_active == s.experts_active
    # the slim layer and its float64 reference (counted by the point's needs) fit beside one full layer on 80 GB
    assert full + check_bytes(s, idx, torch.bfloat16) < 0.8 * 80e9


def test_attention_counts_what_the_backend_allocates():
    from bench.llm.attention import decode_extra_bytes, prefill_extra_bytes, split_extra_bytes

    native = {"flash", "cudnn"}  # torch 2.11 on sm90: flash and cuDNN take GQA, efficient needs equal heads
    # only a kernel without native GQA pays for K/V expanded to 32 heads from 8, counted before allocating
    assert decode_extra_bytes("efficient", 1, 32, 8, 8192, 128, 128, 2, native) == 24 * 8192 * 256 * 2
    assert decode_extra_bytes("cudnn", 256, 32, 8, 32768, 128, 128, 2, native) == 0  # was charged 128 GiB
    assert decode_extra_bytes("flash", 1, 32, 8, 8192, 128, 128, 2, native) == 0
    # math: SDPA repeats K/V inside it, and holds float32 scores and probabilities
    assert decode_extra_bytes("math", 1, 8, 8, 32, 64, 64, 2, native) == 2 * 8 * 32 * 4
    # after cached context cuDNN runs the log-sum-exp split (partials, no mask); math a materialized mask
    assert prefill_extra_bytes("cudnn", 1, 32, 32, 1024, 4096, 128, 128, 2, native, cpu=False) == \
        split_extra_bytes(1, 32, 1024, 128, 2)
    assert prefill_extra_bytes("flash", 1, 32, 8, 1024, 4096, 128, 128, 2, native, cpu=False) == 0
    assert prefill_extra_bytes("math", 1, 8, 8, 16, 32, 64, 64, 2, native, cpu=False) == \
        16 * 32 * 3 + 2 * 8 * 16 * 32 * 4


def test_lower_right_mask_is_built_once_outside_the_timed_calls(monkeypatch):
    from bench.llm import layer as L
    from bench.llm import attention as A
    from bench.llm.shapes import ModelShape
    from omegaconf import OmegaConf

    from bench.core.config import conf_dir

    built = []
    real = A.lower_right
    monkeypatch.setattr(A, "lower_right", lambda *a, **k: built.append(1) or real(*a, **k))
    shape = ModelShape.from_cfg(OmegaConf.load(conf_dir() / "model" / "tiny.yaml"))
    layer = L.Layer(shape, 0, torch.float32, "cpu", seed=1)  # auto on the CPU: torch's pick, a materialized mask
    cache = layer.new_cache(1, 48, 3)
    x = torch.randn(1, 16, shape.hidden)
    for _ in range(3):
        layer.forward(x, cache, 32, decode=False)
    assert built == [1]


def test_zero_time_is_an_error_not_an_aborted_run(harness_cfg, tmp_path, registered):
    from bench.harness.timing import Stats

    @benchmark("t_zero", family="test", cost=NO_COST, axes=lambda c: {"i": [0, 1]})
    def t_zero(state):
        state.add_bytes(100)
        state.exec(lambda: None, work="host")
        if state.params["i"] == 0:
            state.stats = Stats(5, 1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, float("inf"), False, "max_samples", 2)

    store = RunStore(tmp_path / "run", "t")
    counts = run_suite([registered["t_zero"]], harness_cfg, Device("cpu"), store)
    recs = read_records(tmp_path / "run" / "records.jsonl")
    assert counts == {"ok": 1, "skipped": 0, "error": 1}
    assert recs[0]["status"] == "error" and "could not resolve" in recs[0]["reason"]
    assert "gbps" not in recs[0]["metrics"] and recs[1]["metrics"]["gbps"] > 0
