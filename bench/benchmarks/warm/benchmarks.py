"""The warm tier read on demand ("fetch on demand and search in place"): what a GPU gets from memory below its HBM
when a decode step reads it in small pieces, and what large cold-tier flows cost a decode running beside them.

warm_fetch              each decode step, k token rows chosen from a large pinned host pool (GBs: beyond L2 and
                        TLB reach) land in HBM; axes row_bytes (64 B .. 64 KiB and the preset's per-token per-layer
                        KV row), rows per step, locality (bench.llm.selection) and method: ``uva_kernel`` (a GPU
                        kernel loads the rows from host memory through UVA, kernels/warm.cu), ``cpu_gather`` (the
                        step's row ids come to the host, the CPU gathers the rows into pinned staging, one copy to
                        HBM) or ``copy_per_run`` (the row ids come to the host, one copy-engine copy per contiguous
                        run of rows; batched memcpy is not reachable through torch or CuPy, so each run is a
                        cudaMemcpyAsync issued from Python). GB/s counts the bytes that crossed the link (the
                        fetched rows), useful_gbps all k rows a step delivers; per-step latency p50/p99 from single
                        steps (issue to rows in HBM, host round trip included); fraction_of_contiguous against one
                        contiguous pinned copy of the same bytes in the same run. Every step of the cycle is
                        checked (destination poisoned, then compared with the pool's rows) before and after timing.
warm_search             a decode step's query scored against keys that stay in host memory, then top-k: a GPU
                        kernel reading the keys through UVA (``uva_kernel``), the CPU scoring them where they lie
                        (``cpu``), or the keys copied to HBM first (``copy_first``); keys_per_s and the time to
                        the step's top-k (p50/p99). Each result's top-k checked against a float32 reference.
warm_peer               rows gathered from another GPU's HBM: a kernel loading the peer's memory (peer access) or
                        one cudaMemcpyPeer per contiguous run; skipped with the reason on one GPU or a CPU node.
cold_read_under_decode  large sequential reads (>= 64 MiB requests, many in flight, the storage family's Linux AIO
                        engine, page cache dropped before every pass) from NVMe into host memory while decode steps
                        run on the GPU, each alone and together in the same run: read GB/s kept under decode and the
                        decode slowdown (interference lanes).

On a CPU-only machine the GPU paths have stand-ins that run the same selections on host memory (labelled in each
record's ``info.stand_in``): a torch gather host to host for the kernel, a gather into staging plus a memcpy, a
memcpy per run, and the CPU's own scoring; their numbers are CPU numbers, never a GPU's.
"""
from __future__ import annotations

import numpy as np
import torch
from omegaconf import OmegaConf

from bench.benchmarks.layers.benchmarks import build_stack, compute_lane, stack_need
from bench.benchmarks.storage.benchmarks import _drop_and_prove, _verify_reads, check_file_fits, check_storage_root, io_need
from bench.benchmarks.storage.benchmarks import setup as storage_setup
from bench.benchmarks.transfer.contiguous import numa_node, pcie_peak
from bench.core.checks import validator
from bench.core.checks import check, positive_ints
from bench.benchmarks.warm import cost as C
from bench.core.registry import benchmark
from bench.harness import need
from bench.harness.timing import Lane
from bench.hw.hostmem import POISON, fill_pattern, first_mismatch, host_buffer, pattern
from bench.llm import overlap
from bench.llm.selection import StepPlan, copy_calls, parse_locality, plan_steps, runs_of
from bench.llm.shapes import ModelShape

METHODS = ("uva_kernel", "cpu_gather", "copy_per_run")
SEARCH_METHODS = ("uva_kernel", "cpu", "copy_first")
PEER_METHODS = ("peer_kernel", "peer_copy")
STAND_IN = {"uva_kernel": "CPU stand-in: torch.index_select from the pool host to host (the kernel's gather)",
            "cpu_gather": "CPU stand-in: gather into a staging buffer, then one memcpy",
            "copy_per_run": "CPU stand-in: one memcpy per contiguous run of rows"}
COLD_ELEPHANT = 64 << 20  # a cold-tier flow's request on a GPU node is at least this (the CPU stand-in reads less)


