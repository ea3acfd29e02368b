"""The model's steps as named, frozen results (bench.model.analyze runs them in order; each step takes what earlier
ones returned and returns its own part, never changing another's). Units: tokens, bytes, seconds per request
(GPU-seconds, or CPU-seconds on a CPU run), requests per second of the whole fleet."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bench.llm.shapes import ModelShape
from bench.model.costs import Costs


@dataclass(frozen=True)
class RunInputs:
    """``load``: the analysis config, the run (directory, manifest, records as one frame), its model and device."""

    cfg: Any
    run_dir: Path
    manifest: dict
    records: Any  # pandas DataFrame (bench.core.store.load)
    shape: ModelShape
    device: str  # cuda | cpu
    gpu: dict  # the fingerprint's GPU ({} on the CPU)
    incomplete: Optional[str]  # None, or why the run is incomplete (bench.core.store.run_state)
    warnings: tuple = ()

    @property
    def fleet_cfg(self):
        return self.cfg.fleet


@dataclass(frozen=True)
class Fitted:
    """``fit``: the measured costs (prefill and decode fits of one attention kernel, tiers, the layer-wise load
    exposure) and the kernel asked for (attention_kernel=, None: the run's one kernel)."""

    costs: Costs
    tiers: dict  # name -> bench.model.costs.Tier ("host", and "storage" when measured)
    attention_kernel: Optional[str]
    warnings: tuple = ()
    handoff: Any = None  # bench.model.handoff.HandoffCost: moving a request's KV prefill -> decode


@dataclass(frozen=True)
class Requests:
    """``workload``: the requests (a trace or generated sessions) and their tokens: input, output, the reusable
    (cached) part of the input under an unlimited cache (or the what-if's share) and the rest, computed."""

    trace: Any  # bench.model.cachesim.Trace
    preset: Any  # bench.model.workload.Workload of the workload config (the synthetic sessions' preset)
    label: str
    source: str
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    reused_tokens: np.ndarray
    new_tokens: np.ndarray
    block_tokens: int = 512  # the cache block: the trace's own (its ids' granularity), else fleet.block_tokens
    summary: Optional[dict] = None  # a real trace's decomposition (bench.model.sessions.summarize), else None


@dataclass(frozen=True)
class FleetSizing:
    """``fleet``: an instance of the fleet (GPUs, HBM, weights) and its decode batch, and how far the workload lies
    outside what the run measured."""

    hbm_bytes_per_gpu: float
    weight_bytes: int
    gpus_per_instance: int
    mean_decode_context: float  # mean(input + output / 2): the context a decode step reads, on average
    decode_batch: int
    decode_batch_limited_by: str
    extrapolations: tuple = ()  # bench.model.verdict.extrapolation dicts
    warnings: tuple = ()
    # mode -> decode batch (disaggregated with fleet.handoff new or sim keeps a prefix cache beside the batch): the
    # comparison of the two modes prices each with its own
    decode_batch_by_mode: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Priced:
    """Every speedup of the model for one set of costs (bench.model.pricing.Pricer.evaluate): the baseline without
    reuse (prefill and decode seconds per request, fleet rate and split), its Amdahl bound and prefill share, and
    the speedup of each routing's simulated cache and of each tier scenario of the verdict."""

    baseline_prefill_s: float
    decode_s: float
    baseline_rps: float
    amdahl_bound: float
    prefill_share: float
    speedup_by_routing: dict = field(default_factory=dict)
    speedup_by_tier: dict = field(default_factory=dict)
    baseline_split: dict = field(default_factory=dict)
    routing_detail: dict = field(default_factory=dict)  # routing -> (prefill seconds, split)
    # configuration (none, and each tier) -> requests/s disaggregated (with its handoff) / colocated, same costs
    disagg_vs_colocated: dict = field(default_factory=dict)

    def bootstrap_values(self) -> dict:
        """The figures a bootstrap resample keeps (the ones the verdict's intervals are taken of)."""
        out = {"p0": self.baseline_prefill_s, "d": self.decode_s, "base_rate": self.baseline_rps,
               "amdahl": self.amdahl_bound}
        out.update({f"sim:{r}": v for r, v in self.speedup_by_routing.items()})
        out.update({f"tiers:{t}": v for t, v in self.speedup_by_tier.items()})
        out["prefill_share"] = self.prefill_share
        out.update({f"dvc:{t}": v for t, v in self.disagg_vs_colocated.items()})
        return out


@dataclass(frozen=True)
class CacheScenario:
    """``simulate_caches``: the tiered cache at the fleet's capacities (blocks per instance) for every routing,
    the best routing, the verdict's tier scenarios (HBM only, + host DRAM, + NVMe: each one's capacities and
    simulation), the tier the verdict describes (the last one), and the pricing at the measured costs."""

    block_bytes: int
    capacity_blocks: tuple  # (hbm, host, storage) blocks per instance
    sims_by_routing: dict
    best_routing: str
    scenario_capacities: dict  # tier -> (hbm, host, storage) blocks
    tier_sims: dict  # tier -> simulation (or a what-if's)
    verdict_tier: str
    pricer: Any  # bench.model.pricing.Pricer
    priced: Priced
    warnings: tuple = ()
    moved_tokens: Any = None  # tokens each request's handoff moves (fleet.handoff), np.ndarray
    link: Any = None  # bench.model.handoff.Link: the handoff's load (None: colocated, no handoff)
    decode_kept_tokens: Any = None  # tokens of each request the decode pool's own simulated cache holds


@dataclass(frozen=True)
class Latencies:
    """``handoff``: per configuration (none, then each tier scenario), each request's prefill seconds on one GPU and
    the seconds of its handoff left after that prefill on its instance (what a disaggregated TTFT adds); the
    handoff's figures and the goodput replay both read them."""

    prefill_s: dict
    handoff_exposed_s: dict


@dataclass(frozen=True)
class Analysis:
    """The analysis so far: each step's part (None until its step ran) and the model.json body the result steps
    fill (``price`` creates it; verdict, capacity, goodput and sparse add to it)."""

    inputs: RunInputs
    fitted: Optional[Fitted] = None
    requests: Optional[Requests] = None
    sizing: Optional[FleetSizing] = None
    scenario: Optional[CacheScenario] = None
    latencies: Optional[Latencies] = None
    result: Optional[dict] = None

    @property
    def cfg(self):
        return self.inputs.cfg

    @property
    def fl(self):
        return self.inputs.cfg.fleet
