"""Work spread over the machine's cores in threads: for calls that release the GIL (numba ``nogil`` kernels,
numpy on large arrays)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional


def in_threads(fn, items: list, workers: Optional[int] = None) -> list:
    """[fn(x) for x in items], run on the machine's cores (the cache replays are numba without the GIL)."""
    n = min(len(items), workers or os.cpu_count() or 1)
    if n <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, items))
