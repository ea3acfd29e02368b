// Paged KV-cache block gather/scatter between a paged pool (GPU) and a block-major buffer that may live in
// pinned host memory, read/written directly through UVA (no staging copy).
//
// A pool is n_src separate tensors (layer-major, as vLLM: one per layer and per K/V) or one tensor (block-major,
// as LMCache chunks: n_src = 1). Chunk (b, s) = block block_ids[b] of source s: chunk_bytes contiguous bytes at
// src_ptrs[s] + block_ids[b] * block_stride. The packed side holds chunks in order [n_blocks][n_src][chunk].
//
// 16-byte accesses (uint4): chunk_bytes, block_stride and every base pointer must be multiples of 16 (checked by
// the Python side). A grid-stride loop over all 16-byte words keeps every SM busy whatever the chunk size, and
// consecutive threads touch consecutive words, so PCIe sees full 128-byte+ write bursts.

typedef unsigned long long u64;

// Word w of the packed side belongs to chunk (b, s); returns the address of that chunk in the pool and sets *off
// to the word's offset inside the chunk.
__device__ __forceinline__ u64 chunk_base(const u64* __restrict__ ptrs, int n_src, const long long* __restrict__ ids,
                                          long long words, long long block_stride, long long w, long long* off)
{
    const long long chunk = w / words;
    *off = w - chunk * words;
    const long long b = chunk / n_src;
    const int s = (int)(chunk - b * n_src);
    return ptrs[s] + (u64)(ids[b] * block_stride);
}

extern "C" __global__ void kv_gather(const u64* __restrict__ src_ptrs, int n_src,
                                     const long long* __restrict__ block_ids, long long n_blocks,
                                     long long chunk_bytes, long long block_stride,
                                     uint4* __restrict__ packed)
{
    const long long words = chunk_bytes >> 4;
    const long long total = n_blocks * (long long)n_src * words;
    for (long long w = (long long)blockIdx.x * blockDim.x + threadIdx.x; w < total;
         w += (long long)gridDim.x * blockDim.x) {
        long long off;
        const uint4* src = reinterpret_cast<const uint4*>(
            chunk_base(src_ptrs, n_src, block_ids, words, block_stride, w, &off));
        packed[w] = __ldg(src + off);
    }
}

extern "C" __global__ void kv_scatter(const u64* __restrict__ dst_ptrs, int n_src,
                                      const long long* __restrict__ block_ids, long long n_blocks,
                                      long long chunk_bytes, long long block_stride,
                                      const uint4* __restrict__ packed)
{
    const long long words = chunk_bytes >> 4;
    const long long total = n_blocks * (long long)n_src * words;
    for (long long w = (long long)blockIdx.x * blockDim.x + threadIdx.x; w < total;
         w += (long long)gridDim.x * blockDim.x) {
        long long off;
        uint4* dst = reinterpret_cast<uint4*>(chunk_base(dst_ptrs, n_src, block_ids, words, block_stride, w, &off));
        dst[off] = packed[w];
    }
}
