// Warm tier read on demand: token rows gathered from a pool that lives in pinned host memory (or a peer GPU's HBM),
// read directly by the GPU through UVA (no staging copy), and keys scored where they lie.
//
// row_gather: n rows of words_per_row 16-byte words; row src_ids[r] of the pool lands at row dst_ids[r] of dst.
// A grid-stride loop over every 16-byte word of the selection keeps every SM busy whatever the row size; consecutive
// threads read consecutive words of a row (a 64-byte row is 4 threads, a 64 KiB row 4096), so each row is read in
// full-width requests. Rows, pool base and dst must be 16-byte aligned (checked by the Python side).
//
// score_keys_*: scores[i] = sum_j K[i, j] * q[j] over n keys of dim d, float32 accumulation. One warp per key: lane l
// reads words l, l + 32, ... of the key (each word 8 bf16 or 4 float32 values), so a warp reads one key's bytes
// contiguously; the lanes' partial sums are added with a butterfly of warp shuffles.
//
// The address and arithmetic of each word are __host__ __device__ functions: tests compile them with nvcc into a
// host program and check them against a reference gather and dot product on the CPU.

typedef unsigned long long u64;

// Word w of the selection: the pool word it reads and the dst word it writes.
__host__ __device__ __forceinline__ void row_word(const long long* src_ids, const long long* dst_ids,
                                                  long long words_per_row, long long w, long long* src_word,
                                                  long long* dst_word)
{
    const long long r = w / words_per_row;
    const long long off = w - r * words_per_row;
    *src_word = src_ids[r] * words_per_row + off;
    *dst_word = dst_ids[r] * words_per_row + off;
}

extern "C" __global__ void row_gather(const uint4* __restrict__ pool, const long long* __restrict__ src_ids,
                                      const long long* __restrict__ dst_ids, long long n, long long words_per_row,
                                      uint4* __restrict__ dst)
{
    const long long total = n * words_per_row;
    for (long long w = (long long)blockIdx.x * blockDim.x + threadIdx.x; w < total;
         w += (long long)gridDim.x * blockDim.x) {
        long long s, d;
        row_word(src_ids, dst_ids, words_per_row, w, &s, &d);
        dst[d] = pool[s];
    }
}

// bf16 -> float: the bf16 bits are the high half of the float's (no header needed under NVRTC).
__host__ __device__ __forceinline__ float bf16_bits_to_float(unsigned int bits16)
{
    union { unsigned int u; float f; } v;
    v.u = bits16 << 16;
    return v.f;
}

// Dot product of one 16-byte word of a key (8 bf16 values) with the query's matching 8 floats.
__host__ __device__ __forceinline__ float dot_word_bf16(uint4 word, const float* q8)
{
    const unsigned int p[4] = {word.x, word.y, word.z, word.w};
    float acc = 0.0f;
    for (int i = 0; i < 4; ++i) {
        acc += bf16_bits_to_float(p[i] & 0xffffu) * q8[2 * i];
        acc += bf16_bits_to_float(p[i] >> 16) * q8[2 * i + 1];
    }
    return acc;
}

// Dot product of one 16-byte word of a key (4 float32 values) with the query's matching 4 floats.
__host__ __device__ __forceinline__ float dot_word_f32(uint4 word, const float* q4)
{
    union { unsigned int u; float f; } a, b, c, d;
    a.u = word.x; b.u = word.y; c.u = word.z; d.u = word.w;
    return a.f * q4[0] + b.f * q4[1] + c.f * q4[2] + d.f * q4[3];
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// One warp per key (the loop's i is the same for the 32 lanes of a warp, so the shuffles see every lane).
template <bool BF16>
__device__ __forceinline__ void score_keys(const uint4* __restrict__ keys, const float* __restrict__ q, long long n,
                                           long long words_per_key, float* __restrict__ scores)
{
    const int lane = threadIdx.x & 31;
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    for (long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; i < n; i += warps) {
        float acc = 0.0f;
        for (long long j = lane; j < words_per_key; j += 32) {
            const uint4 word = keys[i * words_per_key + j];
            acc += BF16 ? dot_word_bf16(word, q + 8 * j) : dot_word_f32(word, q + 4 * j);
        }
        acc = warp_sum(acc);
        if (lane == 0)
            scores[i] = acc;
    }
}

extern "C" __global__ void score_keys_bf16(const uint4* __restrict__ keys, const float* __restrict__ q,
                                           long long n, long long words_per_key, float* __restrict__ scores)
{
    score_keys<true>(keys, q, n, words_per_key, scores);
}

extern "C" __global__ void score_keys_f32(const uint4* __restrict__ keys, const float* __restrict__ q,
                                          long long n, long long words_per_key, float* __restrict__ scores)
{
    score_keys<false>(keys, q, n, words_per_key, scores);
}
