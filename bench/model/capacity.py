"""Capacity curves: each tier's hit rate, throughput and speedup as its capacity per GPU grows (the others as
configured), from one pass of stack distances (bench.model.cachesim.Curves), and each tier's knee: the capacity
after which doubling it adds less than ``fleet.knee_gain`` of throughput. Capacities per GPU in GB (HBM), GiB (host
DRAM), TB (NVMe)."""
from __future__ import annotations

from bench.core.threads import in_threads
from bench.model.cachesim import Curves
from bench.model.costs import Costs
from bench.model.steps import CacheScenario, FleetSizing, Requests


# capacity grids, per GPU: host DRAM and NVMe from none to far beyond a node's; HBM for KV up to 8x the configured
HOST_GRID_GIB = (0, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
NVME_GRID_TB = (0, 0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32)


def capacity_curves(req: Requests, scenario: CacheScenario, sizing: FleetSizing, fl, costs: Costs) -> dict:
    """Hit rate per tier, throughput and speedup as each tier's capacity per GPU grows (the others as configured;
    NVMe with the configured host DRAM), from one pass of stack distances over the best routing's replay (exact;
    ``fleet.curve_sample_rate`` < 1 replays that share of the instances, with its standard error). The knee of a
    tier: the capacity after which doubling it adds less than ``fleet.knee_gain`` of throughput."""
    import time

    t0 = time.perf_counter()
    trace, bt, block_bytes = req.trace, req.block_tokens, scenario.block_bytes
    g, caps, routing, tiers = sizing.gpus_per_instance, scenario.capacity_blocks, scenario.best_routing, costs.tiers
    sim, base_rate = scenario.sims_by_routing[routing], scenario.priced.baseline_rps
    rate = float(fl.curve_sample_rate) if fl.curve_sample_rate else 1.0
    cv = Curves(trace, bt, sim.instance, int(fl.sim_instances), routing, rate=rate)
    gib = 2 ** 30
    hbm_max = int(caps[0] / max(float(fl.hbm_cache_fraction), 1e-9))  # every free byte of HBM holding KV
    grids = {"hbm": sorted({max(1, min(hbm_max, int(caps[0] * f))) for f in (0.125, 0.25, 0.5, 1, 2, 4, 8)}),
             "host": [int(g * x * gib // block_bytes) for x in HOST_GRID_GIB],
             "storage": [int(g * x * 1e12 // block_bytes) for x in NVME_GRID_TB]}
    out: dict = {"routing": routing, "per_gpu_unit": {"hbm": "GB", "host": "GiB", "storage": "TB"}, "tiers": {},
                 "exact": not cv.sampled, "instances_replayed": len(cv.kept_instances),
                 "instances": int(fl.sim_instances)}
    todo = [(tier, c) for tier, grid in grids.items() if tier == "hbm" or tier in tiers for c in grid]

    def point(item):
        tier, c = item
        cp = (c, 0, 0) if tier == "hbm" else ((caps[0], c, 0) if tier == "host" else (caps[0], caps[1], c))
        res = cv.at(cp)
        r = res.rates()
        _, rps, _ = scenario.pricer.price(costs, res)
        row = {"blocks_per_instance": int(c), "per_gpu": c * block_bytes / g / (gib if tier == "host" else 1e12
                                                                               if tier == "storage" else 1e9),
               "hit_rate": r["hit_rate"], "hit_rate_hbm": r["hit_rate_hbm"], "hit_rate_host": r["hit_rate_host"],
               "hit_rate_storage": r["hit_rate_storage"], "requests_per_s": rps, "speedup": rps / base_rate}
        if cv.sampled:
            row["stderr"] = cv.stderr(res)
        return row

    rows = in_threads(point, todo)  # on every core (the replay's classification is numba without the GIL)
    for tier in grids:
        mine = [row for (t, _), row in zip(todo, rows) if t == tier]
        if mine:
            out["tiers"][tier] = {"points": mine, "knee": _knee(mine, float(fl.knee_gain), out["per_gpu_unit"][tier])}
    out["seconds"] = time.perf_counter() - t0
    return out


def _knee(rows: list, gain: float, unit: str) -> dict:
    """The capacity after which every doubling (each next grid point) adds less than ``gain`` of throughput; and
    whether the tier pays at all (throughput there above the first grid point's: no tier or the least of it)."""
    knee = None
    for i in range(len(rows) - 1):
        if rows[i]["per_gpu"] > 0 and all(rows[j + 1]["requests_per_s"] < rows[j]["requests_per_s"] * (1 + gain)
                                          for j in range(i, len(rows) - 1)):
            knee = i
            break
    if knee is None:
        last = rows[-1]
        return {"per_gpu": None, "unit": unit, "speedup": last["speedup"], "hit_rate": last["hit_rate"],
                "gain_of_doubling": None, "pays": True,
                "note": f"still gains {gain:.0%} or more per doubling at {last['per_gpu']:g} {unit} per GPU"}
    a = rows[knee]
    nxt = rows[knee + 1]
    pays = a["requests_per_s"] > rows[0]["requests_per_s"] * (1 + 1e-9)
    return {"per_gpu": a["per_gpu"], "unit": unit, "speedup": a["speedup"], "hit_rate": a["hit_rate"],
            "gain_of_doubling": nxt["requests_per_s"] / a["requests_per_s"] - 1, "pays": bool(pays),
            "without": rows[0]["speedup"]}
