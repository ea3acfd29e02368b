"""What both sides of a handoff pair share (light: numpy and the standard library; torch only for VRAM): NIXL's
import and agents, the side channel's framing, the paged KV pool of one side, its seeded pattern and the byte-for-byte
check of a destination.

Side channel: a TCP connection carrying length-prefixed JSON objects (NIXL's agent metadata base64-encoded), as
serving stacks exchange metadata beside NIXL (vLLM: a ZMQ socket). JSON, never pickle: the harness listens on every
interface when the peer is a second SLURM task, and a connection must present the run's token first.

Pool: one buffer per layer, ``[components, pool_blocks, chunk_bytes]`` (vLLM's per-layer K/V caches: the transfer
family's ``layer_major`` layout); a descriptor is one chunk: one (layer, K|V, block). A region is one (layer,
component) row of chunks; regions are numbered layer-major (``layer * components + component``).
"""
from __future__ import annotations

import base64
import json
import mmap
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

NIXL_HINT = 'NIXL not installed: pip install -e ".[nixl-cu13]" (or ".[nixl-cu12]", matching torch.version.cuda)'
NIXL_MODULES = ("nixl._api", "nixl_cu13._api", "nixl_cu12._api")  # the meta package picks its CUDA build; else one
POISON = 0xA5  # the destination's bytes before a checked transfer (bench.hw.hostmem.POISON)
UCX_PARAMS = {"ucx_error_handling_mode": "none"}  # intra-node: shared-memory AM + CMA RMA (error mode "peer"
# disables CMA); a dead peer still fails the transfer through the side channel's close
MAX_MESSAGE = 1 << 30


# -- NIXL ------------------------------------------------------------------------------------------------------------
def nixl_api():
    """NIXL's Python API module (``nixl_agent``, ``nixl_agent_config``), its logs at WARN unless NIXL_LOG_LEVEL says
    otherwise; ImportError with the install hint when no NIXL package is installed."""
    import importlib

    os.environ.setdefault("NIXL_LOG_LEVEL", "WARN")
    for name in NIXL_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(NIXL_HINT)


