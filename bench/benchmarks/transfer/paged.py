"""Paged KV-cache block transfers between a GPU pool and host memory, shaped by the model preset.

offload = gather N random blocks of the pool into a packed pinned host buffer; onload = scatter them back.
Methods side by side: one copy per chunk, staging gather + one bulk copy, and the UVA kernel (kernels/).
GB/s counts KV payload bytes once; ``fraction_of_contiguous`` compares with one contiguous pinned copy of the
same bytes in the same direction, measured in the same run.
"""
from __future__ import annotations

import torch

from bench.benchmarks.transfer.contiguous import alloc, numa_node, set_link_peak
from bench.core.checks import check, positive_ints
from bench.hw.hostmem import POISON, first_mismatch
from bench.llm.kvlayout import LAYOUTS, METHODS, PagedPool, kernel_copies, per_block_copies, staged_copies
from bench.benchmarks.transfer import cost as C
from bench.core.registry import benchmark
from bench.harness import need
from bench.llm.shapes import ModelShape
from bench.core.checks import validator


def _axes(c):
    return {"layout": list(c.transfer.layouts), "method": list(c.transfer.methods),
            "block_tokens": list(c.transfer.block_tokens)}


def paged_need(state, block_tokens: int, offload: bool, paged_bytes: int, pool_factor: int) -> tuple[int, int, int]:
    """(blocks moved, device bytes, host bytes) of a paged move: device: pool + staging + a verification copy of
    the packed data; host: the packed (pinned) buffer and, for onload, its pattern copy."""
    block_bytes = ModelShape.from_cfg(state.cfg.model).kv_block_bytes(block_tokens)
    n = max(1, int(paged_bytes) // block_bytes)
    packed = n * block_bytes
    return n, n * int(pool_factor) * block_bytes + 2 * packed, (1 if offload else 2) * packed


class PagedMove:
    """N random blocks of a paged GPU pool moved to (offload) or from (onload) a packed pinned host buffer by one
    method, with the poison-then-verify check the benchmarks run before and after timing (its memory: the point's
    needs count :func:`paged_need`)."""

    def __init__(self, state, method: str, layout: str, block_tokens: int, offload: bool, paged_bytes: int,
                 pool_factor: int, seed: int):
        shape = ModelShape.from_cfg(state.cfg.model)
        block_bytes = shape.kv_block_bytes(block_tokens)
        n, _, _ = paged_need(state, block_tokens, offload, paged_bytes, pool_factor)
        pool_blocks = n * int(pool_factor)
        self.n, self.offload, self.packed_bytes = n, offload, n * block_bytes
        dev = state.device.torch
        self.device = state.device
        self.pool = PagedPool.allocate(shape, block_tokens, layout, pool_blocks, dev, seed)
        g = torch.Generator().manual_seed(seed + block_tokens)
        idx_cpu = torch.randperm(pool_blocks, generator=g)[:n]  # random, unsorted: blocks come back in any order
        self.idx = idx_cpu.to(dev)
        self.packed = alloc(state, "host", self.packed_bytes, True, None if offload else seed + 7)
        self.host_pattern = None if offload else self.packed.clone()
        self.staging = torch.empty(self.packed_bytes, dtype=torch.uint8, device=dev)
        # one copy call per chunk is thousands of cudaMemcpyAsync (8,192 for llama3_8b 16-token blocks): more than a
        # stream queue holds, and the host's issue rate is part of the method's cost: host-issued work
        self.work = "host_issued" if method == "memcpy_per_block" else "device"
        if method == "memcpy_per_block":
            self.run = per_block_copies(self.pool, idx_cpu.tolist(), self.packed, offload)
            state.note(copy_calls_per_transfer=n * self.pool.n_src)
        elif method == "staged":
            self.run = staged_copies(self.pool, self.idx, self.packed, self.staging, offload)
        else:
            self.run, impl = kernel_copies(self.pool, self.idx, self.packed, offload)
            state.note(kernel_impl=impl)
        self.untouched = _untouched_sample(self.pool, idx_cpu, pool_blocks)
        self.state = state
        state.note(block_bytes=self.pool.block_bytes, chunk_bytes=self.pool.chunk_bytes,
                   chunks_per_block=self.pool.n_src, blocks_moved=n, pool_blocks=pool_blocks)

    def checked_run(self, when: str, run=None) -> None:
        """Poison the destination, move once (``run``: the move, or something that includes it), verify."""
        _poison(self.pool, self.packed, self.idx, self.offload)
        (run or self.run)()
        self.device.synchronize()
        _check(self.state, self.pool, self.idx, self.packed, self.host_pattern, self.offload, self.untouched, when)

    def contiguous(self):
        """The contiguous pinned copy of the same bytes in the same direction (the bar paged methods are held to)."""
        if self.offload:
            return lambda: self.packed.copy_(self.staging, non_blocking=True)
        return lambda: self.staging.copy_(self.packed, non_blocking=True)


def paged_transfer(state, offload: bool) -> None:
    t = state.cfg.transfer
    block_tokens = int(state.params["block_tokens"])
    mv = PagedMove(state, state.params["method"], state.params["layout"], block_tokens, offload, int(t.paged_bytes),
                   int(t.pool_factor), int(t.seed))
    mv.checked_run("before timing")
    state.add_bytes(mv.packed_bytes)
    state.add_items("blocks", mv.n)
    set_link_peak(state, "d2h" if offload else "h2d")
    with state.issue_on_node(numa_node(state)):
        state.exec(mv.run, work=mv.work)
    mv.checked_run("after timing")
    ref = state.reference(("contiguous_pinned", offload, mv.packed_bytes), mv.contiguous(), work="device")
    contiguous_gbps = mv.packed_bytes / ref.median_s / 1e9
    state.set_metric("contiguous_gbps", contiguous_gbps)
    state.set_metric("fraction_of_contiguous", (mv.packed_bytes / state.stats.median_s / 1e9) / contiguous_gbps)
    state.set_metric("us_per_block", state.stats.median_s / mv.n * 1e6)


def _untouched_sample(pool: PagedPool, idx_cpu: torch.Tensor, pool_blocks: int, k: int = 16):
    """A few blocks not moved, with their contents, to prove an onload wrote nowhere else."""
    moved = set(idx_cpu.tolist())
    others = torch.tensor([b for b in range(pool_blocks) if b not in moved][:k], dtype=torch.long,
                          device=pool.tensors[0].device)
    return others, pool.gather_reference(others).clone()


def _poison(pool: PagedPool, packed: torch.Tensor, idx: torch.Tensor, offload: bool) -> None:
    if offload:
        packed.fill_(POISON)
    else:
        for s in pool.sources():
            s.index_fill_(0, idx, POISON)


def _check(state, pool, idx, packed, host_pattern, offload, untouched, when: str) -> None:
    dev = pool.tensors[0].device
    got = pool.gather_reference(idx) if not offload else packed.to(dev).view(len(idx), -1)
    want = host_pattern.to(dev).view(len(idx), -1) if not offload else pool.gather_reference(idx)
    bad = first_mismatch(got, want, unit=pool.block_bytes)
    state.verify(bad is None, f"{when}: block {bad} (pool block {int(idx[bad]) if bad is not None else -1}) "
                              f"differs from its seeded pattern")
    others, before = untouched
    state.verify(bool(torch.equal(pool.gather_reference(others), before)),
                 f"{when}: a block that was not moved changed")


def _paged_need(offload: bool):
    def needs(state):
        t = state.cfg.transfer
        _, dev, host = paged_need(state, int(state.params["block_tokens"]), offload, int(t.paged_bytes),
                                  int(t.pool_factor))
        return need(dev, "KV pool, host, staging and check buffers", host_bytes=host)
    return needs


@benchmark("paged_offload", family="transfer", cost=C.paged, axes=_axes, needs=_paged_need(True))
def paged_offload(state):
    """Gather N random KV blocks of a paged GPU pool into pinned host memory (KV offload); GB/s of KV bytes,
    us_per_block, fraction_of_contiguous. Times the transfer only; pool fill and verification are outside."""
    paged_transfer(state, offload=True)


@benchmark("paged_onload", family="transfer", cost=C.paged, axes=_axes, needs=_paged_need(False))
def paged_onload(state):
    """Scatter N KV blocks from pinned host memory into random slots of a paged GPU pool (KV onload); GB/s of
    KV bytes, us_per_block, fraction_of_contiguous."""
    paged_transfer(state, offload=False)


@validator("transfer")
def _transfer(cfg) -> None:
    t = cfg.transfer
    for key in ("sizes", "streams", "block_tokens"):
        positive_ints(f"transfer.{key}", t[key])
    for key in ("paged_bytes", "pool_factor", "stream_bytes", "latency_max_bytes"):
        positive_ints(f"transfer.{key}", [t[key]])
    for v in t.layouts:
        check(v in LAYOUTS, "transfer.layouts", v, f"each one of {', '.join(LAYOUTS)}")
    for v in t.methods:
        check(v in METHODS, "transfer.methods", v, f"each one of {', '.join(METHODS)}")