def model_row_bytes(cfg) -> int:
    """The preset's row: one token's K and V (MLA: latent) of one layer, in the model's dtype (bytes)."""
    return int(ModelShape.from_cfg(cfg.model).kv_bytes_per_token_per_layer)


def row_sizes(cfg, values) -> list[int]:
    """Row sizes in bytes, "model" resolved to the preset's row, sorted and without repeats."""
    return sorted({model_row_bytes(cfg) if str(v) == "model" else int(v) for v in values})


def _fetch_axes(c):
    w = c.warm
    return {"method": list(w.methods), "locality": [str(v) for v in w.locality], "row_bytes": row_sizes(c, w.row_bytes),
            "rows": [int(v) for v in w.rows]}


def _pool(state) -> torch.Tensor:
    """The run's pinned host pool (warm.pool_bytes of seeded bytes on the GPU's NUMA node), shared by every
    warm_fetch point: pinning and filling GBs once, not per point."""
    n, seed = int(state.cfg.warm.pool_bytes), int(state.cfg.warm.seed)

    def make():
        buf, facts = host_buffer(n, True, state.device, numa_node(state))
        fill_pattern(buf, seed, state.device)
        return buf, facts

    buf, facts = state.run_resource(("warm_pool", n, seed), make)
    state.note(pool_bytes=n, **facts)
    return buf


def _plan(state, k: int, row_bytes: int, locality: str, pool_bytes: int) -> StepPlan:
    try:
        return plan_steps(pool_bytes // row_bytes, k, locality, int(state.cfg.warm.steps),
                          int(state.cfg.warm.seed) + k + row_bytes)
    except ValueError as e:
        state.skip(f"{e} (warm.pool_bytes={pool_bytes}, row_bytes={row_bytes})")


def _fetch_need(state):
    """Host: the shared pool, and for cpu_gather the pinned staging; device: three step buffers of k rows (the
    warm-start selection and two that alternate) and the row ids."""
    w, p = state.cfg.warm, state.params
    k, rb = int(p["rows"]), int(p["row_bytes"])
    if rb % 16 or rb < 16:
        state.skip(f"row_bytes={rb}: rows must be a multiple of 16 bytes (16-byte loads and aligned copies)")
    calls = copy_calls(k, str(p["locality"]))
    if p["method"] == "copy_per_run" and calls > int(w.max_copy_calls):
        state.skip(f"copy_per_run: a step of {k} rows ({p['locality']}) needs up to {calls} copy calls (> "
                   f"warm.max_copy_calls={int(w.max_copy_calls)}); issued from Python that times the issue loop, "
                   "not the copy engine")
    staging = k * rb if p["method"] == "cpu_gather" else 0
    ids = int(w.steps) * k * 8 * 3
    return need(3 * k * rb + ids, "three step buffers of k rows and the steps' row ids",
                host_bytes=int(w.pool_bytes) + staging + ids)


