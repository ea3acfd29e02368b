"""One point's handoff between this process and the peer: both pools allocated and registered, the descriptor lists
prepared, the request's blocks mapped to random slots on each side, and the calls the harness times (a whole request,
a request layer by layer) with the byte-for-byte check outside them.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Optional

import numpy as np

from bench.benchmarks.handoff.session import NOTIF_WAIT_S, TRANSFER_TIMEOUT_S, PeerError, Peers
from bench.benchmarks.handoff.sizes import Geometry
from bench.benchmarks.handoff.wire import Pool, chunk_descs, ensure_backend, init_cuda, make_agent, unb64

NOTIF = b"tierbench-kv"  # the notification each request carries to the peer (decode learns its KV landed; prefill
# may free the blocks)


def local_agent(state):
    """This process's NIXL agent, one per run."""
    return state.run_resource(("handoff_agent",), lambda: make_agent(
        f"tierbench-{socket.gethostname()}-{os.getpid()}"))


def peers(state) -> Peers:
    return state.run_resource(("handoff_peer", state.cfg.handoff.peer_rendezvous), lambda: Peers(state.cfg),
                              lambda p: p.close())


def gpus(state, memory: str) -> tuple[Optional[int], Optional[int]]:
    """(this side's GPU, the peer's GPU) for VRAM points: the run's device, and handoff.peer_gpu or, spawned, the
    next GPU when the node has two or more (two processes on two GPUs: NVLink where there is one), else the same;
    a rendezvous peer uses its own first GPU."""
    if memory != "vram":
        return None, None
    import torch

    me = int(state.device.index)
    peer = state.cfg.handoff.peer_gpu
    if peer is None:
        n = torch.cuda.device_count()
        peer = 0 if state.cfg.handoff.peer_rendezvous else ((me + 1) % n if n >= 2 else me)
    return me, int(peer)


