// spmm.cu — 2:4 structured-sparse weight x dense activations on Sparse Tensor Cores.
//
//   out[p, r] = sum_k W[r, k] · x[p, k]            (y = x · Wᵀ, fp32 accumulate, fp16/bf16 out)
//
// W is a 2:4 weight (samoyeds_lab.formats.NMWeight with n:m = 2:4), read exactly as the formats write it:
//   values    u16  [rows, cols/2]                       kept values (fp16/bf16 bit patterns)
//   meta      u32  [ceil(rows/16), ceil(cols/32), 16]   formats.sptc.mma_metadata(W.sptc_metadata()):
//                                                       word 2g+h is the `e` register of lane 4g+h
//   x         u16  [tokens, ldx]                        dense activations, row-major
// This is the lesson kernel of the family: one thread block computes BLOCK_M weight rows x BLOCK_N
// tokens; 4 warps (WARPS_M x WARPS_N) each own FRAGS_M x FRAGS_N m16n8 fragments and issue
// mma.sp(::ordered_metadata).sync.aligned.m16n8k32.row.col.f32 with W in A and x rows in B (Yᵀ = W·Xᵀ).
// Loads: STAGES-deep cp.async (16 bytes, zero-fill on K/M/N tails) into XOR-swizzled shared memory,
// ldmatrix.x4 for A and B. The fp32 result goes through a shared-memory tile so that the stores of
// out[p, r] are coalesced along r. Split-K (gridDim.z > 1) writes fp32 partials into
// `workspace [splits, tokens, rows]`, summed by spmm_*_finalize. kernels/ssmm.cu adds the token
// gather, the Samoyeds row selection and the fused epilogues to this same loop.
//
// Tails: any rows, any tokens (0 and 1 included), any cols that is a multiple of 4. Tile constants
// arrive as -D defines from samoyeds_lab/tiles.py (the same defaults in
// kernels/sptc_common.cuh, which holds the helpers the three families share).

#include "sptc_common.cuh"  // tile defaults, cp.async / ldmatrix / mma.sp helpers, fp16/bf16 conversions

#define KC_STEP (MMA_K / 2)                         // stored (compressed) halves per row per k-step
#define A_STAGE_BYTES (BLOCK_M * KC_STEP * 2)       // [BLOCK_M][16] halves
#define M_STAGE_BYTES ((BLOCK_M / MMA_M) * 16 * 4)  // [BLOCK_M/16 tiles][16 words]
#define STAGE_BYTES (A_STAGE_BYTES + B_STAGE_BYTES + M_STAGE_BYTES)

static_assert((BLOCK_M * 2) % THREADS == 0 && (BLOCK_N * 4) % THREADS == 0, "copy loops");
static_assert(M_STAGE_BYTES / 16 <= THREADS, "one metadata chunk per thread");

// Swizzled byte offsets inside a stage (16-byte chunks XOR-permuted so ldmatrix is conflict-free).
__device__ __forceinline__ int a_off(int row, int chunk) { return row * 32 + ((chunk ^ ((row >> 2) & 1)) << 4); }

