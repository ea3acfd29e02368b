"""Paged KV-cache pools and the three ways of moving their blocks to/from a packed (block-major) buffer.

Layouts of the GPU pool (the packed side, e.g. a host chunk, is always block-major: [block][layer][k/v][tokens]):
  layer_major  one tensor per layer, [2, pool_blocks, block_tokens, kv_heads, head_dim] (vLLM): a block is
               2 x layers separate chunks (1 x layers for MLA's single latent)
  block_major  one tensor [pool_blocks, layers, 2, block_tokens, kv_heads, head_dim] (LMCache chunk): a block is
               one contiguous chunk
Buffers are uint8 views: only bytes matter for transfers, and integers compare exactly.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from bench.hw.hostmem import pattern
from bench.llm.shapes import ModelShape

LAYOUTS = ("layer_major", "block_major")
METHODS = ("memcpy_per_block", "staged", "uva_kernel")


@dataclass
class PagedPool:
    shape: ModelShape
    block_tokens: int
    layout: str
    pool_blocks: int
    tensors: list  # layer_major: one per layer, [components, pool_blocks, chunk]; block_major: [pool_blocks, block]

    @property
    def chunk_bytes(self) -> int:
        """Bytes of one contiguous piece of a block in this layout."""
        per_component = self.block_tokens * self.shape.kv_token_elems_per_component * self.shape.elt_bytes
        return per_component if self.layout == "layer_major" else self.block_bytes

    @property
    def block_bytes(self) -> int:
        return self.shape.kv_block_bytes(self.block_tokens)

    @property
    def n_src(self) -> int:
        """Chunks per block = separate source arrays the kernel reads from."""
        return self.shape.layers * self.shape.kv_components if self.layout == "layer_major" else 1

    def sources(self) -> list[torch.Tensor]:
        """One [pool_blocks, chunk_bytes] view per chunk source, in packed order (layer, component)."""
        if self.layout == "block_major":
            return [self.tensors[0]]
        return [t[c] for t in self.tensors for c in range(t.shape[0])]

    def pointer_table(self) -> tuple[list[int], int]:
        """(base address of each source, bytes between consecutive blocks of a source): the kernel's addressing."""
        srcs = self.sources()
        return [s.data_ptr() for s in srcs], srcs[0].stride(0) * srcs[0].element_size()

    @classmethod
    def allocate(cls, shape: ModelShape, block_tokens: int, layout: str, pool_blocks: int, device, seed: int):
        per_component = block_tokens * shape.kv_token_elems_per_component * shape.elt_bytes
        if layout == "layer_major":
            tensors = [pattern(shape.kv_components * pool_blocks * per_component, seed + i, device)
                       .view(shape.kv_components, pool_blocks, per_component) for i in range(shape.layers)]
        elif layout == "block_major":
            tensors = [pattern(pool_blocks * shape.kv_block_bytes(block_tokens), seed, device)
                       .view(pool_blocks, shape.kv_block_bytes(block_tokens))]
        else:
            raise ValueError(f"layout {layout!r} not in {LAYOUTS}")
        return cls(shape, block_tokens, layout, pool_blocks, tensors)

    def pool_bytes(self) -> int:
        return self.pool_blocks * self.block_bytes

    # -- reference paths (torch indexing), used to verify the methods -------------------------------------------
    def gather_reference(self, idx: torch.Tensor) -> torch.Tensor:
        """[n_blocks, block_bytes] packed copy of blocks ``idx`` built with plain tensor indexing."""
        return torch.stack([s[idx] for s in self.sources()], dim=1).reshape(len(idx), -1)


def packed_view(buf: torch.Tensor, pool: PagedPool, n: int) -> torch.Tensor:
    return buf.view(n, pool.n_src, pool.chunk_bytes)


# -- method 1: one copy call per chunk ----------------------------------------------------------------------------
def per_block_copies(pool: PagedPool, idx_list: list[int], packed: torch.Tensor, offload: bool):
    """One cudaMemcpyAsync (torch copy_) per chunk: n_blocks x n_src calls, issued from Python."""
    srcs = pool.sources()
    view = packed_view(packed, pool, len(idx_list))

    def run():
        for b, blk in enumerate(idx_list):
            for s, src in enumerate(srcs):
                if offload:
                    view[b, s].copy_(src[blk], non_blocking=True)
                else:
                    src[blk].copy_(view[b, s], non_blocking=True)

    return run


# -- method 2: gather into a device staging buffer, one bulk copy --------------------------------------------------
def staged_copies(pool: PagedPool, idx: torch.Tensor, packed: torch.Tensor, staging: torch.Tensor, offload: bool):
    """Gather/scatter kernels between the pool and a contiguous device staging buffer, plus one bulk copy."""
    srcs = pool.sources()
    n = len(idx)
    sview = packed_view(staging, pool, n)

    def run():
        if offload:
            if len(srcs) == 1:
                torch.index_select(srcs[0], 0, idx, out=staging.view(n, -1))
            else:
                for s, src in enumerate(srcs):
                    sview[:, s].copy_(src.index_select(0, idx))
            packed.copy_(staging, non_blocking=True)
        else:
            staging.copy_(packed, non_blocking=True)
            for s, src in enumerate(srcs):
                src.index_copy_(0, idx, sview[:, s])

    return run


# -- method 3: one kernel reading/writing the packed buffer in place (UVA host memory on a GPU) ----------------------
def kernel_copies(pool: PagedPool, idx: torch.Tensor, packed: torch.Tensor, offload: bool):
    """kernels/kv_transfer.cu (CuPy) on a GPU; on the CPU the same addressing runs as ctypes.memmove per chunk."""
    ptrs, stride = pool.pointer_table()
    chunk = pool.chunk_bytes
    n = len(idx)
    if packed.device.type == "cuda" or pool.tensors[0].device.type == "cuda":
        from bench.hw.cuda_kernels import kv_transfer_launcher

        return kv_transfer_launcher(ptrs, stride, chunk, idx, packed, offload), "cupy_rawmodule"
    idx_list = [int(i) for i in idx]
    base = packed.data_ptr()
    n_src = len(ptrs)

    def run():
        for b in range(n):
            for s in range(n_src):
                p_src = ptrs[s] + idx_list[b] * stride
                p_pack = base + (b * n_src + s) * chunk
                if offload:
                    ctypes.memmove(p_pack, p_src, chunk)
                else:
                    ctypes.memmove(p_src, p_pack, chunk)

    return run, "cpu_emulation(ctypes.memmove)"
