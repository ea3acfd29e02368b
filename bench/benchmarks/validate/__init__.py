"""End-to-end replay of agentic sessions (recompute, reuse from HBM, host DRAM and storage), measured against the cost
model fitted from the same run (python -m bench validate).

`e2e_agentic_replay` replays agentic sessions (from `validate.workload`, token counts x `validate.scale_tokens`)
through the model's layers with random weights (all layers that fit; predictions are scaled to the same count) in
four modes: `recompute` (the whole context prefilled every turn), `reuse_hbm` (KV kept on the GPU), `reuse_host` (KV
offloaded to pinned host memory after each turn and loaded back layer by layer, overlapped with the prefill) and
`reuse_storage` (through a file: page cache dropped before the turn, untimed; the timed load reads it with O_DIRECT,
one read per layer and K/V, into host memory before the prefill, then loads layer by layer). Decode is
teacher-forced so every mode does the same work, and every mode's logits are checked against recompute's (the reuse
path must compute the same function; the device copy is poisoned after offload, so a missed load shows). Each mode
reports measured prefill/decode time and speedup next to what the costs fitted from the same run's microbenchmarks
predict (`speedup_prediction_error`, `time_prediction_error`). Misses are reported, not tuned away: the replay pays
for things the microbenchmarks do not time (embedding and output head, per-step launches, Python overhead).

    python -m bench validate                                  # layers + transfer + storage + replay, one run
    python -m bench validate suite=quick model=tiny           # CPU smoke run
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from bench.core.family import Family, family


@dataclass
class ValidateConfig:
    budget_s: Optional[float] = None  # family time budget (s; null: none)
    workload: Any = None  # the sessions replayed (a workload preset; null: the analysis default)
    modes: list = MISSING  # recompute, reuse_hbm, reuse_host, reuse_storage (an axis; recompute is the baseline)
    sessions: int = 2  # sessions replayed
    turns: int = 6
    scale_tokens: float = 0.25
    layers: Optional[int] = None
    repeats: int = 3  # passes over the sessions (the median is reported)
    dtype: str = "model"  # compute dtype on a GPU (model: the preset's)
    cpu_dtype: str = "float32"  # compute dtype on the CPU
    vocab_rows: int = 4096
    seed: int = 5  # seed of the sessions and weights
    cpu: dict = field(default_factory=dict)  # replaces the family's values on a CPU-only run


FAMILY = family(Family(
    "validate", order=60, config=ValidateConfig, package=__name__, modules=('benchmarks',),
    plots=(),
    unplotted={"e2e_agentic_replay": "measured vs predicted speedup per mode: bench model and bench validate "
                                     "print it"}))
