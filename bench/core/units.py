"""Numbers for people: each value in the unit that reads best (us/ms/s/min/h/days, B/KiB/MiB/GiB/TiB, KB/s to
TB/s), three significant figures, never e-notation. Every command, the verdict's prose and the report use these."""
from __future__ import annotations

import math
from typing import Optional


def sig(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant figures and no exponent: 0.0123, 4.56, 789, 12345 (a value with more
    integer digits keeps them all, rounded to an integer, up to 1e9; beyond, a magnitude as 1.00e+30)."""
    if not math.isfinite(x):
        return "n/a" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x == 0:
        return "0"
    if abs(x) >= 1e9:  # past any unit's range: a magnitude, not 30 digits
        return f"{x:.{digits - 1}e}"
    decimals = max(digits - 1 - math.floor(math.log10(abs(x))), 0)
    rounded = round(x, decimals)
    if rounded != 0 and math.floor(math.log10(abs(rounded))) > math.floor(math.log10(abs(x))):
        decimals = max(decimals - 1, 0)  # 9.996 -> 10.0, not 10.00
    text = f"{x:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if decimals else text

def seconds(s: Optional[float]) -> str:
    """A duration given in seconds: 850 us, 12.3 ms, 4.5 s, 12.0 min, 3.4 h, 2.1 days."""
    if s is None or not math.isfinite(s):
        return "n/a"
    a = abs(s)
    for limit, scale, unit in ((1e-3, 1e-6, "us"), (1.0, 1e-3, "ms"), (120.0, 1.0, "s"), (7200.0, 60.0, "min"),
                               (172800.0, 3600.0, "h")):
        if a < limit:
            return f"{sig(s / scale)} {unit}"
    return f"{sig(s / 86400.0)} days"


def millis(ms: Optional[float]) -> str:
    """A duration given in milliseconds, in the unit that reads best (seconds())."""
    return "n/a" if ms is None else seconds(ms / 1e3)


def bytes_binary(n: Optional[float]) -> str:
    """A size in bytes in powers of 1024: 512 B, 4 KiB, 1.5 GiB, 3.2 TiB (memory, files)."""
    if n is None or not math.isfinite(n):
        return "n/a"
    for unit, size in (("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{sig(n / size)} {unit}"
    return f"{int(n)} B"


def bytes_decimal(n: Optional[float]) -> str:
    """A size in bytes in powers of 1000: 512 B, 4 KB, 77.3 GB, 3.6 TB (capacities quoted in decimal units)."""
    if n is None or not math.isfinite(n):
        return "n/a"
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{sig(n / size)} {unit}"
    return f"{int(n)} B"


def rate(gbps: Optional[float]) -> str:
    """A bandwidth given in GB/s (1e9 B/s): KB/s, MB/s, GB/s or TB/s; unbounded for +inf."""
    if gbps is None or not math.isfinite(gbps):
        return "n/a" if gbps is None or math.isnan(gbps) else ("unbounded" if gbps > 0 else "n/a")
    for scale, unit in ((1e3, "TB/s"), (1.0, "GB/s"), (1e-3, "MB/s")):
        if abs(gbps) >= scale:
            return f"{sig(gbps / scale)} {unit}"
    return f"{sig(gbps / 1e-6)} KB/s"


def count(n: Optional[float], unit: str = "") -> str:
    """A count with a decimal prefix: 950, 12.3 K, 4.5 M, 2.1 G (requests, tokens, descriptors)."""
    if n is None or not math.isfinite(n):
        return "n/a"
    for scale, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{sig(n / scale)} {p}{unit}"
    return f"{sig(n)} {unit}".rstrip()


def ppm(x: Optional[float]) -> str:
    """A small relative error (a fraction) in parts per million: 0.56 ppm, 1200 ppm; 0 as 0."""
    if x is None or not math.isfinite(x):
        return "n/a" if x is None else "inf"
    return "0" if x == 0 else f"{sig(x * 1e6)} ppm"


def percent(x: Optional[float]) -> str:
    """A fraction as a percentage with two significant figures below 10%: 0.46%, 3.2%, 18%, 100%."""
    if x is None or not math.isfinite(x):
        return "n/a"
    v = 100 * x
    if v == 0 or abs(v) >= 10:
        return f"{v:.0f}%"
    return f"{sig(v, 2)}%"
