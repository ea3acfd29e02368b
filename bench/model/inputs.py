"""What the model reads from a run, declared once: one table of the records it uses, what each gives it, which
family measures it, whether the model cannot run without it and whether the costs are fitted from it. The checks
of a run (:func:`missing_inputs`), the suspect-point caveats (:data:`COST_BENCHMARKS`) and the commands the model
advises (:func:`supply`) all read this table."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Input:
    """A benchmark whose ok records the model reads: ``gives`` what, measured by ``family`` (benchmark=<family>);
    ``required``: the model refuses a run without it; ``cost``: the fitted costs come from it."""

    benchmark: str
    gives: str
    family: str
    required: bool = False
    cost: bool = False


INPUTS = (
    Input("layer_prefill", "prefill costs", "layers", required=True, cost=True),
    Input("layer_decode", "decode costs", "layers", required=True, cost=True),
    Input("paged_onload", "the host tier", "transfer", required=True, cost=True),
    Input("h2d_pinned", "the host tier's latency", "transfer", cost=True),
    Input("gpu_file_read_kvikio", "the storage tier (GPU <- file through KvikIO)", "storage", cost=True),
    Input("gpu_file_read_bounce", "the storage tier (GPU <- file through pinned host memory)", "storage", cost=True),
    Input("file_read", "the storage tier (file -> host, then the host hop)", "storage", cost=True),
    Input("layerwise_load", "the measured layer-wise load/compute overlap", "interference", cost=True),
    Input("e2e_agentic_replay", "the end-to-end check of the model's prediction", "validate"),
    Input("warm_fetch", "the warm tier's fetch fit (sparse decode)", "warm"),
    Input("warm_search", "keys scored per second (sparse decode's selection)", "warm"),
)
INPUT = {i.benchmark: i for i in INPUTS}
COST_BENCHMARKS = tuple(i.benchmark for i in INPUTS if i.cost)


def supply(benchmark: str) -> str:
    """The overrides that measure ``benchmark`` (``benchmark=<family>``)."""
    return f"benchmark={INPUT[benchmark].family}"


def missing_inputs(df: pd.DataFrame, model: str, device: str) -> list[str]:
    """One line per required input the run lacks: which points were skipped and why, and the command that would
    supply them (empty when everything is there)."""
    lines = []
    for i in INPUTS:
        if not i.required:
            continue
        d = df[df["benchmark"] == i.benchmark] if not df.empty else df
        if not d.empty and (d["status"] == "ok").any():
            continue
        cmd = f"python -m bench run {supply(i.benchmark)} model={model}"
        if device == "cpu" and model != "tiny":
            cmd += "  (on a CPU-only machine: model=tiny, whose layers fit harness.cpu_max_bytes)"
        if d.empty:
            lines.append(f"{i.gives}: the run has no {i.benchmark} points; supply them with `{cmd}`")
            continue
        reasons = d["reason"].fillna("").astype(str)
        top = reasons.value_counts()
        why = top.index[0]
        more = f" (and {len(top) - 1} other reason(s))" if len(top) > 1 else ""
        lines.append(f"{i.gives}: all {len(d)} {i.benchmark} points {'/'.join(sorted(set(d['status'])))}: {why}"
                     f"{more}; supply them with `{cmd}`")
    return lines
