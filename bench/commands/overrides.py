"""Pre-flight check of `run` overrides: compose the config for each value of each sweep axis and validate it,
so a typo costs one clear line (exit 2) before Hydra starts jobs, not a stack trace in the middle of a sweep."""
from __future__ import annotations

import re

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from bench.benchmarks import validate_run
from bench.core.config import conf_dir
from bench.core.errors import UserError, allowed

# Hydra flags that take a value (the value is not an override)
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun", "--shell-completion", "-sc"}


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    flags, overrides = [], []
    it = iter(argv)
    for a in it:
        if a.startswith("-"):
            flags.append(a)
            if a in _VALUE_FLAGS:
                flags.append(next(it, ""))
        else:
            overrides.append(a)
    return flags, overrides


def key_of(override: str) -> str:
    """The key (or config group) an override sets: ``+a.b=1`` -> ``a.b``, ``model=tiny`` -> ``model``."""
    return override.lstrip("+~").split("=", 1)[0]


def keys_of(overrides) -> set[str]:
    return {key_of(o) for o in overrides}


def _parse(overrides: list[str]):
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        raise UserError(f"cannot parse override: {str(e).splitlines()[0]}") from None


def jobs(overrides: list[str]) -> list[list[str]]:
    """One override list per job of a ``-m`` sweep (Hydra's basic sweeper: the cartesian product of the sweep
    values, in order), or the overrides themselves."""
    import itertools

    axes = []
    for o in _parse(overrides):
        if key_of(o.key_or_group).startswith("hydra"):
            continue
        if o.is_sweep_override():
            key = o.get_key_element()
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            axes.append([o.input_line])
    return [list(c) for c in itertools.product(*axes)] if axes else [[]]


def variants(overrides: list[str]) -> list[list[str]]:
    """One override list per sweep value (others at their first value): enough to validate every value."""
    base, sweeps = [], []
    for o in _parse(overrides):
        if o.key_or_group.startswith("hydra") or o.key_or_group.startswith("+hydra"):
            continue
        if o.is_sweep_override():
            vals = list(o.sweep_string_iterator())
            key = o.get_key_element()
            sweeps.append([f"{key}={v}" for v in vals])
        else:
            base.append(o.input_line)
    if not sweeps:
        return [base]
    out = []
    firsts = [s[0] for s in sweeps]
    for i, s in enumerate(sweeps):
        for v in s:
            out.append(base + firsts[:i] + [v] + firsts[i + 1:])
    return out


