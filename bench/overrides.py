"""Pre-flight check of `run` overrides: compose the config for each value of each sweep axis and validate it,
so a typo costs one clear line (exit 2) before Hydra starts jobs, not a stack trace in the middle of a sweep."""
from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from bench.config import conf_dir, validate
from bench.errors import UserError, allowed

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


def variants(overrides: list[str]) -> list[list[str]]:
    """One override list per sweep value (others at their first value): enough to validate every value."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        raise UserError(f"cannot parse override: {str(e).splitlines()[0]}") from None
    base, sweeps = [], []
    for o in parsed:
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
    """Compose ``config_name`` with ``overrides``; any composition error becomes one UserError line."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        try:
            return compose(config_name=config_name, overrides=overrides)
        except MissingConfigException as e:
            raise _missing(e, overrides) from None
        except (ConfigCompositionException, OmegaConfBaseException) as e:
            cause = e.__cause__ or e
            msg = " ".join(str(cause).split("\n")[0].split())
            raise UserError(f"bad override ({' '.join(overrides)}): {msg}") from None


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
            if name == "slurm":
                try:
                    import hydra_plugins.hydra_submitit_launcher  # noqa: F401
                except ImportError:
                    raise UserError("hydra/launcher=slurm needs hydra-submitit-launcher: "
                                    "pip install -e '.[slurm]'") from None


def precheck(argv: list[str]) -> None:
    flags, overrides = split_args(argv)
    check_launcher(overrides)
    for ov in variants(overrides):
        cfg = compose_checked(ov)
        validate(cfg)
    GlobalHydra.instance().clear()
