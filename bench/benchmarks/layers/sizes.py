"""Sizing rules the layers benchmarks and their cost model share: which attention kernels ``layers.attention=best``
chooses among, and the shapes they are timed at."""

# candidates of layers.attention=best: a prefill kernel must run no-context and after-context prefills alike (auto
# would mix torch's picks: cuDNN without context, FlashAttention-2 through CausalBias after it); decode takes any
CANDIDATES = {"cuda": {"prefill": ("cudnn", "flash", "efficient"), "decode": ("cudnn", "flash", "efficient", "auto")},
              "cpu": {"prefill": ("flash", "math"), "decode": ("flash", "math")}}
# the attention shapes the candidates are timed at (prefill: new tokens, cached tokens; decode: batch, context)
CALIBRATION = {"cuda": {"prefill": (1024, 4096), "decode": (16, 4096)},
               "cpu": {"prefill": (64, 256), "decode": (4, 512)}}
