"""Cost models of the interference family (bench.harness.cost): copies beside layer loops, layer-wise loads, host
traffic in both directions."""
from __future__ import annotations

from bench.benchmarks.interference.sizes import layerwise_depth
from bench.benchmarks.layers.cost import layer_attention_s, layer_check_s, layer_s, stack_setup_s
from bench.benchmarks.transfer.cost import paged_call
from bench.harness.cost import Ctx, Timed, Work

# both directions at once move ~1.75x one direction's bytes per second on a full-duplex PCIe link (H100: 92 GB/s
# both ways against 55.1 one way; the link's two directions are independent, its shared root complex is not)
BIDIR_LINK_FACTOR = 1.75


def copy_under_compute(c: Ctx) -> Work:
    ic = c.cfg.interference
    elt = c.compute_elt("layers")
    k = int(ic.compute_layers)
    decode = c.p["compute"] == "decode"
    b, n, ctx = (int(ic.decode_batch), 1, int(ic.decode_ctx)) if decode else \
        (1, int(ic.prefill_new), int(ic.prefill_ctx))
    one = layer_s(c, decode, b, n, ctx, elt)
    block = c.shape.kv_block_bytes(int(ic.block_tokens))
    packed = max(1, int(ic.copy_bytes) // block) * block
    copy, _clock = paged_call(c, c.p["method"], str(ic.layout), int(ic.block_tokens), packed)
    compute = k * one
    repeats = min(int(ic.max_repeats), max(1, round(copy / compute))) if ic.match_durations else 1
    together = max(copy, compute * repeats)
    timed = [Timed(copy, "lanes", key=("copy_alone", c.p["method"], c.p["direction"], packed)),
             Timed(compute, "lanes", key=("compute_alone", c.p["compute"], 1)),
             Timed(together, "lanes")]
    if repeats > 1:
        timed.append(Timed(compute * repeats, "lanes", key=("compute_alone", c.p["compute"], repeats)))
    pool = packed * int(ic.pool_factor)
    setup = stack_setup_s(c, k, one, elt) + c.dev_fill(pool) + c.pin(packed) + c.host_fill(packed) + \
        2 * (together + c.compare(packed, False))
    return Work(timed, setup_s=setup, once={("layer_check", decode): layer_check_s(c), **layer_attention_s(c)})


def layerwise_load(c: Ctx) -> Work:
    elt = c.compute_elt("layers")
    n_new, hit, tier = int(c.p["n_new"]), int(c.p["hit_tokens"]), c.p["tier_gbps"]
    s = c.shape
    L = layerwise_depth(c.state, n_new, hit)  # the benchmark's own rule, on the target's memory budget
    one = layer_s(c, False, 1, n_new, hit, elt)
    layer_bytes = hit * s.kv_bytes_per_token_per_layer * elt // s.elt_bytes
    load_link = L * c.link(layer_bytes)
    load = load_link if tier == "link" else max(load_link, L * layer_bytes / (float(tier) * 1e9))
    compute = L * one
    together = max(load, compute) + min(load, compute) / L
    timed = [Timed(load_link, "lanes", key=("layerwise_link", n_new, hit, L)),
             Timed(compute, "lanes", key=("layerwise_compute", n_new, hit, L)),
             Timed(together, "lanes")]
    if tier != "link":
        timed.append(Timed(load, "lanes", key=("layerwise_tier", n_new, hit, L, tier)))
    verify = 2 * (together + c.compare(L * layer_bytes, False) + c.ops(4 * L))
    setup = stack_setup_s(c, L, one, elt) + c.pin(L * layer_bytes) + c.hbm(L * layer_bytes) + verify + compute
    return Work(timed, setup_s=setup, once={("layer_check", False): layer_check_s(c), **layer_attention_s(c)})


def host_traffic_concurrent(c: Ctx) -> Work:
    k, n = int(c.p["streams"]), int(c.cfg.interference.host_bytes)
    one_way = c.link(k * n)
    both = max(one_way, 2 * k * n / (BIDIR_LINK_FACTOR * c.t.link_gbps * 1e9))
    setup = c.pin(2 * k * n) + c.host_fill(k * n) + c.dev_fill(k * n) + 2 * (both + c.compare(k * n, True) +
                                                                               c.compare(k * n, False))
    return Work([Timed(one_way, "lanes", key=("host_alone", "h2d", k, n)),
                 Timed(one_way, "lanes", key=("host_alone", "d2h", k, n)), Timed(both, "lanes")], setup_s=setup)


def all_gpus_host(c: Ctx) -> Work:
    n = int(c.cfg.interference.host_bytes)
    return Work([Timed(c.link(n), "lanes"), Timed(c.link(n), "lanes")], setup_s=c.pin(2 * n) + c.host_fill(n))