class RowFetch:
    """One warm_fetch point: the step cycle of a :class:`StepPlan` over the pool, run by one method.

    Step s writes buffer s % 2; its kept rows (repeat locality) come from the previous step's buffer (step 0's
    from the warm-start buffer, which always holds x0), so the cycle replays correctly however many times it
    runs. ``step()`` runs the next step of the cycle."""

    def __init__(self, state, method: str, plan: StepPlan, row_bytes: int, pool: torch.Tensor):
        self.state, self.method, self.plan, self.rb = state, method, plan, row_bytes
        self.cuda = state.device.is_cuda
        dev = state.device.torch
        self.pool2d = pool[:plan.pool_rows * row_bytes].view(plan.pool_rows, row_bytes)
        k, nf = plan.k, plan.n_fetch
        self.x0 = self.pool2d.index_select(0, torch.from_numpy(plan.x0)).to(dev)
        self.bufs = [torch.full((k, row_bytes), POISON, dtype=torch.uint8, device=dev) for _ in range(2)]
        steps = plan.steps
        self.fetch_host = [torch.from_numpy(np.ascontiguousarray(s.fetched)) for s in steps]
        self.fetch_dev = [t.to(dev) for t in self.fetch_host]  # where a GPU's selection lives: in HBM
        self.keep_src = [torch.from_numpy(s.keep_src).to(dev) for s in steps]
        self.i = 0
        self.work = "device" if (method == "uva_kernel" and self.cuda) else ("host_issued" if self.cuda else "host")
        if self.cuda and method != "uva_kernel":
            self.ids_host = torch.empty(nf, dtype=torch.int64).pin_memory()
        if method == "cpu_gather":
            staging, facts = host_buffer(nf * row_bytes, True, state.device, numa_node(state))
            self.staging = staging.view(nf, row_bytes)
            state.note(staging_pinned=facts["pinned"])
        if method == "uva_kernel" and self.cuda:
            from bench.hw.cuda_kernels import row_gather_launcher

            base = self.pool2d.data_ptr()
            arange = torch.arange(nf, dtype=torch.int64, device=dev)
            self.kernels = [row_gather_launcher(base, row_bytes, self.fetch_dev[s], arange, self.bufs[s % 2])
                            for s in range(len(steps))]
            state.note(kernel="kernels/warm.cu row_gather (CuPy RawModule), 16-byte loads through UVA")
        if method == "copy_per_run":
            self.runs = [list(zip(*(a.tolist() for a in runs_of(s.fetched)))) for s in steps]
            state.note(copy_calls_per_step=plan.max_runs())
        if not self.cuda:
            state.note(stand_in=STAND_IN[method])
        if method == "cpu_gather":
            state.note(cpu_threads=torch.get_num_threads())

    def _prev(self, s: int) -> torch.Tensor:
        return self.x0 if s == 0 else self.bufs[(s - 1) % 2]

    def _ids_to_host(self, s: int) -> torch.Tensor:
        """The step's row ids where the CPU can read them: selected on the GPU, so copied over and waited for."""
        if not self.cuda:
            return self.fetch_host[s]
        self.ids_host.copy_(self.fetch_dev[s], non_blocking=True)
        torch.cuda.current_stream().synchronize()
        return self.ids_host

    def step(self) -> None:
        s = self.i % len(self.plan.steps)
        self.i += 1
        dst, nf = self.bufs[s % 2], self.plan.n_fetch
        if self.method == "uva_kernel":
            if self.cuda:
                self.kernels[s]()
            else:
                torch.index_select(self.pool2d, 0, self.fetch_host[s], out=dst[:nf])
        elif self.method == "cpu_gather":
            ids = self._ids_to_host(s)
            torch.index_select(self.pool2d, 0, ids, out=self.staging)
            dst[:nf].copy_(self.staging, non_blocking=True)
        else:
            if self.cuda:
                self._ids_to_host(s)  # the runs are derived on the host from these (precomputed here)
            for src, length, at in self.runs[s]:
                dst[at:at + length].copy_(self.pool2d[src:src + length], non_blocking=True)
        if self.plan.n_keep:
            torch.index_select(self._prev(s), 0, self.keep_src[s], out=dst[nf:])

    def check_cycle(self, when: str) -> None:
        """Poison both step buffers, run the whole cycle from step 0 and compare each step's rows with the pool."""
        for b in self.bufs:
            b.fill_(POISON)
        self.i = 0
        for s, st in enumerate(self.plan.steps):
            self.step()
            self.state.device.synchronize()
            want = self.pool2d.index_select(0, torch.from_numpy(st.order))
            bad = first_mismatch(self.bufs[s % 2], want, unit=self.rb)
            self.state.verify(bad is None, f"{when}: step {s} row {bad} (pool row "
                                           f"{int(st.order[bad]) if bad is not None else -1}) differs from the pool")
        self.i = 0


def _set_step_latency(state, name: str, st, lat) -> None:
    """Metrics ``<name>`` (the point's median, back to back) and ``<name>_p50`` / ``<name>_p99`` (single calls, from
    :meth:`State.distribution`), in microseconds, and ``latency_samples``."""
    p50, p99 = (float(np.percentile(np.asarray(lat.samples_s, dtype=float), q)) for q in (50, 99))
    state.set_metric(name, st.median_s * 1e6)
    state.set_metric(f"{name}_p50", p50 * 1e6)
    state.set_metric(f"{name}_p99", p99 * 1e6)
    state.set_metric("latency_samples", lat.n)


