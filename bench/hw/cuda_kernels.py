"""CuPy RawModule loading of kernels/*.cu and launch helpers (GPU only; import needs cupy)."""
from __future__ import annotations

import functools

import numpy as np
import torch

from bench.core.config import kernels_dir
from bench.core.errors import UserError


def cupy_module():
    try:
        import cupy
    except ImportError:
        raise UserError("the uva_kernel method needs CuPy: pip install -e '.[gpu-cu13]' (or '.[gpu-cu12]', "
                        "matching torch.version.cuda)") from None
    return cupy


@functools.lru_cache(maxsize=None)
def module(name: str):
    cupy = cupy_module()
    src = (kernels_dir() / name).read_text()
    return cupy.RawModule(code=src, options=("--std=c++17",))


_STREAMS: dict = {}


def _stream():
    """torch's current stream as a CuPy stream (so a launch joins whatever stream the caller made current, e.g. a
    lane's stream in the interference benchmarks); wrappers are cached by handle. CuPy 14 takes the stream through
    the CUDA stream protocol (``Stream.from_external``, torch streams implement ``__cuda_stream__``); CuPy 13
    only has ``ExternalStream`` (deprecated in 14)."""
    ts = torch.cuda.current_stream()
    handle = ts.cuda_stream
    if handle not in _STREAMS:
        cuda = cupy_module().cuda
        if hasattr(cuda.Stream, "from_external") and hasattr(ts, "__cuda_stream__"):
            _STREAMS[handle] = cuda.Stream.from_external(ts)
        else:
            _STREAMS[handle] = cuda.ExternalStream(handle, ts.device.index)
    return _STREAMS[handle]


def hold_launcher(device_index: int):
    """A callable ``hold(seconds)`` queuing kernels/pace.cu's ``hold_ns`` on torch's current stream: the stream waits
    that long by the GPU's %globaltimer (wall clock), whatever the SM clock does under load."""
    device = cupy_module().cuda.Device(device_index)
    with device:
        kern = module("pace.cu").get_function("hold_ns")

    def hold(seconds: float) -> None:
        with device, _stream():
            kern((1,), (1,), (np.uint64(max(0, int(seconds * 1e9))),))

    return hold


