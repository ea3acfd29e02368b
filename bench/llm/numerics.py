"""Numbers of a computation: the dtype a family computes in, and how far a result may be from float64."""
from __future__ import annotations

import torch


def dtype_name(cfg, section: str, cuda: bool, key: str = "dtype", cpu_key: str = "cpu_dtype") -> str:
    """The one dtype rule: a family computes in its ``dtype`` (``model`` = the model preset's) on a GPU and in its
    ``cpu_dtype`` on the CPU (bf16 matmul is emulated there)."""
    sec = cfg[section]
    if not cuda:
        return str(sec[cpu_key])
    name = str(sec[key])
    return str(cfg.model.dtype) if name == "model" else name


def compute_dtype(cfg, section: str, cuda: bool, key: str = "dtype", cpu_key: str = "cpu_dtype") -> torch.dtype:
    return getattr(torch, dtype_name(cfg, section, cuda, key, cpu_key))


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64."""
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-300))


def tolerance(dtype: torch.dtype) -> float:
    """Relative-error bound for a result computed in ``dtype`` against float64 (METHOD: bf16 1e-3..1e-2)."""
    return {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}.get(dtype, 5e-2)
