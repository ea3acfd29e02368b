"""tierbench: GPU memory-hierarchy microbenchmarks for LLM inference with KV-cache reuse."""
__version__ = "0.1.0"


def conf_dir():
    """conf/ of a source checkout (editable install), else the copy shipped inside the package (no heavy imports:
    `bench list` and `bench --help` use it)."""
    from pathlib import Path

    here = Path(__file__).resolve().parent
    for cand in (here.parent / "conf", here / "_conf"):
        if (cand / "config.yaml").exists():
            return cand
    raise RuntimeError(f"tierbench config directory not found next to {here}")


def kernels_dir():
    from pathlib import Path

    here = Path(__file__).resolve().parent
    for cand in (here.parent / "kernels", here / "_kernels"):
        if cand.is_dir():
            return cand
    raise RuntimeError(f"tierbench kernels directory not found next to {here}")