def kv_transfer_launcher(ptrs: list[int], stride: int, chunk: int, idx: torch.Tensor, packed: torch.Tensor,
                         offload: bool):
    """A callable launching kv_gather (offload) or kv_scatter (onload) on torch's current stream: chunks of the
    sources at ``ptrs`` (pool addresses, as ``data_ptr()`` gives them) to/from ``packed`` (pinned host memory through
    UVA, or HBM)."""
    *ptrs, packed_ptr = kernel_addresses(*ptrs, packed.data_ptr())
    if chunk % 16 or stride % 16:
        raise ValueError(f"chunk {chunk} / stride {stride} bytes not multiples of 16")
    dev = idx.device if idx.device.type == "cuda" else torch.device("cuda")
    table = torch.tensor(ptrs, dtype=torch.int64, device=dev)
    ids = idx.to(dev, torch.int64)
    n = len(ids)
    args = (np.uint64(table.data_ptr()), np.int32(len(ptrs)), np.uint64(ids.data_ptr()), np.int64(n),
            np.int64(chunk), np.int64(stride), np.uint64(packed_ptr))
    return _launcher("kv_transfer.cu", "kv_gather" if offload else "kv_scatter", _index(dev),
                     n * len(ptrs) * chunk // 16, args, keepalive=(table, ids))


def _index(dev: torch.device) -> int:
    return dev.index if dev.index is not None else torch.cuda.current_device()


def _launcher(source: str, name: str, index: int, items: int, args: tuple, keepalive=()):
    """A callable launching kernel ``name`` of kernels/``source`` (compiled and loaded on GPU ``index``, the one torch
    uses) as a grid-stride loop over ``items`` on torch's current stream; ``keepalive``: tensors the kernel reads
    through raw pointers."""
    device = cupy_module().cuda.Device(index)
    with device:
        kern = module(source).get_function(name)
    blocks, threads = _launch_shape(items, index)

    def run():  # RawKernel launches on CuPy's current stream: make that torch's current stream at call time
        with device, _stream():
            kern((blocks,), (threads,), args)

    run.keepalive = keepalive
    return run


def _launch_shape(words: int, device_index: int, threads: int = 256, waves: int = 8) -> tuple[int, int]:
    """(blocks, threads) of a grid-stride kernel over ``words`` items: at most ``waves`` blocks per SM."""
    sms = torch.cuda.get_device_properties(device_index).multi_processor_count
    return int(max(1, min((words + threads - 1) // threads, sms * waves))), threads


def kernel_addresses(*ptrs: int) -> list[int]:
    """The addresses a kernel is given for host-side addresses ``ptrs`` (``data_ptr()`` of pinned host memory or of
    GPU memory): each one's :func:`device_pointer`, checked 16-byte aligned. Every launcher passes the caller's
    addresses through here, so no caller translates them itself."""
    out = [device_pointer(p) for p in ptrs]
    _aligned("address", *out)
    return out


def _aligned(what: str, *values: int) -> None:
    for v in values:
        if v % 16:
            raise ValueError(f"{what} {v:#x} is not 16-byte aligned; the kernel uses 16-byte accesses")


def row_gather_launcher(pool_ptr: int, row_bytes: int, src_ids: torch.Tensor, dst_ids: torch.Tensor,
                        dst: torch.Tensor):
    """A callable launching kernels/warm.cu ``row_gather`` on torch's current stream: rows ``src_ids`` of the pool
    at ``pool_ptr`` (``data_ptr()`` of pinned host memory, read through UVA, or of a peer GPU's HBM) into rows
    ``dst_ids`` of ``dst``."""
    pool_ptr, dst_ptr = kernel_addresses(pool_ptr, dst.data_ptr())
    _aligned("row bytes", row_bytes)
    dev = dst.device
    src, dsti = src_ids.to(dev, torch.int64), dst_ids.to(dev, torch.int64)
    if len(src) != len(dsti):
        raise ValueError(f"{len(src)} source rows but {len(dsti)} destination rows")
    words = row_bytes // 16
    args = (np.uint64(pool_ptr), np.uint64(src.data_ptr()), np.uint64(dsti.data_ptr()), np.int64(len(src)),
            np.int64(words), np.uint64(dst_ptr))
    return _launcher("warm.cu", "row_gather", _index(dev), len(src) * words, args, keepalive=(src, dsti))


SCORE_KERNELS = {torch.bfloat16: "score_keys_bf16", torch.float32: "score_keys_f32"}


def score_keys_launcher(keys_ptr: int, n: int, dim: int, dtype: torch.dtype, q: torch.Tensor, scores: torch.Tensor):
    """A callable launching kernels/warm.cu ``score_keys_*`` on torch's current stream: ``scores[i] = K[i] . q`` for
    the ``n`` keys of ``dim`` values at ``keys_ptr`` (``data_ptr()`` of pinned host memory, read through UVA),
    float32 accumulation. ``q``: float32 on the GPU; ``scores``: float32 [n] on the GPU."""
    if dtype not in SCORE_KERNELS:
        raise ValueError(f"no score kernel for {dtype} keys (bfloat16, float32)")
    elt = torch.finfo(dtype).bits // 8
    (keys_ptr,) = kernel_addresses(keys_ptr)
    _aligned("key bytes", dim * elt)
    if q.dtype != torch.float32 or scores.dtype != torch.float32 or q.numel() != dim or scores.numel() < n:
        raise ValueError("q must be float32 [dim] and scores float32 [n] on the GPU")
    args = (np.uint64(keys_ptr), np.uint64(q.data_ptr()), np.int64(n), np.int64(dim * elt // 16),
            np.uint64(scores.data_ptr()))
    return _launcher("warm.cu", SCORE_KERNELS[dtype], _index(scores.device), n * 32, args,  # a warp per key
                     keepalive=(q, scores))


def enable_peer_access(device_index: int, peer_index: int) -> str:
    """Let kernels on ``device_index`` load from ``peer_index``'s memory (cudaDeviceEnablePeerAccess); returns
    'enabled' or 'already enabled'."""
    cupy = cupy_module()
    with cupy.cuda.Device(device_index):
        try:
            cupy.cuda.runtime.deviceEnablePeerAccess(peer_index)
        except cupy.cuda.runtime.CUDARuntimeError as e:
            if getattr(e, "status", None) == cupy.cuda.runtime.errorPeerAccessAlreadyEnabled or \
                    "PeerAccessAlreadyEnabled" in str(e):
                return "already enabled"
            raise
    return "enabled"


def device_pointer(ptr: int) -> int:
    """The address a kernel uses for ``ptr``: for registered (pinned, mapped) host memory the device pointer the
    driver maps it to (cudaPointerGetAttributes; the host address itself on UVA systems that allow it), for device
    memory (this GPU's or a peer's) ``ptr`` itself."""
    attrs = cupy_module().cuda.runtime.pointerGetAttributes(int(ptr))
    return int(attrs.devicePointer) or int(ptr)
