"""Config schemas (Hydra ConfigStore, type-checked) and the value checks that give one-line errors.

The YAML in conf/ extends these dataclasses: a key that is not declared, or a value of the wrong type, is refused
by Hydra/OmegaConf; ranges and names are checked by :func:`validate`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from bench import conf_dir, kernels_dir  # noqa: F401  (re-exported: config and kernel paths)
from bench.core.checks import CHECKS, check  # noqa: F401  (CHECKS re-exported)
from bench.core.identity import host_tag as _host_tag  # noqa: F401  (the run id's resolver, tb_host)

MiB = 1 << 20

if not OmegaConf.has_resolver("tb_host"):
    OmegaConf.register_new_resolver("tb_host", _host_tag)


@dataclass
class HarnessConfig:
    device: str = "auto"  # auto | cuda | cpu
    device_index: int = 0  # CUDA device the run measures (CUDA_VISIBLE_DEVICES numbering)
    warmup_s: float = 0.05  # warm-up time per point, excluded from the numbers
    min_samples: int = 5  # timed samples at least, before the noise target may stop sampling
    max_samples: int = 1000  # timed samples at most (then converged=False)
    noise_target: float = 0.02  # stop when IQR/median falls below this
    time_budget_s: float = 2.0  # sampling time per point before giving up (converged=False)
    l2_flush: bool = True  # flush GPU L2 before samples of L2-cold benchmarks
    progress: bool = True  # a progress bar on stderr while points run
    cpu_max_bytes: int = 64 * MiB  # CPU mode: points needing more memory are skipped with that reason
    cpu_threads: Optional[int] = 1  # CPU mode: torch intra-op threads while timing (torch.utils.benchmark's 1);
    # null = torch's default (every core: faster, noisier, and a neighbour's load shows more)
    gpu_mem_fraction: float = 0.8  # GPU: budget per point as a fraction of free memory
    host_mem_fraction: float = 0.5  # GPU runs: host (pinned) buffers per point as a fraction of MemAvailable


@dataclass
class PlanConfig:
    """`bench run --plan`: the target to plan for (conf/targets/<gpu>.yaml; null = this machine) and the storage
    rates to assume there (null = the target's)."""

    gpu: Optional[str] = None  # the target to plan for: conf/targets/<name> (docs/targets.md); null = this machine
    storage_read_gbps: Optional[float] = None  # the disk's read rate to assume on the target (null: the target's)
    storage_write_gbps: Optional[float] = None  # the disk's write rate to assume (null: the target's)


@dataclass
class RunConfig:
    root: str = "results"  # directory the run's folder goes under
    id: str = "${now:%Y%m%d-%H%M%S}-${tb_host:}"  # the run's folder name (default: time and host)
    notes: str = ""  # free text kept in the manifest
    analyze: bool = True  # end the run with the throughput model and verdict (or say which inputs are missing)
    cpu_defaults: list = field(default_factory=list)  # presets `bench run` added for a CPU-only machine (it sets it)
    max_hours: float = 24.0  # a run (or --plan) whose planned total exceeds this many hours is refused before it
    # starts; raise it to run a longer plan on purpose


@dataclass
class SuiteConfig:
    description: str = ""  # what the suite is for (conf/suite/<name>.yaml)
    # benchmarks or families the suite runs, or all (within the loaded families)
    benchmarks: list = field(default_factory=lambda: ["all"])  # benchmarks or families the suite runs, or all


@dataclass
class ModelConfig:
    """A transformer's published shape. Derived quantities live in bench.llm.shapes."""

    name: str = MISSING  # preset name (conf/model/<name>.yaml)
    description: str = ""  # what the preset is
    source: str = ""  # where its shape comes from (model card, config.json)
    layers: int = MISSING  # transformer layers
    hidden: int = MISSING  # hidden size
    heads: int = MISSING  # query heads
    kv_heads: int = MISSING  # key/value heads (GQA; = heads for MHA)
    head_dim: int = MISSING  # dimension of one head
    ffn: int = MISSING  # dense MLP intermediate size
    vocab: int = 0  # vocabulary size (0: not modelled)
    dtype: str = "bfloat16"  # weights' and KV's dtype: float32, float16, bfloat16, float8_e4m3fn
    attention: str = "gqa"  # gqa | mla
    # mixture of experts (0 = dense)
    experts: int = 0  # routed experts per MoE layer
    experts_active: int = 0  # experts a token is routed to
    shared_experts: int = 0  # experts every token uses
    moe_ffn: int = 0  # intermediate size of one expert
    dense_layers: int = 0  # leading dense layers in an MoE model
    # multi-head latent attention (deepseek)
    kv_lora_rank: int = 0  # MLA: width of the compressed KV latent
    q_lora_rank: int = 0  # MLA: width of the compressed query
    rope_head_dim: int = 0  # MLA: rotary part of a head
    v_head_dim: int = 0  # MLA: value head dimension


CORE_SECTIONS = (("harness", HarnessConfig), ("run", RunConfig), ("plan", PlanConfig), ("suite", SuiteConfig),
                 ("model", ModelConfig))


def root_config(families) -> type:
    """The root config's dataclass: the core sections, one section per benchmark family (bench.core.family: each
    family's own config dataclass, in the families' order), ``families`` (filled by the benchmark/ group: each
    family config loaded adds its name) and ``only`` (null = every benchmark of the loaded families in the suite;
    or names: only=[h2d_pinned])."""
    from dataclasses import make_dataclass

    fields = [(name, cls, field(default_factory=cls)) for name, cls in CORE_SECTIONS]
    fields += [(f.name, f.config, field(default_factory=f.config)) for f in families]
    fields += [("families", dict, field(default_factory=dict)), ("only", Any, None)]
    return make_dataclass("RootConfig", fields)


@dataclass
class WorkloadConfig:
    name: str = MISSING  # preset name (conf/workload/<name>.yaml)
    description: str = ""  # what the workload is
    source: str = ""  # where its figures come from
    shared_prefix_tokens: int = MISSING  # tokens every session shares (tools + system prompt)
    session_context_tokens: int = 0  # tokens a session starts with beyond the shared prefix
    turns: int = MISSING  # mean turns (requests) per session
    new_tokens: int = MISSING  # mean new input tokens per turn
    output_tokens: int = MISSING  # mean output tokens per turn
    spread: float = 0.5  # lognormal sigma of turns and token counts around their means
    think_time_s: float = 5.0  # mean time between a response and the next turn (exponential)
    sessions_per_s: float = 1.0  # session arrival rate (Poisson)
    max_context_tokens: int = 131072  # a session ends when its context would pass this
    ttft_ms: Optional[float] = None  # the preset's time-to-first-token target (fleet.ttft_ms overrides it)
    tpot_ms: Optional[float] = None  # the preset's time-per-output-token target (fleet.tpot_ms overrides it)
    slo_source: str = ""  # where the preset's targets come from


@dataclass
class FleetConfig:
    description: str = ""  # what the fleet is (conf/fleet/<name>.yaml)
    gpus: int = 64  # GPUs in the fleet
    mode: str = "disaggregated"  # disaggregated | colocated
    prefill_fraction: Optional[float] = None  # null = the best split; else a fixed share of GPUs on prefill
    gpus_per_instance: Optional[int] = None  # tensor-parallel degree; null = smallest power of 2 that fits
    hbm_bytes: Optional[int] = None  # per GPU; null = from the run's fingerprint
    reserve_fraction: float = 0.1  # HBM kept for activations and fragmentation
    max_batch: int = 256  # largest decode batch per instance
    ttft_ms: Optional[float] = None  # time-to-first-token target; null = the workload preset's; 0 = no target
    tpot_ms: Optional[float] = None  # time-per-output-token target; null = the workload preset's; 0 = no target
    slo_attainment: float = 0.9  # goodput: the share of requests that must meet both targets
    slo_requests: Optional[int] = 20000  # requests replayed per goodput rate (a uniform sample); null = all
    overlap_load: bool = True  # KV loads overlap prefill compute layer by layer (else they add)
    load_cost: str = "auto"  # auto | measured (layerwise_load records) | bandwidth (bytes / GB/s)
    colocated_interference: float = 0.0  # colocated mode: slowdown of decode while a prefill shares the GPU (fraction)
    # disaggregated: the KV each request moves from prefill to decode (bench.model.handoff): full (all of it; decode
    # keeps nothing between turns) | new (only the tokens not reused; decode keeps every session) | sim (what the
    # decode pool's own prefix cache misses, simulated)
    handoff: str = "full"
    handoff_layerwise: bool = True  # each layer's KV sent when its prefill ends (else the whole request after it)
    # tokens per KV block of the handoff; null: the largest block the run's handoff records measured (16 for an estimate)
    handoff_block_tokens: Optional[int] = None
    # each GPU's prefill <-> decode link (GB/s); null: the rate the run's handoff measured, else 50 (an estimate)
    link_gbps: Optional[float] = None
    hbm_cache_fraction: float = 0.3  # share of free HBM per instance kept as prefix cache
    host_bytes_per_gpu: int = 137438953472  # 128 GiB of host DRAM per GPU for the host tier
    storage_bytes_per_gpu: int = 2000000000000  # 2 TB of NVMe per GPU for the storage tier
    block_tokens: int = 512  # cache block (Mooncake traces use 512)
    sessions: int = 2000  # synthetic sessions to generate when no trace is given
    sim_instances: int = 8  # instances the cache simulation spreads requests over
    # request routings simulated: session (a session's turns to one instance), prefix (longest cached prefix), round_robin
    routings: list = field(default_factory=lambda: ["session", "prefix", "round_robin"])
    knee_gain: float = 0.05  # a tier's capacity knee: where doubling it adds less than this share of throughput
    curve_sample_rate: Optional[float] = None  # capacity curves from this share of the instances (null: all, exact)
    seed: int = 0  # seed of the synthetic sessions and samples


@dataclass
class VerdictConfig:
    """How the 2x verdict weighs its evidence (``bench model``)."""

    claim: float = 2.0  # the speedup claimed ("up to 2x")
    interval: float = 0.9  # central probability of the reported speedup interval
    bootstrap: int = 200  # resamples of the fitted points (with their measurement noise)
    max_extrapolation: float = 4.0  # beyond this factor outside the measured range the outcome is undetermined
    seed: int = 0  # seed of the bootstrap resamples


@dataclass
class SparseConfig:
    """The sparse-decode mode of `bench model` (bench.model.warm): each decode step attends to top_k rows of a
    sequence's context per layer, fetched from the warm tier at the run's measured warm_fetch (warm_peer) fit."""

    top_k: list = field(default_factory=lambda: [256, 2048, 8192])  # rows per layer a sparse decode step attends to
    repeat_fraction: float = 0.6  # of a step's rows selected by the previous step too, kept in HBM (ShadowKV ~60%)
    local_tokens: int = 64  # recent tokens every step attends to, kept in HBM
    overlap: bool = False  # fetch hidden behind the step's compute (prefetch); default: exposed


@dataclass
class AnalysisConfig:
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    model: Any = None  # null = the run's model; naming another one is refused
    trace: Optional[str] = None  # a trace or usage log (file or folder; any format bench workload reads) to replay
    trace_format: Optional[str] = None  # force the trace's format (null: detected from its content)
    hit_rate: Optional[float] = None  # evaluate at this reuse fraction instead of the workload's own
    # a trace of agent conversations replayed by this many concurrent users (each keeps its think and API times, a
    # new conversation starts when one ends); null: the trace's own timeline (conversations end to end)
    users: Optional[int] = None
    attention_kernel: Optional[str] = None  # a run whose layer records ran several attention kernels: fit this one
    out: Optional[str] = None  # output directory; null = <run>/model-<workload or trace>[-<variant>]
    plots: bool = True  # the model's plots beside model.json (false: model.json only, ~5 s sooner)
    verdict: VerdictConfig = field(default_factory=VerdictConfig)
    sparse: SparseConfig = field(default_factory=SparseConfig)


def register_schemas(families=None) -> None:
    """Hydra's schemas: the analysis config and, given the registered ``families``, the root config and
    ``benchmark=all`` (every family's config group, in the families' order)."""
    cs = ConfigStore.instance()
    cs.store(name="analysis_schema", node=AnalysisConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig, package="model")
    if families is not None:
        cs.store(name="tierbench_schema", node=root_config(families))
        cs.store(group="benchmark", name="all", node={"defaults": [f.name for f in families]}, package="_global_")


register_schemas()

DTYPES = ("float32", "float16", "bfloat16", "float8_e4m3fn")


def check_dtypes(cfg, *keys: str) -> None:
    """Each of ``keys`` (dotted) names a dtype the suite computes in."""
    for key in keys:
        val = OmegaConf.select(cfg, key)
        check(val in DTYPES, key, val, f"one of {', '.join(DTYPES)}")


def apply_cpu_overrides(cfg, typed=frozenset()) -> list[str]:
    """On a CPU-only run, replace each loaded family's sweep by its ``cpu:`` block (small shapes), except the keys
    the user typed (``typed``: override keys such as ``layers.decode_batch``, bench.commands.overrides.keys_of):
    what the user typed wins. Returns the ``family.key`` values the CPU profile filled. The records and the
    manifest show the values actually used."""
    filled = []
    for family, on in (cfg.families or {}).items():
        sec = cfg.get(family)
        if on and sec is not None and "cpu" in sec and sec.cpu:
            for k, v in sec.cpu.items():
                if f"{family}.{k}" in typed:
                    continue
                sec[k] = v
                filled.append(f"{family}.{k}")
    return filled


DEVICE_CHOICES = ("auto", "cuda", "cpu")
MAX_SAMPLES = 1_000_000  # harness.max_samples at most: more samples than this never changes a median
MAX_POINT_S = 3600.0  # harness.time_budget_s at most (seconds of sampling per point)
MAX_WARMUP_S = 600.0  # harness.warmup_s at most


def target_names() -> list[str]:
    """The planning targets (conf/targets/<name>.yaml), for plan.gpu."""
    return sorted(p.stem for p in (conf_dir() / "targets").glob("*.yaml"))


def check_plan_target(cfg) -> None:
    """plan.gpu names a target preset (conf/targets/) or is null."""
    if cfg.plan.gpu is not None:
        names = target_names()
        check(str(cfg.plan.gpu) in names, "plan.gpu", cfg.plan.gpu, f"one of {', '.join(names)} (conf/targets/)")


def validate(cfg, families=None) -> None:
    """Range and name checks beyond types; raises UserError naming the key, the value and what is allowed.
    ``families``: the families whose registered checks run (the run's selected ones, bench.benchmarks.validate;
    None: every family the config loads)."""
    h = cfg.harness
    check(h.device in DEVICE_CHOICES, "harness.device", h.device, f"one of {', '.join(DEVICE_CHOICES)}")
    check(h.device_index >= 0, "harness.device_index", h.device_index, "an integer >= 0")
    check(h.min_samples >= 1, "harness.min_samples", h.min_samples, "an integer >= 1")
    check(h.min_samples <= MAX_SAMPLES, "harness.min_samples", h.min_samples, f"an integer from 1 to {MAX_SAMPLES:,}")
    check(h.min_samples <= h.max_samples <= MAX_SAMPLES, "harness.max_samples", h.max_samples,
          f"an integer from harness.min_samples ({h.min_samples}) to {MAX_SAMPLES:,}")
    check(0 < h.noise_target < 1, "harness.noise_target", h.noise_target, "a fraction between 0 and 1 (e.g. 0.02)")
    check(0 < h.time_budget_s <= MAX_POINT_S, "harness.time_budget_s", h.time_budget_s,
          f"seconds > 0 and at most {MAX_POINT_S:g} (an hour of sampling per point)")
    check(0 <= h.warmup_s <= MAX_WARMUP_S, "harness.warmup_s", h.warmup_s, f"seconds from 0 to {MAX_WARMUP_S:g}")
    check(h.cpu_max_bytes > 0, "harness.cpu_max_bytes", h.cpu_max_bytes, "bytes > 0")
    check(h.cpu_threads is None or h.cpu_threads >= 1, "harness.cpu_threads", h.cpu_threads,
          "an integer >= 1, or null for torch's default")
    check(0 < h.gpu_mem_fraction <= 1, "harness.gpu_mem_fraction", h.gpu_mem_fraction, "a fraction in (0, 1]")
    check(0 < h.host_mem_fraction <= 1, "harness.host_mem_fraction", h.host_mem_fraction, "a fraction in (0, 1]")
    check(0 < cfg.run.max_hours <= 24 * 365, "run.max_hours", cfg.run.max_hours, "hours > 0 (at most a year)")
    check(bool(re.fullmatch(r"(?!\.+$)[A-Za-z0-9._-]+", str(cfg.run.id))), "run.id", cfg.run.id,
           "one directory name: letters, digits, '.', '_' and '-', not '.' or '..'")
    check_dtypes(cfg, "model.dtype")
    for key in ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn"):
        val = cfg.model[key]
        check(isinstance(val, int) and val > 0, f"model.{key}", val, "an integer > 0")
    check(cfg.model.heads % cfg.model.kv_heads == 0, "model.kv_heads", cfg.model.kv_heads,
           f"a divisor of model.heads ({cfg.model.heads})")
    check(cfg.model.attention in ("gqa", "mla"), "model.attention", cfg.model.attention, "gqa or mla")
    check_plan_target(cfg)
    for key in ("plan.storage_read_gbps", "plan.storage_write_gbps"):
        val = OmegaConf.select(cfg, key)
        check(val is None or val > 0, key, val, "GB/s > 0 (or null: the target's)")
    from bench.core.family import families as registered

    for f in registered():
        val = OmegaConf.select(cfg, f"{f.name}.budget_s")
        check(val is None or val > 0, f"{f.name}.budget_s", val, "seconds > 0, or null for no budget")
        if f.budget_bytes:
            val = OmegaConf.select(cfg, f"{f.name}.budget_bytes")
            check(val is None or val > 0, f"{f.name}.budget_bytes", val, "bytes > 0, or null for no budget")
    if cfg.storage.path is not None:
        check(str(cfg.storage.path).strip() != "", "storage.path", cfg.storage.path, "a directory path or null")
    if families is None:
        families = {f for f, on in (cfg.families or {}).items() if on}
    for family, family_check in CHECKS:
        if family in families:
            family_check(cfg)

