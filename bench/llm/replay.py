"""A miniature of the agentic loop on one device: sessions of turns, each turn prefills its new tokens against the
cached context and decodes its output tokens (teacher-forced, so every mode does the same work), keeping the KV.

Modes (same sessions, same weights):
  recompute      no reuse: every turn prefills the whole context from scratch
  reuse_hbm      the session's KV stays in device memory between turns
  reuse_host     KV is offloaded to pinned host memory after each turn and loaded back before the next; loads are
                 issued on a copy stream layer by layer, so layer l's prefill waits only for layer l's KV
  reuse_storage  as reuse_host, with the host copy written to a file (O_DIRECT) and read back, page cache dropped
Each session's KV lives in one slab per layer (capacity = the session's final context), not in shared pages: a
non-fused paged gather would add work the microbenchmarks do not time. Offload happens after the turn and is
reported apart (real systems write back asynchronously); loads are on the critical path and counted in prefill.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from bench.llm.layer import DecodeAt, Layer
from bench.llm.attention import LayerAttention
from bench.llm.shapes import ModelShape

MODES = ("recompute", "reuse_hbm", "reuse_host", "reuse_storage")


@dataclass
class Turn:
    new_ids: torch.Tensor  # token ids of this turn's new input
    out_ids: torch.Tensor  # token ids of this turn's output (teacher-forced)


@dataclass
class Session:
    turns: list

    @property
    def max_tokens(self) -> int:
        return sum(len(t.new_ids) + len(t.out_ids) for t in self.turns)


def make_sessions(w, sessions: int, turns: int, scale: float, vocab: int, seed: int) -> list[Session]:
    """Sessions shaped like workload ``w`` (token counts x ``scale``, at most ``turns`` turns), shared prefix equal."""
    g = torch.Generator().manual_seed(seed)
    ids = lambda n: torch.randint(0, vocab, (max(1, int(n)),), generator=g)  # noqa: E731
    prefix = ids(w.shared_prefix_tokens * scale)
    out = []
    for _ in range(sessions):
        ts = []
        for k in range(min(turns, w.turns)):
            new = ids((w.session_context_tokens + w.new_tokens) * scale) if k else \
                torch.cat([prefix, ids((w.session_context_tokens + w.new_tokens) * scale)])
            ts.append(Turn(new, ids(w.output_tokens * scale)))
        out.append(Session(ts))
    return out


DECODE_SPAN = 256  # attention spans of captured decode steps are multiples of this (of fewer slots: at most
DECODE_GRAPHS = 64  # this many graphs per cache, the granularity doubling until they fit)


def decode_spans(capacity: int) -> list[int]:
    """The attention spans of the captured decode steps for a cache of ``capacity`` slots: multiples of a
    granularity (DECODE_SPAN, doubled until at most DECODE_GRAPHS spans cover the capacity), the last the
    capacity. A step at context c attends the smallest span > c: at most one granularity of masked slots."""
    g = DECODE_SPAN
    while -(-capacity // g) > DECODE_GRAPHS:
        g *= 2
    return sorted({min(capacity, g * i) for i in range(1, -(-capacity // g) + 1)})


def graph_refusal(shape: ModelShape) -> Optional[str]:
    """Why no CUDA graph can hold a decode step of ``shape`` (its decode then runs eagerly), or None where one can:
    the one rule the engine captures by and the planner (bench.benchmarks.validate.cost) prices decode by."""
    if shape.experts:
        return "MoE layers read expert counts on the host: no CUDA graph can hold that"
    return None


@dataclass
class Engine:
    """The layers, embedding and one KV cache (sized for the longest session, reused by every session) of the
    replay. On a GPU a decode step is a CUDA graph (as serving engines decode), one per attention span (powers of two
    up to the cache's capacity: the step attends over the span, slots after its position masked), captured before
    anything is timed; the token and its position are device tensors the graph reads. An eager decode step is ~65
    Python-issued ops per layer, host-bound on a GPU (49 ms per token through 32 llama3_8b layers on an H200, GPU
    busy a fraction of it): its time would be Python's. Prefill stays eager (large and GPU-bound). Where capture is
    impossible (MoE: expert counts are read on the host) or fails, decode is eager: ``decode_mode`` says how,
    ``decode_graphs`` whether graphs ran."""

    shape: ModelShape
    layers: list
    emb: torch.Tensor  # [vocab_rows, hidden]; also the (tied) output head
    device: torch.device
    dtype: torch.dtype
    workdir: str = "/var/tmp"
    copy_stream: object = None
    timings: dict = field(default_factory=dict)
    cache: Optional[list] = None
    decode_mode: str = "eager"
    _graphs: dict = field(default_factory=dict)  # span -> (graph, logits buffer)
    _tok: Optional[torch.Tensor] = None
    _pos: Optional[torch.Tensor] = None
    _lengths: Optional[torch.Tensor] = None
    attention: Optional[LayerAttention] = None

    @classmethod
    def build(cls, shape: ModelShape, n_layers: int, dtype, device, vocab_rows: int, seed: int = 0, workdir="/var/tmp",
              attention: Optional[LayerAttention] = None):
        dev = torch.device(device)
        g = torch.Generator(device=dev).manual_seed(seed)
        emb = (torch.randn(vocab_rows, shape.hidden, device=dev, generator=g) / 4).to(dtype)
        attention = attention or LayerAttention()
        layers = [Layer(shape, shape.dense_layers if shape.experts else 0, dtype, dev, seed + 1 + i)
                  for i in range(n_layers)]
        for layer in layers:
            layer.attention = attention
        cs = torch.cuda.Stream(dev) if dev.type == "cuda" else None
        return cls(shape, layers, emb, dev, dtype, workdir, cs, attention=attention)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def new_cache(self, capacity: int):
        return [layer.new_cache(1, capacity, 0) for layer in self.layers]

    def session_cache(self, tokens: int) -> list:
        """The engine's KV cache, grown to hold ``tokens`` (a growth re-captures the decode graphs, untimed: call it
        with the longest session before timing). Slots past a session's context are never read."""
        if self.cache is None or self.cache[0][0].shape[-2 if not self.shape.is_mla else 1] < tokens:
            self.cache = self.new_cache(tokens)
            self._graphs = {}
            if self.device.type == "cuda":
                self._capture_decode(tokens)
        return self.cache

    def _span(self, ctx: int) -> int:
        """The span a captured step at context ``ctx`` attends (the smallest captured span holding ctx + 1)."""
        return next(sp for sp in sorted(self._graphs) if sp > ctx) if self._graphs else ctx + 1

    def decode_reads(self, ctx: int) -> int:
        """Cache positions one decode step at context ``ctx`` attends per layer: ctx + 1 (eager, or a captured step
        whose kernel reads device-side lengths), else the captured span (its masked slots are read too)."""
        if not self._graphs or self.attention.reads_lengths(self._tok):
            return ctx + 1
        return self._span(ctx)

    def spans_read(self) -> Optional[list]:
        """The captured spans a decode step's attention reads whole (masked tail), or None when every step reads
        exactly its context (eager, or a kernel that takes device-side lengths)."""
        if not self._graphs or self.attention.reads_lengths(self._tok):
            return None
        return sorted(self._graphs)

    @property
    def decode_graphs(self) -> bool:
        """Whether decode steps replay CUDA graphs (False: eager, host-bound on a GPU)."""
        return bool(self._graphs)

    @property
    def decode_attention(self) -> str:
        """How a decode step's attention runs, for the record."""
        a = self.attention
        if not self._graphs:
            return f"{a.decode_kernel}, exact context (eager)"
        if a.reads_lengths(self._tok):
            return f"{a.decode_kernel} varlen (seqused_k): exact context inside the CUDA graphs"
        why = f"; lengths path refused: {a.lengths_refused}" if a.lengths_refused else ""
        return f"{a.masked_kernel} over the captured span with its tail masked{why}"

    def _decode_step(self, span: int):
        """One decode step through every layer at the position in ``_pos`` (token ``_tok``), attending over ``span``
        slots: logits of the new token."""
        x = self.emb[self._tok].unsqueeze(0)
        slots = torch.arange(span, device=self.device)
        mask = torch.zeros(span, dtype=self.dtype, device=self.device).masked_fill_(slots > self._pos, float("-inf"))
        self._lengths.copy_(self._pos + 1)
        at = DecodeAt(self._pos, span, mask, self._lengths)
        for layer, c in zip(self.layers, self.cache):
            x, _ = layer.forward(x, c, 0, True, at=at)
        return x[0, -1].float() @ self.emb.float().T

    def _capture_decode(self, capacity: int) -> None:
        why = graph_refusal(self.shape)
        if why:
            self.decode_mode = f"eager ({why})"
            return
        self._tok = torch.zeros(1, dtype=torch.long, device=self.device)
        self._pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self._lengths = torch.ones(1, dtype=torch.int32, device=self.device)
        spans = decode_spans(capacity)
        self._check_lengths_path(spans[-1])
        try:
            cuda = torch.cuda
            side = cuda.Stream(self.device)
            side.wait_stream(cuda.current_stream(self.device))
            with cuda.stream(side):  # warm-up off the default stream (writes slot 0; sessions overwrite it)
                for sp in spans:
                    self._decode_step(sp)
            cuda.current_stream(self.device).wait_stream(side)
            cuda.synchronize(self.device)
            for sp in spans:
                g = cuda.CUDAGraph()
                with cuda.graph(g):
                    out = self._decode_step(sp)
                self._graphs[sp] = (g, out)
            cuda.synchronize(self.device)
            self.decode_mode = (f"CUDA graph per attention span ({len(spans)} spans of {spans[0]} slots up to "
                                f"{spans[-1]})")
        except Exception as e:  # eager decode still computes the same function; the record says it was eager
            self._graphs = {}
            cuda.synchronize(self.device)
            first = str(e).splitlines()[0][:160] if str(e) else ""
            self.decode_mode = f"eager (CUDA graph capture failed: {type(e).__name__}: {first}): host-bound on a GPU"

    def _check_lengths_path(self, span: int) -> None:
        """Before capture: a step through the device-lengths kernel must give the eager exact-context step's logits
        (a private torch op: where it is missing or differs, the masked span is used and the record says why)."""
        if not self.attention.reads_lengths(self._tok):
            return
        ctx = min(span - 1, 37)
        tok = torch.tensor([3], device=self.device)
        try:
            want = self.forward(tok, self.cache, ctx, decode=True)
            self._tok.fill_(3)
            self._pos.fill_(ctx)
            got = self._decode_step(span)
            from bench.llm.numerics import rel_error, tolerance

            err = rel_error(got, want)
            if not err < 4 * tolerance(self.dtype):
                self.attention.lengths_refused = f"its logits differ from the eager step's by {err:.2e}"
        except Exception as e:
            self.attention.lengths_refused = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"

    def decode(self, tok: torch.Tensor, cache, ctx: int) -> torch.Tensor:
        """Logits of one decode step of token ``tok`` (on the engine's device) after ``ctx`` cached positions: a graph
        replay on a GPU when the engine's cache is used, else the eager forward."""
        if self._graphs and cache is self.cache:
            g, out = self._graphs[self._span(ctx)]
            self._tok.copy_(tok.view(1))  # device to device, queued: the host never waits for the GPU
            self._pos.fill_(ctx)
            g.replay()
            return out.clone()
        return self.forward(tok.view(1), cache, ctx, decode=True)

    def forward(self, ids: torch.Tensor, cache, n_ctx: int, decode: bool, ready=None):
        """Run ids [n] after n_ctx cached positions through the layers; returns logits of the last position.
        ``ready[l]`` (CUDA events) gates layer l on its KV having arrived."""
        x = self.emb[ids.to(self.device)].unsqueeze(0)
        for li, (layer, c) in enumerate(zip(self.layers, cache)):
            if ready is not None:
                torch.cuda.current_stream(self.device).wait_event(ready[li])
            x, _ = layer.forward(x, c, n_ctx, decode)
        return (x[0, -1].float() @ self.emb.float().T)

    # -- offload / load of a session's KV -----------------------------------------------------------------------
    def offload(self, cache, ctx: int, host, path=None):
        """Copy the first ``ctx`` positions of every layer's KV to pinned ``host`` (and a file when ``path``)."""
        for li, c in enumerate(cache):
            for ti, t in enumerate(c):
                src = _positions(t, ctx)
                dst = host[li][ti][: src.numel()].view(src.shape)
                dst.copy_(src, non_blocking=True)
        self.sync()
        if path is not None:
            from bench.hw.fileio import open_file

            fd, _ = open_file(path, True, "auto")
            try:
                off = 0
                for li, c in enumerate(cache):
                    for ti, t in enumerate(c):
                        n = _padded(_positions(t, ctx).numel() * t.element_size())
                        os.pwrite(fd, memoryview(host[li][ti].view(torch.uint8).numpy())[:n], off)
                        off += n
                os.fsync(fd)
            finally:
                os.close(fd)

    @staticmethod
    def drop_file_cache(path) -> None:
        """Evict the offloaded file from the page cache (untimed, before the turn): the timed load then reads the
        device, as the storage benchmarks' reads do; the drop itself is not part of a load."""
        from bench.hw.fileio import drop_cache

        fd = os.open(path, os.O_RDONLY)
        try:
            drop_cache(fd, 0)
        finally:
            os.close(fd)

    def load(self, cache, ctx: int, host, path=None):
        """Bring the KV back (file -> host first when ``path``); returns per-layer ready events (CUDA) or None."""
        if path is not None:
            from bench.hw.fileio import open_file

            fd, _ = open_file(path, False, "auto")
            try:
                off = 0
                for li, c in enumerate(cache):
                    for ti, t in enumerate(c):
                        n = _padded(_positions(t, ctx).numel() * t.element_size())
                        os.preadv(fd, [memoryview(host[li][ti].view(torch.uint8).numpy())[:n]], off)
                        off += n
            finally:
                os.close(fd)
        if self.copy_stream is None:
            for li, c in enumerate(cache):
                for ti, t in enumerate(c):
                    dst = _positions(t, ctx)
                    dst.copy_(host[li][ti][: dst.numel()].view(dst.shape))
            return None
        events = []
        self.copy_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.copy_stream):
            for li, c in enumerate(cache):
                for ti, t in enumerate(c):
                    dst = _positions(t, ctx)
                    dst.copy_(host[li][ti][: dst.numel()].view(dst.shape), non_blocking=True)
                ev = torch.cuda.Event()
                ev.record(self.copy_stream)
                events.append(ev)
        return events

    def host_buffers(self, cache):
        from bench.hw.hostmem import host_buffer

        class _Dev:
            is_cuda = self.device.type == "cuda"

        out = []
        for c in cache:
            layer = []
            for t in c:
                nbytes = _padded(t.numel() * t.element_size())
                buf, _ = host_buffer(nbytes, True, _Dev())
                layer.append(buf.view(t.dtype) if t.element_size() > 1 else buf)
            out.append(layer)
        return out

    # -- one session in one mode ----------------------------------------------------------------------------------
    def run_session(self, s: Session, mode: str, path=None) -> dict:
        """Replay ``s``; returns seconds spent (prefill incl. loads, decode, offload) and logits per step."""
        t = {"prefill_s": 0.0, "decode_s": 0.0, "offload_s": 0.0, "load_bytes": 0, "prefill_tokens": 0,
             "decode_tokens": 0}
        logits = []
        history = torch.zeros(0, dtype=torch.long)
        cache = self.session_cache(s.max_tokens)
        host = self.host_buffers(cache) if mode in ("reuse_host", "reuse_storage") else None
        ctx = 0
        for k, turn in enumerate(s.turns):
            if mode == "reuse_storage" and k > 0:
                self.drop_file_cache(path)
            self.sync()
            t0 = time.perf_counter()
            ready = None
            if mode == "recompute":
                ids, n_ctx = torch.cat([history, turn.new_ids]), 0
            else:
                ids, n_ctx = turn.new_ids, ctx
                if mode in ("reuse_host", "reuse_storage") and k > 0:
                    ready = self.load(cache, ctx, host, path if mode == "reuse_storage" else None)
                    t["load_bytes"] += sum(_positions(x, ctx).numel() * x.element_size() for c in cache for x in c)
            logits.append(self.forward(ids, cache, n_ctx, decode=False, ready=ready))
            self.sync()
            t1 = time.perf_counter()
            t["prefill_s"] += t1 - t0
            t["prefill_tokens"] += len(ids)
            ctx = n_ctx + len(ids)
            for tok in turn.out_ids.to(self.device):  # teacher-forced decode: the same tokens in every mode
                logits.append(self.decode(tok, cache, ctx))
                ctx += 1
            self.sync()
            t2 = time.perf_counter()
            t["decode_s"] += t2 - t1
            t["decode_tokens"] += len(turn.out_ids)
            history = torch.cat([history, turn.new_ids, turn.out_ids])
            if mode in ("reuse_host", "reuse_storage") and k + 1 < len(s.turns):
                self.offload(cache, ctx, host, path if mode == "reuse_storage" else None)
                for c in cache:  # poison the device copy: the next turn must really load it back
                    for x in c:
                        _positions(x, ctx).fill_(float("nan"))
                self.sync()
                t["offload_s"] += time.perf_counter() - t2
        t["logits"] = torch.stack(logits).cpu()
        return t

    def turn_plan(self, s: Session, mode: str) -> list:
        """(n_new, n_ctx, load_tokens, decode contexts) per turn: what the cost model is evaluated on."""
        plan, hist, ctx = [], 0, 0
        for k, turn in enumerate(s.turns):
            n = len(turn.new_ids)
            if mode == "recompute":
                row = (hist + n, 0, 0)
            else:
                row = (n, ctx, ctx if (mode in ("reuse_host", "reuse_storage") and k) else 0)
            start = hist + n
            plan.append((*row, list(range(start, start + len(turn.out_ids)))))
            hist += n + len(turn.out_ids)
            ctx = hist
        return plan


def _positions(t: torch.Tensor, ctx: int) -> torch.Tensor:
    """The first ``ctx`` positions of a cache tensor: GQA [1, kvh, T, d] -> dim 2; MLA latent [1, T, r] -> dim 1."""
    return t[:, :, :ctx] if t.dim() == 4 else t[:, :ctx]


def _padded(n: int, align: int = 4096) -> int:
    return (n + align - 1) // align * align


def layers_that_fit(shape: ModelShape, dtype, budget_bytes: int, max_tokens: int) -> int:
    """How many layers (<= the model's) fit the budget with their KV for ``max_tokens`` positions."""
    from bench.llm.shapes import layer_param_bytes, representative_index

    elt = torch.finfo(dtype).bits // 8
    per = layer_param_bytes(shape, representative_index(shape), dtype) + \
        2 * max_tokens * shape.kv_bytes_per_token_per_layer * elt // shape.elt_bytes
    return int(min(shape.layers, budget_bytes // max(per, 1)))