// ------------------------------------------------------------------------------------------ main kernel
template <bool BF16>
__device__ __forceinline__ void spmm_body(const u16* __restrict__ values, const u32* __restrict__ meta,
                                          const u16* __restrict__ x, int ldx, int tokens, int rows, int cols,
                                          int steps_per_split, float* __restrict__ workspace,
                                          u16* __restrict__ out, int ldo) {
    extern __shared__ __align__(16) unsigned char smem[];
    int* tok_s = (int*)(smem + STAGES * STAGE_BYTES);
    float* acc_s = (float*)(smem + STAGES * STAGE_BYTES + BLOCK_N * 4);

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;  // same order as reference/tiled.py
    const int bm = blockIdx.x;
    const i64 p0 = (i64)blockIdx.y * BLOCK_N;
    const int cnt = min(BLOCK_N, (int)(tokens - p0));

    const int kc = cols / 2;  // stored halves per row
    const int ksteps = (cols + MMA_K - 1) / MMA_K;
    const int crows = rows;  // 2:4: every weight row is stored
    const int mtiles = (crows + MMA_M - 1) / MMA_M;
    const int k_begin = blockIdx.z * steps_per_split;
    const int k_end = min(ksteps, k_begin + steps_per_split);

    const int c0 = bm * BLOCK_M;
    const int r_tile = BLOCK_M;
    const int r0 = c0;
    const int acc_ld = r_tile + ACC_PAD;

    // Token rows of this tile (tokens past the end read zero rows).
    for (int n = tid; n < BLOCK_N; n += THREADS) tok_s[n] = n < cnt ? (int)(p0 + n) : SENTINEL;
    __syncthreads();  // every acc_s entry the epilogue reads is written by the flush below

    const bool a_vec = (kc % 8 == 0) && (((unsigned long long)values & 15ull) == 0);
    const bool x_vec = (ldx % 8 == 0) && (((unsigned long long)x & 15ull) == 0);
    const u32 smem_base = smem_u32(smem);

    auto load_stage = [&](int stage, int ks) {
        const u32 sa = smem_base + stage * STAGE_BYTES;
        const u32 sb = sa + A_STAGE_BYTES;
        const u32 sm = sb + B_STAGE_BYTES;
        // A: BLOCK_M rows x 2 chunks of 8 stored halves
        for (int i = tid; i < BLOCK_M * 2; i += THREADS) {
            const int row = i >> 1, chunk = i & 1;
            const int c = c0 + row;
            const int k0 = ks * KC_STEP + chunk * 8;
            int valid = (c < crows) ? min(8, max(0, kc - k0)) : 0;
            const u32 dst = sa + a_off(row, chunk);
            const u16* src = values + (i64)(valid ? c : 0) * kc + (valid ? k0 : 0);
            if (a_vec) {
                cp_async16(dst, valid ? (const void*)src : (const void*)values, valid * 2);
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
        // Metadata: BLOCK_M/16 tiles x 16 words (64 B = 4 chunks each); tiles past the end are padding.
        if (tid < M_STAGE_BYTES / 16) {
            const int t = tid >> 2, chunk = tid & 3;
            const int mt = c0 / MMA_M + t;
            const u32 dst = sm + tid * 16;
            if (mt < mtiles) {
                cp_async16(dst, meta + ((i64)mt * ksteps + ks) * 16 + chunk * 4, 16);
            } else {
                for (int w = 0; w < 4; ++w) st_shared_u32(dst + 4 * w, PAD_WORD);
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
        const u32* sm = (const u32*)(smem + stage * STAGE_BYTES + A_STAGE_BYTES + B_STAGE_BYTES);

        u32 a[FRAGS_M][4], b[FRAGS_N][4], e[FRAGS_M];
#pragma unroll
        for (int i = 0; i < FRAGS_M; ++i) {
            const int row = wm * WARP_TILE_M + i * MMA_M + (lane & 15);
            ldmatrix_x4(a[i], sa + a_off(row, lane >> 4));
            // lane 4g+h (h = lane&1 for the lanes selector 0 reads) takes word 2g+h of its tile
            e[i] = sm[(wm * FRAGS_M + i) * 16 + 2 * g + (lane & 1)];
        }
#pragma unroll
        for (int j = 0; j < FRAGS_N; ++j) {
            const int tok = wn * WARP_TILE_N + j * MMA_N + (lane & 7);
            ldmatrix_x4(b[j], sb + b_off(tok, lane >> 3));
        }
#pragma unroll
        for (int i = 0; i < FRAGS_M; ++i)
#pragma unroll
            for (int j = 0; j < FRAGS_N; ++j) mma_sp_16832<BF16>(acc[i][j], a[i], b[j], e[i]);
    }
    // End of this split's K range: accumulators → shared tile (coalesced stores below).
#pragma unroll
    for (int i = 0; i < FRAGS_M; ++i) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int c = c0 + wm * WARP_TILE_M + i * MMA_M + g + 8 * half;
            if (c >= crows) continue;
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
#define SPMM_ENTRY(NAME, BF16)                                                                              \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                  \
        NAME(const u16* values, const u32* meta, const u16* x, int ldx, int tokens, int rows, int cols,    \
             int steps_per_split, float* workspace, u16* out, int ldo) {                                  \
        spmm_body<BF16>(values, meta, x, ldx, tokens, rows, cols, steps_per_split, workspace, out, ldo);  \
    }                                                                                                       \
    extern "C" __global__ void NAME##_finalize(const float* workspace, int splits, long long tokens,       \
                                               int rows, u16* out, int ldo) {                              \
        finalize_body<BF16>(workspace, splits, tokens, rows, out, ldo);                                    \
    }

SPMM_ENTRY(spmm_f16, false)
SPMM_ENTRY(spmm_bf16, true)
