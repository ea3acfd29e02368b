"""The 2x verdict's decision: how far the workload lies outside what was measured, the outcome against the claim
from the interval, and what would decide an undetermined one (its statistics: bench.core.stats; its words:
bench.model.prose).

- Interval: the fits are refitted on bootstrap resamples of their measured points, each point's value jittered by
  its own measurement noise (standard error of the median from its IQR and sample count), and tier bandwidths by
  theirs; the whole throughput evaluation is redone per resample. The interval is the central ``verdict.interval``
  of those speedups.
- Extrapolation: how far the workload's prefill/decode shapes lie outside what the run measured, as a factor;
  beyond ``verdict.max_extrapolation`` the outcome is ``undetermined`` whatever the interval says.
- Outcome: ``supported`` when the whole interval is at or above the claim (2x), ``not_supported`` when it is all
  below, ``undetermined`` otherwise; an undetermined verdict names the measurement that would decide it.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from bench.core.stats import interval
from bench.core.units import sig
from bench.model import fleet as F


def extrapolation(quantity: str, values, measured: list) -> Optional[dict]:
    """How far ``values`` (the workload's) lie outside the ``measured`` [lo, hi] range, as a factor >= 1
    (``workload``: the positive values' range; ``span``: all values')."""
    allv = np.asarray(values, float)
    v = allv[allv > 0]
    if not v.size:
        return None
    lo, hi = float(measured[0]), float(measured[1])
    factor = max(v.max() / max(hi, 1.0), (lo / v.min()) if lo > 0 else 1.0, 1.0)
    return {"quantity": quantity, "factor": float(factor), "workload": [float(v.min()), float(v.max())],
            "span": [float(allv.min()), float(allv.max())], "measured": [lo, hi]}


MEASURE = {
    "prefill new tokens": "layer_prefill at larger n_new: python -m bench run benchmark=layers "
                          "layers.prefill_new=[...] (up to {hi:.0f})",
    "prefill cached context": "layer_prefill at longer cached contexts: python -m bench run benchmark=layers "
                              "layers.prefill_ctx=[...] (up to {hi:.0f})",
    "decode batch": "layer_decode at larger batches: python -m bench run benchmark=layers "
                    "layers.decode_batch=[...] (up to {hi:.0f})",
    "decode context": "layer_decode at longer contexts: python -m bench run benchmark=layers "
                      "layers.decode_ctx=[...] (up to {hi:.0f})",
}


def decide(point: float, low: float, high: float, claim: float, extrap: list[dict], max_factor: float,
           widest: str, level: float = 0.9) -> tuple[str, str, str]:
    """(outcome, what would decide it, why: the one reason for the outcome, in words) from the interval and the
    extrapolation factors."""
    far = [e for e in extrap if e["factor"] > max_factor]
    where = ("above" if low >= claim else "below" if high < claim else "") if math.isfinite(low + high) else ""
    if far:
        worst = max(far, key=lambda e: e["factor"])
        why = (f"the workload's {worst['quantity']} reaches {sig(worst['workload'][1])}, {sig(worst['factor'])}x "
               f"beyond the measured {sig(worst['measured'][0])}..{sig(worst['measured'][1])} (the verdict trusts "
               f"up to {sig(max_factor)}x)" + (f", though the interval lies {where} {claim:g}x" if where else ""))
        return "undetermined", MEASURE[worst["quantity"]].format(hi=worst["workload"][1]), why
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undetermined", "fits that can be resampled: more measured points per fit", \
            "the fits could not be resampled, so there is no interval"
    if low >= claim:
        return "supported", "", f"the whole {level:.0%} interval lies above {claim:g}x"
    if high < claim:
        return "not_supported", "", f"the whole {level:.0%} interval lies below {claim:g}x"
    return "undetermined", (f"a narrower interval: more points and samples for {widest} (it moves the speedup "
                            f"most)"), f"the {level:.0%} interval spans {claim:g}x ({widest} moves it most)"

def seed_case(fl, priced, speedup: dict, boot: dict, key: str, level: float, hit_rate: float) -> dict:
    """The seed's case, labelled: its arithmetic as written (64 GPUs balanced 50:50, prefill removed: 2x, Amdahl
    1 / (1 - 0.5)), computed by the fleet model itself, then the same arithmetic on the measured costs: the measured
    prefill share, the balanced split it implies, its Amdahl bound, and what the workload's hit rate reaches of
    it (the verdict's speedup and its share of the bound's gain), each with its interval. ``priced``: the model at
    the measured costs (bench.model.steps.Priced); ``speedup``: the verdict's {point, low, high}; ``boot``: the
    bootstrap's figures, ``key`` the verdict's scenario among them."""
    base = F.best_split(64, 1.0, 1.0)  # equal prefill and decode work per request: the balanced split is 32:32
    gone = F.best_split(64, 0.0, 1.0)  # reuse removes prefill: every GPU decodes
    written = {"gpus": 64, "prefill_gpus": base.prefill_gpus, "decode_gpus": base.decode_gpus, "prefill_share": 0.5,
               "speedup": gone.requests_per_s / base.requests_per_s, "amdahl_bound": F.amdahl_bound(1.0, 1.0),
               "description": "the seed's arithmetic as written: 64 GPUs split 50:50 between prefill and decode, "
                              "each pool busy (prefill is half the GPU time); KV reuse removes prefill and its 32 "
                              "GPUs move to decode: 2x, and no more (Amdahl: 1 / (1 - 0.5))"}
    point, lo, hi = speedup["point"], speedup["low"], speedup["high"]
    share = priced.prefill_share
    n_pre = max(1, min(fl.gpus - 1, round(fl.gpus * share)))
    amd = [a for a in boot["amdahl"]]
    gain = [(s - 1) / (a - 1) if a > 1 else np.nan for s, a in zip(boot[key], amd)]
    bound = priced.amdahl_bound
    measured = {
        "prefill_share": {"point": share, **dict(zip(("low", "high"), interval(boot["prefill_share"], level)))},
        "balanced_split": {"gpus": int(fl.gpus), "prefill_gpus": int(n_pre), "decode_gpus": int(fl.gpus - n_pre)},
        "amdahl_bound": {"point": bound, **dict(zip(("low", "high"), interval(amd, level)))},
        "speedup": {"point": point, "low": lo, "high": hi}, "hit_rate": hit_rate,
        "share_of_bound_gain": {"point": (point - 1) / (bound - 1) if bound > 1 else math.nan,
                                **dict(zip(("low", "high"), interval(gain, level)))},
        "description": f"the same arithmetic on the measured costs: prefill is this share of the GPU time without "
                       f"reuse, so a balanced {fl.gpus}-GPU fleet splits {n_pre}:{fl.gpus - n_pre}; removing prefill "
                       "gives at most the Amdahl bound, and the workload's hit rate reaches the verdict's speedup"}
    return {"as_written": written, "measured": measured, "speedup": point,
            "description": "the seed's case: its arithmetic as written, then on these costs"}