def compose_checked(overrides: list[str], config_name: str = "config"):
    """Compose ``config_name`` with ``overrides``; any composition error becomes one UserError line. A key added
    with ``+key=`` (or ``++key=``) must be one the config declares, as a plain ``key=`` must: ``+`` cannot smuggle
    in a key nothing reads."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        added = [o for o in overrides if o.startswith("+") and "=" in o and "/" not in key_of(o)
                 and not key_of(o).startswith("hydra")]
        if added:
            keys = set(config_keys(config_name))
            for o in added:
                if key_of(o) not in keys:
                    import difflib

                    near = difflib.get_close_matches(key_of(o), sorted(keys), n=1, cutoff=0.6)
                    raise UserError(f"bad override {o}: {key_of(o)!r} is not a key of the config (every key: "
                                    f"docs/config.md)" + (f"; did you mean {near[0]}?" if near else ""))
        try:
            return compose(config_name=config_name, overrides=overrides)
        except MissingConfigException as e:
            raise _missing(e, overrides) from None
        except OverrideParseException as e:  # text that is no override at all (a stray path, a bad bracket)
            bad = re.search(r"parsing override '([^']*)'", str(e))
            raise UserError(f"{bad.group(1) if bad else ' '.join(overrides)!r} is not an override: key=value "
                            "(every key: docs/config.md)") from None
        except (ConfigCompositionException, OmegaConfBaseException) as e:
            cause = e.__cause__ or e
            msg = " ".join(str(cause).split("\n")[0].split())
            raise UserError(f"bad override {_named(str(cause), overrides)}: {msg}"
                            f"{_suggest(msg, overrides, config_name)}") from None


def _named(error: str, overrides: list[str]) -> str:
    """The override an OmegaConf error is about (its full_key), as the user typed it; else all of them."""
    m = re.search(r"full_key:\s*(\S+)", error)
    if m:
        for o in overrides:
            if o.split("=", 1)[0].lstrip("+~") == m.group(1):
                return o
    return "(" + " ".join(overrides) + ")"


_KEYS: dict = {}


def config_keys(config_name: str) -> list[str]:
    """Every dotted key of the composed default config (for 'did you mean'); call inside compose_checked's
    initialized Hydra."""
    if config_name not in _KEYS:
        from omegaconf import OmegaConf

        cfg = compose(config_name=config_name)
        keys: list[str] = []

        def walk(node, prefix):
            for k in node:
                key = f"{prefix}{k}"
                keys.append(key)
                v = node._get_node(k)
                if OmegaConf.is_dict(v):
                    walk(v, key + ".")

        walk(cfg, "")
        _KEYS[config_name] = keys
    return _KEYS[config_name]


def _suggest(msg: str, overrides: list[str], config_name: str) -> str:
    """'; did you mean KEY?' for an override whose key is not in the config."""
    import difflib

    if "not in struct" not in msg and "Could not override" not in msg and "Key '" not in msg:
        return ""
    try:
        keys = config_keys(config_name)
    except Exception:  # suggestions are a courtesy
        return ""
    for o in overrides:
        key = key_of(o)
        if "/" in key or key in keys:
            continue
        near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
        if near:
            return f"; did you mean {near[0]}?"
    return ""


def _missing(e: MissingConfigException, overrides: list[str]) -> UserError:
    """Name the override the user typed for the missing preset (not merely the first override)."""
    import re

    missing = getattr(e, "config_name", None) or ""
    if "/" not in missing:  # Hydra names it in the message: "Could not find 'benchmark/nope'"
        m = re.search(r"'([^']*/[^']*)'", str(e))
        missing = m.group(1) if m else missing
    group, _, name = missing.rpartition("/")
    opts = list(getattr(e, "options", None) or [])
    for o in overrides:
        key, _, val = o.lstrip("+~").partition("=")
        k = key.split("@")[0]
        if e.options is not None and k == group and (not name or val == name or name in val):
            return allowed(f"{key} preset", val, [x for x in opts if not x.endswith("_schema")])
    return UserError(" ".join(str(e).split("\n")[0].split()))


def check_launcher(overrides: list[str]) -> None:
    """hydra/launcher=NAME must be one we ship (or Hydra's basic) and its plugin must be installed."""
    for o in overrides:
        if o.startswith("hydra/launcher="):
            name = o.split("=", 1)[1]
            ours = sorted(p.stem for p in (conf_dir() / "hydra" / "launcher").glob("*.yaml"))
            if name not in ours + ["basic"]:
                raise allowed("hydra/launcher", name, ours + ["basic"])
            if name.startswith("slurm"):
                try:
                    import hydra_plugins.hydra_submitit_launcher  # noqa: F401
                except ImportError:
                    raise UserError(f"hydra/launcher={name} needs hydra-submitit-launcher: "
                                    "pip install -e '.[slurm]'") from None


def precheck(argv: list[str]) -> None:
    """Every value of every job checked before Hydra starts (and writes anything): the composed config, the values
    a CPU-only job would take from the families' ``cpu:`` blocks (named as ``family.cpu.key``), the device, where
    results go (``run.root`` writable, a typed ``run.id`` not already a run)."""
    flags, overrides = split_args(argv)
    check_launcher(overrides)
    planning = "--plan" in flags
    typed_id = "run.id" in keys_of(overrides)
    sweep = any(f in ("-m", "--multirun") for f in flags)
    cuda = None
    for ov in variants(overrides):
        cfg = compose_checked(ov)
        if cfg.harness.device == "cuda" or cuda is None:
            import torch

            cuda = torch.cuda.is_available()
        if cfg.harness.device == "cuda" and not cuda and not planning:
            raise UserError("harness.device=cuda but no CUDA device is visible; use harness.device=auto or cpu")
        if not cuda or cfg.harness.device == "cpu":
            validate_cpu_job(cfg, ov)  # as a CPU-only job runs it: its families' cpu: blocks applied
        else:
            validate_run(cfg)
        if planning:
            continue
        from bench.core.store import MANIFEST, check_writable_dir

        root = check_writable_dir(cfg.run.root, "run.root")
        if typed_id:
            target = root / str(cfg.run.id)
            held = [target / MANIFEST] if not sweep else list(target.glob(f"*/{MANIFEST}"))
            if any(p.exists() for p in held):
                raise UserError(f"run.id={cfg.run.id}: {target} already holds a run; choose another run.id (nothing "
                                "was written)")
    GlobalHydra.instance().clear()


def validate_cpu_job(cfg, overrides: list[str]) -> None:
    """Validate the config a CPU-only job runs (the families' cpu: blocks applied, what the user typed kept), once;
    a bad value that came from a cpu: block is named by its own key (``interference.cpu.hit_tokens``)."""
    import re

    from bench.core.config import apply_cpu_overrides

    filled = apply_cpu_overrides(cfg, keys_of(overrides))
    try:
        validate_run(cfg)
    except UserError as e:
        m = re.match(r"([A-Za-z_]+)\.([A-Za-z_]+)=", str(e))
        if m and f"{m.group(1)}.{m.group(2)}" in filled:
            raise UserError(f"{m.group(1)}.cpu.{m.group(2)}" + str(e)[m.end(2):]) from None
        raise


# On a machine without a GPU, a run that names no model and no suite measures the tiny preset with the quick suite:
# the default llama3_8b layers do not fit harness.cpu_max_bytes (no prefill/decode costs, so no verdict) and the
# full suite takes ~9 minutes on 2 cores; these reach a (CPU rehearsal) verdict in about 2 minutes.
CPU_DEFAULT_OVERRIDES = ("model=tiny", "suite=quick")


def cpu_defaults(overrides: list[str], force: bool = False) -> list[str]:
    """The presets a CPU-only run gets for the groups the user did not name (none when CUDA is visible and not
    refused with harness.device=cpu; always with ``force``: jobs bound for CPU nodes)."""
    keys = keys_of(overrides)
    forced_cpu = force or any(o.replace(" ", "") == "harness.device=cpu" for o in overrides)
    if not forced_cpu:
        import torch

        if torch.cuda.is_available():
            return []
    return [d for d in CPU_DEFAULT_OVERRIDES if key_of(d) not in keys]
