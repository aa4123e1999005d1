// dense_mm.cu — dense weight x (optionally gathered) tokens with mma.sync, the baseline of the family.
//
//   out[p, r] = sum_k W[r, k] · x[token_idx[p], k]     (token_idx NULL: x[p]; SENTINEL (-1): zero row)
//
// Same structure as kernels/spmm.cu and kernels/ssmm.cu so the lab can compare them line by line:
// BLOCK_M weight rows x BLOCK_N tokens per block, WARPS_M x WARPS_N warps of FRAGS_M x FRAGS_N m16n8
// fragments, STAGES-deep cp.async (zero-fill tails) into XOR-swizzled shared memory, ldmatrix.x4,
// fp32 accumulation, coalesced stores through a shared tile, split-K with an fp32 workspace. The only
// differences: A is the dense weight [rows, cols] (32 stored halves per row per k-step instead of 16,
// no metadata) and each BLOCK_K = 32 step issues two mma.sync.aligned.m16n8k16.row.col.f32 per fragment.
//
//   w   u16 [rows, ldw]     dense weight (fp16/bf16 bit patterns), row-major
//   x   u16 [x_rows, ldx]   activations, row-major
// Tails: any rows, tokens, and any cols that is a multiple of 4 (the same contract as the sparse kernels).
// Tile constants arrive as -D defines from samoyeds_lab/tiles.py (same defaults in
// kernels/sptc_common.cuh, which holds the helpers the three families share).

#include "sptc_common.cuh"  // tile defaults, cp.async / ldmatrix / mma helpers, fp16/bf16 conversions

#define KC_STEP MMA_K                               // stored halves per row per k-step (dense)
#define A_STAGE_BYTES (BLOCK_M * KC_STEP * 2)       // [BLOCK_M][32] halves
#define M_STAGE_BYTES 0                             // no metadata
#define STAGE_BYTES (A_STAGE_BYTES + B_STAGE_BYTES + M_STAGE_BYTES)

static_assert((BLOCK_M * 4) % THREADS == 0 && (BLOCK_N * 4) % THREADS == 0, "copy loops");

// Swizzled byte offsets inside a stage (16-byte chunks XOR-permuted so ldmatrix is conflict-free).
__device__ __forceinline__ int a_off(int row, int chunk) { return row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4); }

