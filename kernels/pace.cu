// Holds a stream for a wall-clock duration, read from the GPU's %globaltimer (ns), not from SM cycles: the SM
// clock drops under load (power, thermal), so a cycle count calibrated on an idle GPU runs long under compute.
// Used to pace emulated tier loads (one thread; the stream waits, the SMs stay free for other streams).

extern "C" __global__ void hold_ns(unsigned long long ns)
{
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < ns);
}
