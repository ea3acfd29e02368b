"""The shape of an LLM's work: attention kernels as serving stacks run them (bench.llm.attention)."""
