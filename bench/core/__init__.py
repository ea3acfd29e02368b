"""The suite's core: config schema and checks, the benchmark registry, the results store, errors, job identity."""