// ------------------------------------------------------------------------------------------ main kernel
template <bool BF16>
__device__ __forceinline__ void dense_body(const u16* __restrict__ w, int ldw, const u16* __restrict__ x, int ldx,
                                           int x_rows, const int* __restrict__ token_idx, int tokens, int rows,
                                           int cols, int steps_per_split, float* __restrict__ workspace,
                                           u16* __restrict__ out, int ldo) {
    extern __shared__ __align__(16) unsigned char smem[];
    int* tok_s = (int*)(smem + STAGES * STAGE_BYTES);
    float* acc_s = (float*)(smem + STAGES * STAGE_BYTES + BLOCK_N * 4);

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;  // same order as reference/tiled.py
    const int bm = blockIdx.x;
    const i64 p0 = (i64)blockIdx.y * BLOCK_N;
    const int cnt = min(BLOCK_N, (int)(tokens - p0));

    const int ksteps = (cols + MMA_K - 1) / MMA_K;
    const int k_begin = blockIdx.z * steps_per_split;
    const int k_end = min(ksteps, k_begin + steps_per_split);

    const int c0 = bm * BLOCK_M;
    const int r_tile = BLOCK_M;
    const int r0 = c0;
    const int acc_ld = r_tile + ACC_PAD;

    // Token ids → shared memory once (the gather is fused into the B loads); SENTINEL reads zeros.
    for (int n = tid; n < BLOCK_N; n += THREADS) {
        int id = SENTINEL;
        if (n < cnt) {
            id = token_idx ? token_idx[p0 + n] : (int)(p0 + n);
            if (id < 0 || id >= x_rows) id = SENTINEL;
        }
        tok_s[n] = id;
    }
    __syncthreads();  // every acc_s entry the epilogue reads is written by the flush below

    const bool a_vec = (ldw % 8 == 0) && (((unsigned long long)w & 15ull) == 0);
    const bool x_vec = (ldx % 8 == 0) && (((unsigned long long)x & 15ull) == 0);
    const u32 smem_base = smem_u32(smem);

    auto load_stage = [&](int stage, int ks) {
        const u32 sa = smem_base + stage * STAGE_BYTES;
        const u32 sb = sa + A_STAGE_BYTES;
        // A: BLOCK_M weight rows x 4 chunks of 8 halves
        for (int i = tid; i < BLOCK_M * 4; i += THREADS) {
            const int row = i >> 2, chunk = i & 3;
            const int c = c0 + row;
            const int k0 = ks * KC_STEP + chunk * 8;
            const int valid = (c < rows) ? min(8, max(0, cols - k0)) : 0;
            const u32 dst = sa + a_off(row, chunk);
            const u16* src = w + (i64)(valid ? c : 0) * ldw + (valid ? k0 : 0);
            if (a_vec) {
                cp_async16(dst, valid ? (const void*)src : (const void*)w, valid * 2);
            } else {
                for (int h = 0; h < 8; ++h) st_shared_u16(dst + 2 * h, h < valid ? src[h] : (u16)0);
            }
        }
        // B: BLOCK_N gathered token rows x 4 chunks of 8 halves (dense K)
        for (int i = tid; i < BLOCK_N * 4; i += THREADS) {
            const int n = i >> 2, chunk = i & 3;
            const int id = tok_s[n];
            const int k0 = ks * MMA_K + chunk * 8;
            const int valid = (id >= 0) ? min(8, max(0, cols - k0)) : 0;
            const u32 dst = sb + b_off(n, chunk);
            const u16* src = x + (i64)(valid ? id : 0) * ldx + (valid ? k0 : 0);
            if (x_vec) {
                cp_async16(dst, valid ? (const void*)src : (const void*)x, valid * 2);
            } else {
                for (int h = 0; h < 8; ++h) st_shared_u16(dst + 2 * h, h < valid ? src[h] : (u16)0);
            }
        }
    };

    float acc[FRAGS_M][FRAGS_N][4];
#pragma unroll
    for (int i = 0; i < FRAGS_M; ++i)
#pragma unroll
        for (int j = 0; j < FRAGS_N; ++j)
#pragma unroll
            for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.0f;

    // Prologue: stages 0 .. STAGES-2 in flight.
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (k_begin + s < k_end) load_stage(s, k_begin + s);
        cp_async_commit();
    }

    const int g = lane >> 2, t = lane & 3;
    for (int ks = k_begin; ks < k_end; ++ks) {
        const int it = ks - k_begin;
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // stage `it` landed for everyone; stage it-1 is free again
        {
            const int nk = ks + STAGES - 1;
            if (nk < k_end) load_stage((it + STAGES - 1) % STAGES, nk);
            cp_async_commit();
        }
        const int stage = it % STAGES;
        const u32 sa = smem_base + stage * STAGE_BYTES;
        const u32 sb = sa + A_STAGE_BYTES;

        u32 b[FRAGS_N][4];
#pragma unroll
        for (int j = 0; j < FRAGS_N; ++j) {
            const int tok = wn * WARP_TILE_N + j * MMA_N + (lane & 7);
            ldmatrix_x4(b[j], sb + b_off(tok, lane >> 3));
        }
#pragma unroll
        for (int kk = 0; kk < 2; ++kk) {  // two m16n8k16 steps per BLOCK_K = 32
            u32 a[FRAGS_M][4];
#pragma unroll
            for (int i = 0; i < FRAGS_M; ++i) {
                const int row = wm * WARP_TILE_M + i * MMA_M + (lane & 15);
                ldmatrix_x4(a[i], sa + a_off(row, 2 * kk + (lane >> 4)));
            }
#pragma unroll
            for (int i = 0; i < FRAGS_M; ++i)
#pragma unroll
                for (int j = 0; j < FRAGS_N; ++j)
                    mma_16816<BF16>(acc[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b[j][2 * kk], b[j][2 * kk + 1]);
        }
    }
    // End of this split's K range: accumulators → shared tile (coalesced stores below).
#pragma unroll
    for (int i = 0; i < FRAGS_M; ++i) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int c = c0 + wm * WARP_TILE_M + i * MMA_M + g + 8 * half;
            if (c >= rows) continue;
            float* dst = acc_s + (c - r0);
#pragma unroll
            for (int j = 0; j < FRAGS_N; ++j) {
                const int n = wn * WARP_TILE_N + j * MMA_N + 2 * t;
                dst[n * acc_ld] = acc[i][j][2 * half];
                dst[(n + 1) * acc_ld] = acc[i][j][2 * half + 1];
            }
        }
    }
    cp_async_wait<0>();
    __syncthreads();

    // Epilogue: rows [r0, r0 + r_tile) x positions [p0, p0 + cnt), consecutive threads on consecutive rows.
    const int r_valid = min(r_tile, rows - r0);
    if (r_valid <= 0) return;
    for (int i = tid; i < cnt * r_tile; i += THREADS) {
        const int n = i / r_tile, rl = i - n * r_tile;
        if (rl >= r_valid) continue;
        const float v = acc_s[n * acc_ld + rl];
        if (gridDim.z > 1) {
            workspace[((i64)blockIdx.z * tokens + p0 + n) * rows + r0 + rl] = v;
        } else {
            out[(p0 + n) * ldo + r0 + rl] = from_float<BF16>(v);
        }
    }
}

template <bool BF16>
__device__ __forceinline__ void finalize_body(const float* __restrict__ workspace, int splits, i64 tokens,
                                              int rows, u16* __restrict__ out, int ldo) {
    const i64 total = tokens * rows;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
        float v = 0.0f;
        for (int z = 0; z < splits; ++z) v += workspace[z * total + i];
        out[(i / rows) * ldo + i % rows] = from_float<BF16>(v);
    }
}

// ------------------------------------------------------------------------------------------ entry points
#define DENSE_ENTRY(NAME, BF16)                                                                             \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                  \
        NAME(const u16* w, int ldw, const u16* x, int ldx, int x_rows, const int* token_idx, int tokens,  \
             int rows, int cols, int steps_per_split, float* workspace, u16* out, int ldo) {              \
        dense_body<BF16>(w, ldw, x, ldx, x_rows, token_idx, tokens, rows, cols, steps_per_split,          \
                         workspace, out, ldo);                                                            \
    }                                                                                                       \
    extern "C" __global__ void NAME##_finalize(const float* workspace, int splits, long long tokens,       \
                                               int rows, u16* out, int ldo) {                              \
        finalize_body<BF16>(workspace, splits, tokens, rows, out, ldo);                                    \
    }

DENSE_ENTRY(dense_mm_f16, false)
DENSE_ENTRY(dense_mm_bf16, true)
