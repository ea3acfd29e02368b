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
    """A callable launching kv_gather (offload) or kv_scatter (onload) on torch's current stream."""
    for p in ptrs + [packed.data_ptr()]:
        if p % 16:
            raise ValueError(f"address {p:#x} is not 16-byte aligned; the kernel uses 16-byte accesses")
    if chunk % 16 or stride % 16:
        raise ValueError(f"chunk {chunk} / stride {stride} bytes not multiples of 16")
    dev = idx.device if idx.device.type == "cuda" else torch.device("cuda")
    table = torch.tensor(ptrs, dtype=torch.int64, device=dev)
    ids = idx.to(dev, torch.int64)
    n = len(ids)
    device = cupy_module().cuda.Device(dev.index if dev.index is not None else torch.cuda.current_device())
    with device:  # compile and load on the GPU torch uses
        kern = module("kv_transfer.cu").get_function("kv_gather" if offload else "kv_scatter")
    words = n * len(ptrs) * chunk // 16
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    threads = 256
    blocks = int(max(1, min((words + threads - 1) // threads, sms * 8)))
    args = (np.uint64(table.data_ptr()), np.int32(len(ptrs)), np.uint64(ids.data_ptr()), np.int64(n),
            np.int64(chunk), np.int64(stride), np.uint64(packed.data_ptr()))

    def run():  # RawKernel launches on CuPy's current stream: make that torch's current stream at call time
        with device, _stream():
            kern((blocks,), (threads,), args)

    run.keepalive = (table, ids)  # the kernel reads these through raw pointers
    return run
