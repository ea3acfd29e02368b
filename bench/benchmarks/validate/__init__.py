"""End-to-end replay of agentic sessions (recompute, reuse from HBM, host DRAM and storage), measured against
the cost model fitted from the same run (python -m bench validate)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from bench.core.family import Family, family


@dataclass
class ValidateConfig:
    budget_s: Optional[float] = None
    workload: Any = None
    modes: list = MISSING
    sessions: int = 2
    turns: int = 6
    scale_tokens: float = 0.25
    layers: Optional[int] = None
    repeats: int = 3
    dtype: str = "model"
    cpu_dtype: str = "float32"
    vocab_rows: int = 4096
    seed: int = 5
    cpu: dict = field(default_factory=dict)


FAMILY = family(Family(
    "validate", order=60, config=ValidateConfig, package=__name__, modules=('benchmarks',),
    plots=(),
    unplotted={"e2e_agentic_replay": "measured vs predicted speedup per mode: bench model and bench validate "
                                     "print it"}))