def nixl_version() -> Optional[str]:
    from importlib import metadata

    for dist in ("nixl", "nixl-cu13", "nixl-cu12"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def make_agent(name: str):
    """A NIXL agent without a progress thread (the caller progresses it: serving stacks poll it every engine step)
    and without backends (created per point: :func:`ensure_backend`)."""
    api = nixl_api()
    return api.nixl_agent(name, api.nixl_agent_config(enable_prog_thread=False, backends=[]))


def backend_params(backend: str) -> dict:
    return dict(UCX_PARAMS) if backend == "UCX" else {}


def init_cuda(gpu: Optional[int]) -> None:
    """A CUDA context current on ``gpu`` (None: nothing) before a backend starts: UCX's CUDA transports look for one
    when the backend is created, and VRAM is registered from it."""
    if gpu is None:
        return
    import torch

    torch.cuda.set_device(gpu)
    torch.empty(1, device=f"cuda:{gpu}")


def ensure_backend(agent, backend: str) -> None:
    """Create ``backend`` in ``agent`` once (raises with NIXL's reason where the plugin cannot start here)."""
    if backend not in agent.backends:
        if backend not in agent.get_plugin_list():
            raise RuntimeError(f"NIXL backend {backend} has no plugin here (plugins: "
                               f"{', '.join(agent.get_plugin_list())})")
        agent.create_backend(backend, backend_params(backend))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


# -- side channel ----------------------------------------------------------------------------------------------------
def send(sock: socket.socket, obj: dict) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def _exact(sock: socket.socket, n: int, deadline: Optional[float]) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the handoff peer did not answer in time")
            sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the handoff peer closed the side channel")
        buf += chunk
    return bytes(buf)


def recv(sock: socket.socket, timeout_s: Optional[float] = None) -> dict:
    """One message; ``timeout_s`` bounds the wait (None: wait for ever)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    (n,) = struct.unpack("!I", _exact(sock, 4, deadline))
    if n > MAX_MESSAGE:
        raise ConnectionError(f"side channel: a message of {n} bytes (not a handoff peer?)")
    obj = json.loads(_exact(sock, n, deadline))
    if deadline is not None:
        sock.settimeout(None)
    return obj


# -- the KV pool of one side -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolShape:
    """One side's paged pool: ``layers`` x ``components`` regions of ``pool_blocks`` chunks of ``chunk_bytes``."""

    layers: int
    components: int
    pool_blocks: int
    chunk_bytes: int

    @property
    def regions(self) -> int:
        return self.layers * self.components

    @property
    def layer_bytes(self) -> int:
        return self.components * self.pool_blocks * self.chunk_bytes

    @property
    def nbytes(self) -> int:
        return self.layers * self.layer_bytes

    def as_dict(self) -> dict:
        return {"layers": self.layers, "components": self.components, "pool_blocks": self.pool_blocks,
                "chunk_bytes": self.chunk_bytes}


def _host_region(nbytes: int) -> np.ndarray:
    """Page-aligned host memory (an anonymous mapping: NIXL registers its pages; freed with the array)."""
    return np.frombuffer(mmap.mmap(-1, max(nbytes, 1)), dtype=np.uint8)[:nbytes]


class Pool:
    """One side's pool in DRAM (numpy over anonymous mappings) or VRAM (torch CUDA tensors on ``gpu``): one buffer
    per layer. The pattern is written and checked where the pool lives (VRAM: on its GPU), 64-bit words at a time."""

    def __init__(self, shape: PoolShape, memory: str, gpu: Optional[int] = None):
        if shape.chunk_bytes % 8:
            raise ValueError(f"chunks of {shape.chunk_bytes} bytes: the pattern needs multiples of 8")
        self.shape, self.memory, self.gpu = shape, memory, gpu
        self.dev = f"cuda:{gpu}"  # VRAM's torch device
        if memory == "vram":
            import torch

            torch.cuda.set_device(gpu)
            self.layers = [torch.empty(shape.layer_bytes, dtype=torch.uint8, device=self.dev)
                           for _ in range(shape.layers)]
        else:
            self.layers = [_host_region(shape.layer_bytes) for _ in range(shape.layers)]

    @property
    def nixl_mem(self) -> str:
        return "VRAM" if self.memory == "vram" else "DRAM"

    @property
    def dev_id(self) -> int:
        return int(self.gpu) if self.memory == "vram" else 0

    def bases(self) -> list[int]:
        return [int(t.data_ptr()) if self.memory == "vram" else int(t.ctypes.data) for t in self.layers]

    def reg_list(self) -> list[tuple]:
        """NIXL's registration list: (address, bytes, device id, meta) per layer buffer."""
        return [(b, self.shape.layer_bytes, self.dev_id, "") for b in self.bases()]

    def descs(self) -> np.ndarray:
        """Nx3 uint64 (address, bytes, device id) of every chunk of this pool, row ``region * pool_blocks + block``."""
        return chunk_descs(self.shape, self.bases(), self.dev_id)

    def words(self, r: int):
        """Region ``r`` (layer-major) as [pool_blocks, chunk_bytes / 8] 64-bit words: a numpy uint64 view (DRAM) or a
        torch int64 view on the GPU (VRAM), the same bits."""
        s = self.shape
        layer, comp = divmod(r, s.components)
        n = s.pool_blocks * s.chunk_bytes
        t = self.layers[layer][comp * n:(comp + 1) * n]
        if self.memory == "vram":
            import torch

            return t.view(torch.int64).view(s.pool_blocks, s.chunk_bytes // 8)
        return t.view(np.uint64).reshape(s.pool_blocks, s.chunk_bytes // 8)

    def region(self, r: int) -> np.ndarray:
        """Region ``r`` as [pool_blocks, chunk_bytes] bytes on the host (a view in DRAM, a copy from VRAM)."""
        w = self.words(r)
        host = w.cpu().numpy() if self.memory == "vram" else w
        return host.view(np.uint8).reshape(self.shape.pool_blocks, self.shape.chunk_bytes)

    def _pattern(self, seed: int, r: int, blocks):
        """(base row, key per block) of :func:`block_pattern`, where the pool lives (XOR them to get the chunks)."""
        base, key = pattern_parts(seed, r, blocks, self.shape.chunk_bytes)
        if self.memory == "vram":
            import torch

            return (torch.from_numpy(base.view(np.int64)).to(self.dev)[None, :],
                    torch.from_numpy(key.view(np.int64)).to(self.dev)[:, None])
        return base[None, :], key[:, None]

    def fill_pattern(self, seed: int) -> None:
        """Every chunk its seeded pattern (:func:`block_pattern`), written in place ~64 MiB at a time."""
        s = self.shape
        step = max(1, (64 << 20) // s.chunk_bytes)
        for r in range(s.regions):
            w = self.words(r)
            for b0 in range(0, s.pool_blocks, step):
                b1 = min(s.pool_blocks, b0 + step)
                base, key = self._pattern(seed, r, np.arange(b0, b1))
                if self.memory == "vram":
                    import torch

                    torch.bitwise_xor(base, key, out=w[b0:b1])
                else:
                    np.bitwise_xor(base, key, out=w[b0:b1])
        self._sync()

    def poison(self) -> None:
        for t in self.layers:
            if self.memory == "vram":
                t.fill_(POISON)
            else:
                t.fill(POISON)
        self._sync()

    def _sync(self) -> None:
        """VRAM: the fill's kernels done before NIXL's copies (on their own streams) touch the pool."""
        if self.memory == "vram" and self.dev.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.dev)

    def first_bad(self, seed: int, src_blocks, dst_blocks) -> Optional[str]:
        """None when every region holds, at ``dst_blocks``, the seeded pattern of the source's ``src_blocks`` and
        POISON everywhere else; else where the first difference is (compared where the pool lives)."""
        s = self.shape
        src, dst = np.asarray(src_blocks, dtype=np.int64), np.asarray(dst_blocks, dtype=np.int64)
        others = np.ones(s.pool_blocks, dtype=bool)
        others[dst] = False
        poison = np.full(8, POISON, dtype=np.uint8).view(np.uint64)
        vram = self.memory == "vram"
        if vram:
            import torch

            dst_i, others_i = torch.from_numpy(dst).to(self.dev), torch.from_numpy(others).to(self.dev)
            poison = torch.from_numpy(poison.view(np.int64)).to(self.dev)
        for r in range(s.regions):
            w = self.words(r)
            base, key = self._pattern(seed, r, src)
            if vram:
                wrong = (w[dst_i] != (base ^ key)).any(dim=1).cpu().numpy()
                stray = ((w != poison).any(dim=1) & others_i).cpu().numpy()
            else:
                wrong = (w[dst] != (base ^ key)).any(axis=1)
                stray = (w != poison).any(axis=1) & others
            layer, comp = divmod(r, s.components)
            if wrong.any():
                i = int(np.argmax(wrong))
                return (f"layer {layer} component {comp}: block {int(dst[i])} differs from the source's block "
                        f"{int(src[i])}")
            if stray.any():
                return (f"layer {layer} component {comp}: block {int(np.argmax(stray))} was written but is not the "
                        "request's")
        return None


def chunk_descs(shape: PoolShape, bases: list[int], dev_id: int) -> np.ndarray:
    """Nx3 uint64 descriptors (address, bytes, device id) of every chunk of a pool whose layer buffers start at
    ``bases``; row ``region * pool_blocks + block``."""
    blocks = np.arange(shape.pool_blocks, dtype=np.uint64) * np.uint64(shape.chunk_bytes)
    comp = np.arange(shape.components, dtype=np.uint64) * np.uint64(shape.pool_blocks * shape.chunk_bytes)
    starts = (np.asarray(bases, dtype=np.uint64)[:, None, None] + comp[None, :, None] + blocks[None, None, :])
    out = np.empty((starts.size, 3), dtype=np.uint64)
    out[:, 0] = starts.reshape(-1)
    out[:, 1] = shape.chunk_bytes
    out[:, 2] = dev_id
    return out


_K = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)
_BASE: dict = {}


def pattern_parts(seed: int, region: int, blocks, chunk_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """(a seeded random row of chunk_bytes / 8 64-bit words, a key per block of ``blocks`` in region ``region``):
    chunk b of the source is row XOR key[b] (:func:`block_pattern`)."""
    words = chunk_bytes // 8
    base = _BASE.get((seed, words))
    if base is None:
        base = np.random.default_rng([seed, 0x6B76]).integers(0, 2 ** 63, size=words, dtype=np.uint64)
        _BASE.clear()
        _BASE[(seed, words)] = base
    ids = np.asarray(blocks, dtype=np.uint64)
    fixed = np.array([seed, region], dtype=np.uint64) * _K[:2]
    return base, (fixed[0] ^ fixed[1]) ^ (ids * _K[2])


def block_pattern(seed: int, region: int, blocks, chunk_bytes: int) -> np.ndarray:
    """[len(blocks), chunk_bytes] seeded bytes of the source's chunks: a random row of 64-bit words (seeded) XOR a
    key per (seed, region, block), so every chunk differs from every other in every word and a chunk landing in the
    wrong slot, or a word left unwritten (POISON), is caught. ``chunk_bytes`` must be a multiple of 8."""
    base, key = pattern_parts(seed, region, blocks, chunk_bytes)
    return (base[None, :] ^ key[:, None]).view(np.uint8).reshape(len(key), chunk_bytes)
