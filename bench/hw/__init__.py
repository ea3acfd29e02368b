"""Hardware helpers: the device a run measures (device), NVML clocks and throttling (nvml), host buffers (hostmem),
the hardware fingerprint (fingerprint) and the CuPy-loaded kernels (cuda_kernels)."""