# -- search in place ------------------------------------------------------------------------------------------------
def _search_dims(state) -> tuple[int, torch.dtype]:
    """(key dim, dtype): the preset's decode key (GQA: head_dim; MLA: the 576-wide latent + rope key) in the model's
    dtype on a GPU, float32 on the CPU."""
    _, _, qk, _ = ModelShape.from_cfg(state.cfg.model).attn_dims(True)
    dtype = getattr(torch, str(state.cfg.model.dtype)) if state.device.is_cuda else torch.float32
    return int(qk), dtype


def _search_need(state):
    n = int(state.params["tokens"])
    d, dtype = _search_dims(state)
    elt = torch.finfo(dtype).bits // 8
    keys = n * d * elt
    dev = n * 4 * 2 + (keys if state.params["method"] == "copy_first" else 0)
    return need(dev, "scores (and for copy_first the keys in HBM)", host_bytes=keys + n * 4)


def _keys(state, n: int, d: int, dtype) -> torch.Tensor:
    """The run's host-resident keys [n, d] (pinned on a GPU node), seeded normal values, shared by the methods."""
    seed = int(state.cfg.warm.seed) + 17

    def make():
        buf, _ = host_buffer(n * d * torch.finfo(dtype).bits // 8, True, state.device, numa_node(state))
        keys = buf.view(dtype).view(n, d)
        chunk = max(1, (64 << 20) // (d * 4))
        g = torch.Generator(device=state.device.torch).manual_seed(seed)
        for i in range(0, n, chunk):
            part = torch.randn(min(chunk, n - i), d, generator=g, device=state.device.torch).to(dtype)
            keys[i:i + len(part)].copy_(part)
        return keys

    return state.run_resource(("warm_keys", n, d, str(dtype), seed), make)


def _reference_scores(state, keys: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """float32 scores of every key (chunks moved to where q is), the reference a method's top-k is checked on."""
    def make():
        out = torch.empty(keys.shape[0], dtype=torch.float32, device=q.device)
        chunk = max(1, (256 << 20) // (keys.shape[1] * 4))
        for i in range(0, keys.shape[0], chunk):
            out[i:i + chunk] = keys[i:i + chunk].to(q.device).float() @ q
        return out

    return state.run_resource(("warm_ref_scores", keys.data_ptr(), keys.shape[0]), make)


@benchmark("warm_search", family="warm", cost=C.warm_search,
           axes=lambda c: {"method": list(c.warm.search_methods), "tokens": [int(v) for v in c.warm.search_tokens]},
           needs=_search_need)
def warm_search(state):
    """Score one decode query against keys resident in host memory, then top-k (method: uva_kernel, cpu,
    copy_first); keys_per_s, gbps of key bytes read, topk_us_p50/p99 of single steps. The top-k is checked against a
    float32 reference before and after timing."""
    w, p = state.cfg.warm, state.params
    n, method, top = int(p["tokens"]), p["method"], int(w.search_top_k)
    cuda = state.device.is_cuda
    if top >= n:
        state.skip(f"warm.search_top_k={top} >= tokens={n}: nothing to select")
    if method == "uva_kernel" and not cuda:
        state.skip("uva_kernel is a GPU kernel reading host memory; on a CPU-only machine the in-place scan is the "
                   "cpu method")
    d, dtype = _search_dims(state)
    keys = _keys(state, n, d, dtype)
    dev = state.device.torch
    g = torch.Generator(device=dev).manual_seed(int(w.seed) + 5)
    q = torch.randn(d, generator=g, device=dev, dtype=torch.float32)
    ref = _reference_scores(state, keys, q)
    elt = torch.finfo(dtype).bits // 8
    out = {}
    if method == "uva_kernel":
        from bench.hw.cuda_kernels import SCORE_KERNELS, score_keys_launcher

        if dtype not in SCORE_KERNELS:
            state.skip(f"no score kernel for {dtype} keys (kernels/warm.cu: bfloat16, float32)")
        scores = torch.empty(n, dtype=torch.float32, device=dev)
        launch = score_keys_launcher(keys.data_ptr(), n, d, dtype, q, scores)
        work = "device"

        def step():
            launch()
            out["idx"] = torch.topk(scores, top, sorted=False).indices
    elif method == "cpu":
        q_host = torch.empty(d, dtype=torch.float32).pin_memory() if cuda else q
        qk = torch.empty(d, dtype=dtype)
        work = "host_issued" if cuda else "host"

        def step():
            if cuda:  # the query is made on the GPU: to the host and waited for
                q_host.copy_(q, non_blocking=True)
                torch.cuda.current_stream().synchronize()
            qk.copy_(q_host)
            idx = torch.topk(torch.mv(keys, qk), top, sorted=False).indices
            out["idx"] = idx.to(dev, non_blocking=True) if cuda else idx
    elif method == "copy_first":
        on_dev = torch.empty_like(keys, device=dev) if cuda else torch.empty_like(keys)
        qd = q.to(dtype)
        work = "device" if cuda else "host"

        def step():
            on_dev.copy_(keys, non_blocking=True)
            out["idx"] = torch.topk(torch.mv(on_dev, qd), top, sorted=False).indices
    else:
        state.skip(f"unknown method {method!r}")
    kth = float(torch.topk(ref, top, sorted=True).values[-1])
    # a score's own rounding: bf16 keys (and a bf16 score where a method's matmul writes one) vs float32 math
    tol = float(ref.abs().max()) * (2.0 ** -6 if torch.finfo(dtype).bits <= 16 else 1e-5)

    def check(when: str) -> None:
        out.clear()
        step()
        state.device.synchronize()
        idx = out["idx"].to(ref.device).long()
        got = ref[idx]
        state.verify(idx.unique().numel() == top and bool((got >= kth - tol).all()),
                     f"{when}: top-{top} holds {int((got < kth - tol).sum())} key(s) scoring below the "
                     f"{top}th best (float32 reference) by more than {tol:.3g}")

    check("before timing")
    state.add_bytes(n * d * elt)
    state.add_items("keys", n)
    if cuda and method != "cpu":
        state.set_peak("gbps", pcie_peak(state))
    with state.issue_on_node(numa_node(state)):
        st = state.exec(step, work=work)
        lat = state.distribution(step, work="host_issued" if cuda else "host", samples=int(w.latency_samples))
    check("after timing")
    _set_step_latency(state, "topk_us", st, lat)
    state.note(key_dim=d, key_dtype=str(dtype).replace("torch.", ""), top_k=top,
               **({} if cuda else {"stand_in": "CPU stand-in: the CPU scoring host memory (cpu) and a memcpy "
                                               "before it (copy_first); no GPU"}))


# -- peer GPU -------------------------------------------------------------------------------------------------------
def _peer_supported(device) -> str | None:
    if not device.is_cuda:
        return "warm_peer needs two or more GPUs with peer access (NVLink or PCIe P2P); this run has no GPU"
    planned = getattr(device, "target", None)  # the planner's device: the target's GPUs, not this machine's
    n = planned.gpus if planned is not None else torch.cuda.device_count()
    if n < 2:
        return (f"warm_peer needs two or more GPUs with peer access; {n} visible (CUDA_VISIBLE_DEVICES shows which): "
                "no neighbour HBM to read")
    peer = (device.index + 1) % n
    if planned is None and not torch.cuda.can_device_access_peer(device.index, peer):
        return f"GPU {device.index} cannot access GPU {peer}'s memory (no peer access between them)"
    return None


def _peer_need(state):
    k, rb = int(state.cfg.warm.peer_rows), int(state.params["row_bytes"])
    return need(2 * k * rb + 3 * k * 8, "step buffers and row ids (the pool is on the peer GPU)")


@benchmark("warm_peer", family="warm", cost=C.warm_peer, supports=_peer_supported,
           axes=lambda c: {"method": list(c.warm.peer_methods), "row_bytes": row_sizes(c, c.warm.peer_row_bytes)},
           needs=_peer_need)
def warm_peer(state):
    """Rows gathered from a neighbour GPU's HBM into this one's per step (peer_kernel: loads from the peer through
    peer access; peer_copy: one cudaMemcpyPeerAsync per contiguous run); gbps, step_us, step_us_p50/p99,
    fraction_of_contiguous (one contiguous peer copy). Verified before and after timing."""
    w, p = state.cfg.warm, state.params
    k, rb, method = int(w.peer_rows), int(p["row_bytes"]), p["method"]
    if rb % 16:
        state.skip(f"row_bytes={rb}: rows must be a multiple of 16 bytes")
    me = state.device.index
    peer = (me + 1) % torch.cuda.device_count()
    n = int(w.pool_bytes)
    pool = state.run_resource(("warm_peer_pool", peer, n), lambda: pattern(n, int(w.seed) + 3,
                                                                            torch.device("cuda", peer)))
    plan = _plan(state, k, rb, "uniform", n)
    pool2d = pool[:plan.pool_rows * rb].view(plan.pool_rows, rb)
    dev = state.device.torch
    dst = torch.full((k, rb), POISON, dtype=torch.uint8, device=dev)
    steps = plan.steps
    if method == "peer_kernel":
        from bench.hw.cuda_kernels import enable_peer_access, row_gather_launcher

        state.note(peer_access=enable_peer_access(me, peer))
        arange = torch.arange(k, dtype=torch.int64, device=dev)
        kernels = [row_gather_launcher(pool2d.data_ptr(), rb, torch.from_numpy(s.fetched).to(dev), arange, dst)
                   for s in steps]
        work = "device"
        calls = 1
    else:
        runs = [list(zip(*(a.tolist() for a in runs_of(s.fetched)))) for s in steps]
        calls = max(len(r) for r in runs)
        if calls > int(w.max_copy_calls):
            state.skip(f"peer_copy: a step needs {calls} copy calls (> warm.max_copy_calls={int(w.max_copy_calls)})")
        work = "host_issued"
    i = [0]

    def step():
        s = i[0] % len(steps)
        i[0] += 1
        if method == "peer_kernel":
            kernels[s]()
        else:
            for src, length, at in runs[s]:
                dst[at:at + length].copy_(pool2d[src:src + length], non_blocking=True)

    def check(when: str) -> None:
        for s, st in enumerate(steps):
            dst.fill_(POISON)
            i[0] = s
            step()
            torch.cuda.synchronize()
            want = pool2d.index_select(0, torch.from_numpy(st.fetched).to(pool.device))
            bad = first_mismatch(dst, want.to(dev), unit=rb)
            state.verify(bad is None, f"{when}: step {s} row {bad} differs from the peer's pool")
        i[0] = 0

    check("before timing")
    state.add_bytes(k * rb)
    state.add_items("rows", k)
    st = state.exec(step, work=work)
    lat = state.distribution(step, work="host_issued", samples=int(w.latency_samples))
    check("after timing")
    flat, src = dst.view(-1), pool[:k * rb]
    ref = state.reference(("peer_contiguous", peer, k * rb), lambda: flat.copy_(src, non_blocking=True), work="device")
    _set_step_latency(state, "step_us", st, lat)
    state.set_metric("contiguous_gbps", k * rb / ref.median_s / 1e9)
    state.set_metric("fraction_of_contiguous", ref.median_s / st.median_s)
    state.note(peer_gpu=peer, copy_calls_per_step=calls, pool_rows=plan.pool_rows)


# -- cold-tier elephant flows beside decode ---------------------------------------------------------------------------
def cold_storage(cfg):
    """The storage settings of the cold flows: the storage family's, with the warm family's file size."""
    s = OmegaConf.to_container(cfg.storage, resolve=True)
    s["file_bytes"] = int(cfg.warm.cold_file_bytes)
    return OmegaConf.create(s)


def _decode_dims(state) -> tuple[bool, int, int, int, int]:
    w = state.cfg.warm
    return True, int(w.cold_layers), int(w.cold_decode_batch), 1, int(w.cold_decode_ctx)


def _cold_need(state):
    """The decode lane's layers on the device, the AIO engine's buffers in host memory, and the file."""
    io = io_need(state, False, s=cold_storage(state.cfg))
    nd = stack_need(state, *_decode_dims(state), host_bytes=io.host_bytes, extra_what=io.what)
    return need(nd.device_bytes, nd.what, host_bytes=nd.host_bytes, file_bytes=io.file_bytes)


@benchmark("cold_read_under_decode", family="warm", cost=C.cold_read_under_decode,
           axes=lambda c: {"engine": ["aio"], "request_bytes": [int(v) for v in c.warm.cold_request_bytes],
                           "queue_depth": [int(v) for v in c.warm.cold_queue_depths]},
           needs=_cold_need)
def cold_read_under_decode(state):
    """Large sequential reads from storage (queue_depth requests of request_bytes in flight, Linux AIO, page cache
    dropped before every pass) while decode steps run (warm.cold_decode_batch x cold_decode_ctx through
    cold_layers layers), alone and together: read_gbps under decode and alone, read_bw_retained, decode_step_us
    alone and under, decode_slowdown, overlap_ratio. Reads verified against the file's pattern."""
    s = cold_storage(state.cfg)
    t = storage_setup(state, False, s=s)
    if not state.device.is_cuda:
        state.note(stand_in="CPU stand-in: the decode lane is the CPU's own layer loop (and smaller requests)")
    elif t.io.request < COLD_ELEPHANT:
        state.note(small_requests=f"requests of {t.io.request} bytes: below the {COLD_ELEPHANT >> 20} MiB of an "
                                  "elephant flow")
    drop = _drop_and_prove(t.fd, t.file_bytes)
    drop()
    _verify_reads(state, t.io, t.tile, "before timing")
    stack = build_stack(state, *_decode_dims(state))
    decode, dwork = compute_lane(state, stack)
    read_work = "host_issued" if state.device.is_cuda else "host"
    key = ("cold_read_alone", t.io.request, t.io.queue_depth, len(t.io.offs))
    read_alone = state.reference_lanes(key, [Lane("read", t.io.run, read_work)], prepare=drop)
    dkey = ("decode_alone", stack.shape.name, stack.k, int(state.cfg.warm.cold_decode_batch))
    one = state.reference_lanes(dkey + (1,), [Lane("decode", decode, dwork)])
    repeats = int(min(64, max(1, round(read_alone.total.median_s / one.total.median_s))))
    many, mwork = (decode, dwork) if repeats == 1 else compute_lane(state, stack, repeats)
    decode_alone = one if repeats == 1 else state.reference_lanes(dkey + (repeats,), [Lane("decode", many, mwork)])
    state.add_bytes(t.io.bytes)
    res = state.exec_lanes([Lane("read", t.io.run, read_work), Lane("decode", many, mwork)], prepare=drop)
    drop()
    _verify_reads(state, t.io, t.tile, "after timing")
    r_alone, d_alone = read_alone.total.median_s, decode_alone.total.median_s
    r_under, d_under = res.lanes["read"].median_s, res.lanes["decode"].median_s
    noise = overlap.noise_band(decode_alone.total.noise, res.lanes["decode"].noise)
    m = overlap.pair_overlap(r_alone, d_alone, r_under, d_under, res.total.median_s, noise)
    state.set_metric("overlap_ratio", m["overlap_ratio"])
    state.set_metric("together_vs_max", m["together_vs_max"])
    state.set_metric("decode_slowdown", m["compute_slowdown"])
    state.set_metric("read_slowdown", m["copy_slowdown"])
    state.set_metric("slowdown_noise", m["slowdown_noise"])
    state.set_metric("read_gbps", t.io.bytes / r_under / 1e9)
    state.set_metric("read_gbps_alone", t.io.bytes / r_alone / 1e9)
    state.set_metric("read_bw_retained", r_alone / r_under)
    state.set_metric("decode_step_us_alone", d_alone / repeats * 1e6)
    state.set_metric("decode_step_us_under", d_under / repeats * 1e6)
    state.set_metric("decode_repeats", repeats)
    state.note(decode_shape=f"decode step batch {state.cfg.warm.cold_decode_batch} at ctx "
                            f"{state.cfg.warm.cold_decode_ctx}, {stack.k} layers",
               lanes="read: host thread (AIO); decode: CUDA graphs on a stream" if state.device.is_cuda else
               "host threads")


# -- fetch on demand (registered last: the family budget trims its sweep, never the single points above) ----------
@benchmark("warm_fetch", family="warm", cost=C.warm_fetch, axes=_fetch_axes, needs=_fetch_need)
def warm_fetch(state):
    """Per decode step, k token rows from a pinned host pool land in HBM (method: uva_kernel, cpu_gather,
    copy_per_run); gbps of the bytes over the link, useful_gbps of all k rows, step_us, step_us_p50/p99 of single
    steps, fraction_of_contiguous. Times the steps only; every step verified before and after."""
    w, p = state.cfg.warm, state.params
    k, rb, method = int(p["rows"]), int(p["row_bytes"]), p["method"]
    pool = _pool(state)
    plan = _plan(state, k, rb, str(p["locality"]), pool.numel())
    f = RowFetch(state, method, plan, rb, pool)
    f.check_cycle("before timing")
    fetched = plan.n_fetch * rb
    state.add_bytes(fetched)
    state.add_items("rows", k)
    if state.device.is_cuda:
        state.set_peak("gbps", pcie_peak(state))
    with state.issue_on_node(numa_node(state)):
        st = state.exec(f.step, work=f.work)
        lat = state.distribution(f.step, work="host_issued" if state.device.is_cuda else "host",
                                 samples=int(w.latency_samples))
    f.check_cycle("after timing")
    flat = f.bufs[0].view(-1)[:fetched]
    src = pool[:fetched]
    ref = state.reference(("warm_contiguous", fetched), lambda: flat.copy_(src, non_blocking=True),
                          work="device" if state.device.is_cuda else "host")
    contiguous_gbps = fetched / ref.median_s / 1e9
    _set_step_latency(state, "step_us", st, lat)
    state.set_metric("useful_gbps", k * rb / st.median_s / 1e9)
    state.set_metric("contiguous_gbps", contiguous_gbps)
    state.set_metric("fraction_of_contiguous", fetched / st.median_s / 1e9 / contiguous_gbps)
    state.set_metric("rows_fetched", plan.n_fetch)
    state.note(pool_rows=plan.pool_rows, rows_kept=plan.n_keep, model_row=rb == model_row_bytes(state.cfg),
               latency_clock=lat.clock, steps_in_cycle=len(plan.steps))


@validator("warm")
def _warm(cfg) -> None:
    w = cfg.warm
    for key in ("pool_bytes", "steps", "latency_samples", "max_copy_calls", "search_top_k", "peer_rows",
                "cold_file_bytes", "cold_decode_batch", "cold_decode_ctx", "cold_layers"):
        positive_ints(f"warm.{key}", [w[key]])
    for key in ("rows", "search_tokens", "cold_request_bytes", "cold_queue_depths"):
        positive_ints(f"warm.{key}", w[key])
    for key in ("row_bytes", "peer_row_bytes"):
        check(len(w[key]) > 0, f"warm.{key}", list(w[key]), "at least one row size")
        for v in w[key]:
            ok = str(v) == "model" or (isinstance(v, int) and not isinstance(v, bool) and v >= 16 and v % 16 == 0)
            check(ok, f"warm.{key}", v, "byte sizes that are multiples of 16 (>= 16), or model (the preset's row)")
    for v in w.locality:
        try:
            parse_locality(str(v))
        except ValueError:
            check(False, "warm.locality", v, "each one of uniform, runs_<R> (R >= 1), repeat_<F> (0 <= F < 1)")
    for key, allowed in (("methods", METHODS), ("search_methods", SEARCH_METHODS), ("peer_methods", PEER_METHODS)):
        check(len(w[key]) > 0, f"warm.{key}", list(w[key]), f"at least one of {', '.join(allowed)}")
        for v in w[key]:
            check(v in allowed, f"warm.{key}", v, f"each one of {', '.join(allowed)}")
    for v in w.cold_request_bytes:
        check(v % 4096 == 0, "warm.cold_request_bytes", v, "multiples of 4096 (O_DIRECT alignment)")
        check(v <= w.cold_file_bytes, "warm.cold_request_bytes", v, f"at most warm.cold_file_bytes ({w.cold_file_bytes})")
    check_file_fits(check_storage_root(cfg), "warm.cold_file_bytes", int(w.cold_file_bytes))