class Handoff:
    """A point's pair. ``op``: read (this side decode, the destination) or write (this side prefill, the source)."""

    def __init__(self, state, geo: Geometry):
        p, h = state.params, state.cfg.handoff
        self.state, self.geo, self.op, self.backend = state, geo, str(p["op"]), str(p["backend"])
        self.memory, self.seed = str(p["memory"]), int(h.seed)
        self.requests = 0  # requests posted since the pools were set up (the peer counts their notifications)
        self.agent = self.link = self.reg = self.pool = self.local_dl = self.remote_dl = None

    def open(self) -> None:
        """Both sides' pools allocated, filled (source: the seeded pattern; destination: POISON) and registered, the
        peer's metadata loaded, the descriptor lists prepared and the request's blocks mapped (close() undoes it)."""
        state, geo = self.state, self.geo
        self.agent = local_agent(state)
        # a run with VRAM points starts its backends (on both sides) with a CUDA context current
        cuda_me, cuda_peer = gpus(state, "vram") if (state.device.is_cuda and "vram" in state.cfg.handoff.memory) \
            else (None, None)
        try:
            init_cuda(cuda_me)
            ensure_backend(self.agent, self.backend)
        except Exception as e:
            state.skip(f"NIXL backend {self.backend} cannot start here: {type(e).__name__}: {e}")
        self.link = peers(state).get()
        if self.link.hello.get("host") == socket.gethostname():  # the peer's CPU and GPU use is this run's own
            state.ctx.helpers.add(int(self.link.hello["pid"]))
        self.link.call("backend", backend=self.backend, cuda_gpu=cuda_peer)
        me, peer_gpu = gpus(state, self.memory)
        self.pool = Pool(geo.pool, self.memory, me)
        if self.op == "write":
            self.pool.fill_pattern(self.seed)
        else:
            self.pool.poison()
        self.reg = self.agent.register_memory(self.pool.reg_list(), self.pool.nixl_mem, backends=[self.backend])
        reply = self.link.call("setup", shape=geo.pool.as_dict(), memory=self.memory, gpu=peer_gpu,
                               role="source" if self.op == "read" else "dest", seed=self.seed, backend=self.backend)
        name = self.agent.add_remote_agent(unb64(reply["md"]))  # the peer's metadata now holds its new pool
        self.peer_name = name.decode() if isinstance(name, bytes) else str(name)
        remote = chunk_descs(geo.pool, reply["bases"], int(reply["dev_id"]))
        mem, only = self.pool.nixl_mem, [self.backend]
        self.local_dl = self.agent.prep_xfer_dlist("NIXL_INIT_AGENT", self.pool.descs(), mem, backends=only)
        self.remote_dl = self.agent.prep_xfer_dlist(self.peer_name, remote, mem, backends=only)
        rng = np.random.default_rng([self.seed, geo.block_tokens, geo.context_tokens])
        self.local_blocks = rng.permutation(geo.pool_blocks)[:geo.blocks]
        self.remote_blocks = rng.permutation(geo.pool_blocks)[:geo.blocks]
        self.local_idx = self._indices(self.local_blocks)
        self.remote_idx = self._indices(self.remote_blocks)
        state.note(peer=self.link.how, peer_host=self.link.hello.get("host"), local_host=socket.gethostname(),
                   nixl=self.link.hello.get("nixl"), backend_params=self.agent.backend_options.get(self.backend),
                   gpu=me, peer_gpu=peer_gpu, pool_blocks=geo.pool_blocks, chunk_bytes=geo.chunk_bytes,
                   blocks=geo.blocks, side="decode (reads)" if self.op == "read" else "prefill (writes)")

    def _indices(self, blocks: np.ndarray) -> np.ndarray:
        """[layers, components * blocks] int32 rows of the prepared list: layer l's descriptors are row l."""
        g = self.geo
        r = np.arange(g.regions, dtype=np.int64)[:, None] * g.pool_blocks + blocks[None, :]
        return r.reshape(g.layers, g.components * g.blocks).astype(np.int32)

    # -- the timed calls ---------------------------------------------------------------------------------------------
    def _post(self, local_idx: np.ndarray, remote_idx: np.ndarray, notif: bytes):
        h = self.agent.make_prepped_xfer(self.op.upper(), self.local_dl, local_idx, self.remote_dl, remote_idx,
                                         notif_msg=notif, backends=[self.backend])
        return h, self.agent.transfer(h)

    def _finish(self, handles: list) -> None:
        """Wait for every posted transfer (progressing the agent), then release them."""
        deadline = time.perf_counter() + TRANSFER_TIMEOUT_S
        for h, st in handles:
            while st == "PROC":
                st = self.agent.check_xfer_state(h)
                if time.perf_counter() > deadline:
                    raise PeerError(f"a {self.op} of {self.geo.descriptors} descriptors did not finish in "
                                    f"{TRANSFER_TIMEOUT_S:g} s")
            if st != "DONE":
                raise PeerError(f"NIXL {self.op} failed ({st})")
            self.agent.release_xfer_handle(h)

    def request(self) -> None:
        """One request's KV in one descriptor list: posted, completed, released."""
        self.requests += 1
        self._finish([self._post(self.local_idx.reshape(-1), self.remote_idx.reshape(-1), NOTIF)])

    def layerwise(self, layer_s: float) -> None:
        """One request layer by layer: layer l's list posted ``(l + 1) x layer_s`` after the start (when its
        prefill would end; the host thread polls the transfers meanwhile, as it waits on the GPU), the last one
        with the notification; returns when all have completed."""
        self.requests += 1
        t0 = time.perf_counter()
        handles = []
        last = self.geo.layers - 1
        for layer in range(self.geo.layers):
            due = t0 + (layer + 1) * layer_s
            while time.perf_counter() < due:
                for i, (h, st) in enumerate(handles):
                    if st == "PROC":
                        handles[i] = (h, self.agent.check_xfer_state(h))
            handles.append(self._post(self.local_idx[layer], self.remote_idx[layer], NOTIF if layer == last else b""))
        self._finish(handles)

    # -- the check outside timing -------------------------------------------------------------------------------------
    def checked(self, when: str, run) -> None:
        """Poison the destination, run one request (``run``), check it byte for byte and that the peer saw every
        notification posted so far."""
        if self.op == "read":
            self.pool.poison()
        else:
            self.link.call("poison")
        run()
        src, dst = (self.remote_blocks, self.local_blocks) if self.op == "read" else \
            (self.local_blocks, self.remote_blocks)
        if self.op == "read":
            bad = self.pool.first_bad(self.seed, src, dst)
        else:
            bad = self.link.call("verify", seed=self.seed, src=src.tolist(), dst=dst.tolist())["bad"]
        self.state.verify(bad is None, f"{when}: {bad}")
        got = self.notifs()
        self.state.verify(got == self.requests, f"{when}: the peer received {got} of {self.requests} notifications")

    def notifs(self) -> int:
        deadline = time.monotonic() + NOTIF_WAIT_S
        while True:
            got = int(self.link.call("notifs")["count"])
            if got >= self.requests or time.monotonic() > deadline:
                return got
            time.sleep(0.01)

    def close(self) -> None:
        for dl in (self.local_dl, self.remote_dl):
            if dl is not None:
                dl.release()
        if self.reg is not None:
            self.agent.deregister_memory(self.reg, backends=[self.backend])
        if self.link is not None and not self.link.broken:
            try:
                self.link.call("teardown")
            except PeerError:
                pass
        self.pool = self.reg = self.local_dl = self.remote_dl = None
