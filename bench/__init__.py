"""tierbench: GPU memory-hierarchy microbenchmarks for LLM inference with KV-cache reuse."""
__version__ = "0.1.0"
