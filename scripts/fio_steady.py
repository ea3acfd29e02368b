"""tierbench's default storage points beside fio at steady state, on the same file, alternated A/B/A/B.

    python scripts/fio_steady.py DIR [--request 4096] [--qd 16] [--pattern random] [--rounds 4] [--seconds 6]

A is tierbench's own point (file_read / file_write, engine aio) exactly as a default-suite run times it (its pass
sizing, warm-up and stopping rule: nothing overridden but the request size, queue depth, pattern and engine); B is
fio time_based for ``--seconds`` (libaio, O_DIRECT, no buffer scrambling): the steady state fio reports. Both run
on the one pattern file the run wrote (after fio's writes its pattern is rewritten, untimed, so tierbench's reads
still verify). Rounds alternate which goes first. Prints each round and the median ratio tierbench / fio.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np


def fio_steady(path: str, write: bool, pattern: str, req: int, qd: int, file_bytes: int, seconds: float) -> dict:
    rw = {("random", False): "randread", ("random", True): "randwrite",
          ("sequential", False): "read", ("sequential", True): "write"}[(pattern, write)]
    cmd = ["fio", "--name=steady", f"--filename={path}", f"--rw={rw}", f"--bs={req}", f"--size={file_bytes}",
           "--ioengine=libaio", f"--iodepth={qd}", "--direct=1", "--numjobs=1", "--thread", "--invalidate=1",
           "--scramble_buffers=0", "--time_based", f"--runtime={seconds:g}", "--lat_percentiles=1",
           "--percentile_list=50:99", "--output-format=json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 10 + 60)
    if p.returncode != 0:
        raise SystemExit(f"fio failed: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    d = json.loads(p.stdout[p.stdout.find("{"):])["jobs"][0]["write" if write else "read"]
    return {"gbps": d["bw_bytes"] / 1e9, "lat_p50_us": d["lat_ns"]["percentile"]["50.000000"] / 1e3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--request", type=int, default=4096)
    ap.add_argument("--qd", type=int, default=16)
    ap.add_argument("--pattern", default="random", choices=["random", "sequential"])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--suite", default="default", help="the suite whose storage settings tierbench's points use")
    a = ap.parse_args(argv)

    from bench.benchmarks.storage.benchmarks import storage_root
    from bench.hw.fileio import create_pattern_file
    from bench.harness import RunContext, run_point
    from bench.harness.timing import StoppingRule
    from bench.hw.device import Device
    from bench.hw.nvml import ClockSampler
    from bench.commands.overrides import compose_checked
    from bench.benchmarks import load_all

    cfg = compose_checked([f"suite={a.suite}", "harness.device=cpu", f"storage.path={a.dir}",
                           f"storage.request_bytes=[{a.request}]", "storage.kv_block_tokens=[]",
                           f"storage.queue_depths=[{a.qd}]", f"storage.patterns=[{a.pattern}]",
                           "storage.engines=[aio]"])
    h = cfg.harness
    rule = StoppingRule(h.min_samples, h.max_samples, h.noise_target, h.time_budget_s)
    reg = load_all()
    ctx = RunContext()
    dev = Device("cpu")
    params = {"engine": "aio", "request_bytes": a.request, "pattern": a.pattern, "queue_depth": a.qd}
    rows = []
    try:
        for r in range(1, a.rounds + 1):
            order = ("tierbench", "fio") if r % 2 else ("fio", "tierbench")
            for write in (False, True):
                name = "file_write" if write else "file_read"
                got = {}
                for who in order:
                    if who == "tierbench":
                        body = run_point(reg[name], dict(params), cfg, dev, rule, float(h.warmup_s), None,
                                         int(1 << 34), ClockSampler(dev, enabled=False), {}, ctx)
                        if body["status"] != "ok":
                            raise SystemExit(f"tierbench {name}: {body['status']}: {body['reason']}")
                        got[who] = {"gbps": body["metrics"]["gbps"], "lat_p50_us": body["metrics"]["lat_p50_us"],
                                    "requests": body["info"].get("requests_per_pass")}
                    else:  # the pattern file tierbench's first point wrote (round 1 starts with tierbench)
                        wd = ctx.resources[("storage_workdir", storage_root(cfg))]
                        path, _ = wd.pattern_file(int(cfg.storage.file_bytes), int(cfg.storage.seed),
                                                  cfg.storage.direct)
                        got[who] = fio_steady(path, write, a.pattern, a.request, a.qd, int(cfg.storage.file_bytes),
                                              a.seconds)
                        if write:  # fio wrote its own data: the file's pattern back (untimed) for tierbench's reads
                            create_pattern_file(path, int(cfg.storage.file_bytes), int(cfg.storage.seed),
                                                cfg.storage.direct)
                ratio = got["tierbench"]["gbps"] / got["fio"]["gbps"]
                rows.append((r, name, order[0], got["tierbench"], got["fio"], ratio))
                print(f"round {r} {name:<10} first {order[0]:<9} tierbench {got['tierbench']['gbps']:.3f} GB/s "
                      f"(p50 {got['tierbench']['lat_p50_us']:.0f} us, {got['tierbench']['requests']} requests/pass)  "
                      f"fio {got['fio']['gbps']:.3f} GB/s (p50 {got['fio']['lat_p50_us']:.0f} us)  "
                      f"tierbench/fio {ratio:.3f}", flush=True)
    finally:
        ctx.close()
    for name in ("file_read", "file_write"):
        rs = [x for x in rows if x[1] == name]
        med_t = float(np.median([x[3]["gbps"] for x in rs]))
        med_f = float(np.median([x[4]["gbps"] for x in rs]))
        print(f"{name}: median tierbench {med_t:.3f} GB/s, fio {med_f:.3f} GB/s, tierbench/fio {med_t / med_f:.3f} "
              f"(per round {', '.join(f'{x[5]:.3f}' for x in rs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
