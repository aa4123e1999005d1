// ssmm_decode.cu — the decode variant of SSMM (few tokens per expert: 1–16 per tile).
//
//   out[p, r] = epilogue( sum_k W[r, k] · x[token_idx[p], k] )     same operation and epilogues as ssmm.cu
//
// What differs from ssmm.cu (built for the bandwidth-bound decode case, see samoyeds_lab.bench.ssmm_model):
//   * DEC_BLOCK_N (8 or 16) tokens per tile; the four warps all split M (DEC_BLOCK_M / 4 rows each), so a
//     warp issues DEC_BLOCK_M/64 x DEC_BLOCK_N/8 mma.sp m16n8k32 per k-step;
//   * a stage is DEC_KSTEPS k-steps (DEC_KSTEPS · 32 of K), DEC_STAGES deep: with the model's defaults
//     (128 K per stage, 4–6 stages) ≥ 24 KB of weight are in flight per SM;
//   * the weight is PRE-TILED on the host (samoyeds_lab.reference.decode_replay.pretile): for every (expert,
//     row block, k-step) one DEC_TILE_BYTES tile holding exactly the shared-memory image of that k-step —
//     values in the swizzled ldmatrix layout (a_off below), the 16 metadata words of each 16-row tile, then
//     the row_index bytes of the window the k-step belongs to. A stage is DEC_KSTEPS consecutive tiles, one
//     contiguous burst of 16-byte cp.async chunks copied straight to shared memory (the row_index chunks
//     only for the k-step that ends a window or the split: row_index travels with its stage, no blocking
//     load at the window boundary); with DEC_BULK=1 on sm_90 the burst is one cp.async.bulk on an mbarrier;
//   * window accumulators in REGISTERS, no shared fp32 flush tile: per fragment element a working
//     accumulator plus one per candidate row of its group (DEC_SEL_M of them). At the end of a window
//     (and of the split) the working accumulator is added to the candidate row_index[w, c] picks and
//     reset; the candidates are dense output rows (c / sel_n) · sel_m + q. With sel_n > 1 the sel_n
//     compressed rows of a group (adjacent lanes g) are summed with a butterfly of shuffles at the end;
//   * split-K (gridDim.z) from the SM count (samoyeds_lab.kernels.decode), no finalize launch: every split
//     writes its fp32 partials to `workspace [splits, positions, rows]`, fences, and bumps a per-(row block,
//     token tile) arrival counter; the last CTA to arrive sums the partials in split order 0, 1, ... (a
//     fixed order: results do not depend on which CTA came last), applies the epilogue and resets the
//     counter to 0, so the same counters serve the next launch without a memset.
//
// Epilogues (runtime `epilogue`): 0 plain, 1 SiLU·up, 2 scatter-add (paired red.global.add of f16x2 /
// bf16x2 where two adjacent dense rows are one thread's; fp32 `out` takes atomicAdd).
//
// Compile-time parameters (-D, part of the compile cache key through the options): DEC_BLOCK_M, DEC_BLOCK_N,
// DEC_KSTEPS, DEC_STAGES, DEC_SEL_N, DEC_SEL_M, DEC_BULK. The split is a launch parameter (steps_per_split, a
// multiple of DEC_KSTEPS) chosen by the launcher. The CPU replay of this file's grid, stages, window swaps
// and split reduction is samoyeds_lab/reference/decode_replay.py (bit-exact against the reference).

#include "sptc_common.cuh"  // cp.async / ldmatrix / mma.sp helpers, fp16/bf16 conversions, b_off

#ifndef DEC_BLOCK_M
#define DEC_BLOCK_M 128
#endif
#ifndef DEC_BLOCK_N
#define DEC_BLOCK_N 8
#endif
#ifndef DEC_KSTEPS
#define DEC_KSTEPS 4
#endif
#ifndef DEC_STAGES
#define DEC_STAGES 6
#endif
#ifndef DEC_SEL_N
#define DEC_SEL_N 1
#endif
#ifndef DEC_SEL_M
#define DEC_SEL_M 2
#endif
#ifndef DEC_BULK
#define DEC_BULK 0
#endif

// DEC_BULK=1 on sm_90+: the weight burst of a stage is ONE cp.async.bulk (thread 0, completion counted in
// bytes on the stage's mbarrier, row_index chunks included) instead of 16-byte cp.async chunks from every
// thread; the gathered tokens stay on cp.async. Other architectures ignore DEC_BULK.
#if DEC_BULK && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define DEC_USE_BULK 1
#else
#define DEC_USE_BULK 0
#endif

#define DEC_WARPS 4
#define DEC_THREADS (DEC_WARPS * WARP_SIZE)
#define DEC_WARP_M (DEC_BLOCK_M / DEC_WARPS)          // compressed rows per warp
#define DEC_FM (DEC_WARP_M / MMA_M)                    // m16 fragments per warp
#define DEC_FN (DEC_BLOCK_N / MMA_N)                   // n8 fragments per warp
#define DEC_A_BYTES (DEC_BLOCK_M * 32)                 // [BLOCK_M][16] stored halves, swizzled
#define DEC_META_BYTES ((DEC_BLOCK_M / MMA_M) * 64)    // 16 words per 16-row tile
#define DEC_RI_BYTES DEC_BLOCK_M                       // row_index of the k-step's window, one byte per row
#define DEC_TILE_BYTES (DEC_A_BYTES + DEC_META_BYTES + DEC_RI_BYTES)
#define DEC_TILE_CHUNKS (DEC_TILE_BYTES / 16)
#define DEC_RI_CHUNK0 ((DEC_A_BYTES + DEC_META_BYTES) / 16)
#define DEC_B_KSTEP_BYTES (DEC_BLOCK_N * 64)           // [BLOCK_N][32] halves (b_off layout)
#define DEC_STAGE_W (DEC_KSTEPS * DEC_TILE_BYTES)
#define DEC_STAGE_BYTES (DEC_STAGE_W + DEC_KSTEPS * DEC_B_KSTEP_BYTES)

static_assert(DEC_BLOCK_N == 8 || DEC_BLOCK_N == 16, "decode tiles hold 8 or 16 tokens");
static_assert(DEC_WARP_M % MMA_M == 0 && DEC_FM >= 1, "DEC_BLOCK_M: a multiple of 64");
static_assert(DEC_KSTEPS >= 1 && DEC_STAGES >= 2, "pipeline");
static_assert(DEC_TILE_BYTES % 16 == 0 && DEC_RI_BYTES % 16 == 0, "16-byte chunks");
static_assert(DEC_SEL_M >= 1 && DEC_SEL_N >= 1 && DEC_SEL_M >= DEC_SEL_N, "row selection n:m");
static_assert(DEC_SEL_N == 1 || DEC_SEL_N == 2 || DEC_SEL_N == 4 || DEC_SEL_N == 8, "sel_n: a power of two <= 8");

// Swizzled byte offset of 16-byte chunk `chunk` (0, 1) of compressed row `row` in an A image (as ssmm.cu).
__device__ __forceinline__ int dec_a_off(int row, int chunk) { return row * 32 + ((chunk ^ ((row >> 2) & 1)) << 4); }

#if DEC_USE_BULK
__device__ __forceinline__ void dec_mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void dec_mbar_expect_tx(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void dec_mbar_wait(u32 bar, u32 parity) {
    u32 done = 0;
    while (!done) {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done) : "r"(bar), "r"(parity) : "memory");
    }
}
__device__ __forceinline__ void dec_bulk_g2s(u32 dst, const void* src, u32 bytes, u32 bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
                 ::"r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}
#endif

__device__ __forceinline__ float ld_cg_f32(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];\n" : "=f"(v) : "l"(p));
    return v;
}

// 16-bit scatter-add: red_add_16 / red_add_16x2 of sptc_common.cuh.

struct DecEpilogue {
    int epilogue;            // 0 plain, 1 silu·up, 2 scatter-add
    void* out;               // [positions, ldo] (0, 1) or [out_rows, ldo] (2)
    int ldo;
    int out_f32;             // scatter-add into fp32
    const u16* up;           // epilogue 1
    const int* scatter_idx;  // epilogue 2 (NULL: the position)
    const float* scale;      // epilogue 2 (NULL: 1)
};

// Final value(s) of dense rows r (and r + 1 when `two`) of position p.
template <bool BF16>
__device__ __forceinline__ void dec_store(const DecEpilogue& ep, i64 p, int r, float v0, float v1, bool two) {
    if (ep.epilogue == 2) {
        const i64 dst = ep.scatter_idx ? (i64)ep.scatter_idx[p] : p;
        if (dst < 0) return;  // SENTINEL
        const float s = ep.scale ? ep.scale[p] : 1.0f;
        if (ep.out_f32) {
            float* o = (float*)ep.out + dst * ep.ldo + r;
            atomicAdd(o, s * v0);
            if (two) atomicAdd(o + 1, s * v1);
            return;
        }
        u16* o = (u16*)ep.out + dst * ep.ldo + r;
        if (two && ((((unsigned long long)o) & 3ull) == 0)) {
            red_add_16x2<BF16>(o, s * v0, s * v1);
        } else {
            red_add_16<BF16>(o, s * v0);
            if (two) red_add_16<BF16>(o + 1, s * v1);
        }
        return;
    }
    u16* o = (u16*)ep.out + p * ep.ldo + r;
    if (ep.epilogue == 1) {
        const u16* u = ep.up + p * ep.ldo + r;
        v0 = v0 / (1.0f + __expf(-v0)) * to_float<BF16>(u[0]);
        if (two) v1 = v1 / (1.0f + __expf(-v1)) * to_float<BF16>(u[1]);
    }
    o[0] = from_float<BF16>(v0);
    if (two) o[1] = from_float<BF16>(v1);
}

template <bool BF16>
__device__ __forceinline__ void ssmm_decode_body(
    const unsigned char* __restrict__ tiled, int has_ri, const u16* __restrict__ x, int ldx, int x_rows,
    const int* __restrict__ token_idx, const int* __restrict__ tile_expert, const int* __restrict__ tile_start,
    const int* __restrict__ tile_count, int rows, int crows, int cols, int vector, int steps_per_split,
    float* __restrict__ workspace, int* __restrict__ counters, i64 positions, const DecEpilogue& ep) {
    extern __shared__ __align__(16) unsigned char smem[];
    int* tok_s = (int*)(smem + DEC_STAGES * DEC_STAGE_BYTES);
    int* last_s = tok_s + DEC_BLOCK_N;
    // DEC_USE_BULK: one mbarrier per stage, 8-byte aligned, after the token ids and the flag
    const u32 bar0 = smem_u32(smem + DEC_STAGES * DEC_STAGE_BYTES + DEC_BLOCK_N * 4 + 16);

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int rb = blockIdx.x;
    const int expert = tile_expert[blockIdx.y];
    const i64 p0 = tile_start[blockIdx.y];
    const int cnt = tile_count[blockIdx.y];
    const int splits = gridDim.z;

    const int ksteps = (cols + MMA_K - 1) / MMA_K;
    const int mblocks = gridDim.x;
    const int window_steps = has_ri ? vector / MMA_K : 0x7fffffff;
    const int k_begin = blockIdx.z * steps_per_split;
    const int k_end = min(ksteps, k_begin + steps_per_split);
    const int c0 = rb * DEC_BLOCK_M;

    // this (expert, row block)'s tiles: [ksteps][DEC_TILE_BYTES]
    const unsigned char* wt = tiled + ((i64)expert * mblocks + rb) * ksteps * DEC_TILE_BYTES;

    for (int n = tid; n < DEC_BLOCK_N; n += DEC_THREADS) {
        int id = SENTINEL;
        if (n < cnt) {
            id = token_idx ? token_idx[p0 + n] : (int)(p0 + n);
            if (id < 0 || id >= x_rows) id = SENTINEL;
        }
        tok_s[n] = id;
    }
#if DEC_USE_BULK
    if (tid == 0) {
        for (int s = 0; s < DEC_STAGES; ++s) dec_mbar_init(bar0 + 8 * s, 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
#endif
    __syncthreads();

    const bool x_vec = (ldx % 8 == 0) && (((unsigned long long)x & 15ull) == 0);
    const u32 smem_base = smem_u32(smem);

    // A window ends at k-step ks (its row_index is needed then): the window's last k-step or the split's.
    auto swaps_at = [&](int ks) { return ((ks + 1) % window_steps == 0) || (ks + 1 == k_end); };

    auto load_stage = [&](int stage, int ks0) {
        const int nk = min(DEC_KSTEPS, k_end - ks0);
        const u32 sw = smem_base + stage * DEC_STAGE_BYTES;
        const u32 sb = sw + DEC_STAGE_W;
        // weight: nk consecutive tiles = one contiguous burst (row_index chunks only where a window ends)
        const unsigned char* src = wt + (i64)ks0 * DEC_TILE_BYTES;
#if DEC_USE_BULK
        if (tid == 0) {  // the whole burst in one copy; the stage's readers finished (barrier before this load)
            asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
            dec_mbar_expect_tx(bar0 + 8 * stage, (u32)(nk * DEC_TILE_BYTES));
            dec_bulk_g2s(sw, src, (u32)(nk * DEC_TILE_BYTES), bar0 + 8 * stage);
        }
#else
        for (int i = tid; i < nk * DEC_TILE_CHUNKS; i += DEC_THREADS) {
            const int kk = i / DEC_TILE_CHUNKS, ch = i - kk * DEC_TILE_CHUNKS;
            if (ch >= DEC_RI_CHUNK0 && !(has_ri && swaps_at(ks0 + kk))) continue;
            cp_async16(sw + i * 16, src + (i64)i * 16, 16);
        }
#endif
        // tokens: nk k-steps x BLOCK_N gathered rows x 4 chunks of 8 halves
        for (int i = tid; i < nk * DEC_BLOCK_N * 4; i += DEC_THREADS) {
            const int kk = i / (DEC_BLOCK_N * 4), r = i - kk * (DEC_BLOCK_N * 4);
            const int n = r >> 2, chunk = r & 3;
            const int id = tok_s[n];
            const int k0 = (ks0 + kk) * MMA_K + chunk * 8;
            const int valid = (id >= 0) ? min(8, max(0, cols - k0)) : 0;
            const u32 dst = sb + kk * DEC_B_KSTEP_BYTES + b_off(n, chunk);
            const u16* s = x + (i64)(valid ? id : 0) * ldx + (valid ? k0 : 0);
            if (x_vec) {
                cp_async16(dst, valid ? (const void*)s : (const void*)x, valid * 2);
            } else {
                for (int h = 0; h < 8; ++h) st_shared_u16(dst + 2 * h, h < valid ? s[h] : (u16)0);
            }
        }
    };

    float acc[DEC_FM][DEC_FN][4];
    float cand[DEC_FM][DEC_FN][4][DEC_SEL_M];
#pragma unroll
    for (int i = 0; i < DEC_FM; ++i)
#pragma unroll
        for (int j = 0; j < DEC_FN; ++j)
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                acc[i][j][q] = 0.0f;
#pragma unroll
                for (int s = 0; s < DEC_SEL_M; ++s) cand[i][j][q][s] = 0.0f;
            }

    const int nstages = (k_end - k_begin + DEC_KSTEPS - 1) / DEC_KSTEPS;
#pragma unroll
    for (int s = 0; s < DEC_STAGES - 1; ++s) {
        if (s < nstages) load_stage(s, k_begin + s * DEC_KSTEPS);
        cp_async_commit();
    }

    for (int it = 0; it < nstages; ++it) {
        cp_async_wait<DEC_STAGES - 2>();
#if DEC_USE_BULK
        dec_mbar_wait(bar0 + 8 * (it % DEC_STAGES), (u32)((it / DEC_STAGES) & 1));  // the stage's weight burst
#endif
        __syncthreads();  // stage `it` landed for everyone; stage it-1 is free again
        {
            const int ns = it + DEC_STAGES - 1;
            if (ns < nstages) load_stage(ns % DEC_STAGES, k_begin + ns * DEC_KSTEPS);
            cp_async_commit();
        }
        const int stage = it % DEC_STAGES;
        const int ks0 = k_begin + it * DEC_KSTEPS;
        const u32 sw = smem_base + stage * DEC_STAGE_BYTES;
        const u32 sb = sw + DEC_STAGE_W;
#pragma unroll
        for (int kk = 0; kk < DEC_KSTEPS; ++kk) {
            const int ks = ks0 + kk;
            if (ks >= k_end) break;
            const u32 sa = sw + kk * DEC_TILE_BYTES;
            const u32* sm = (const u32*)(smem + stage * DEC_STAGE_BYTES + kk * DEC_TILE_BYTES + DEC_A_BYTES);
            u32 a[DEC_FM][4], b[DEC_FN][4], e[DEC_FM];
#pragma unroll
            for (int i = 0; i < DEC_FM; ++i) {
                const int row = warp * DEC_WARP_M + i * MMA_M + (lane & 15);
                ldmatrix_x4(a[i], sa + dec_a_off(row, lane >> 4));
                e[i] = sm[(warp * DEC_FM + i) * 16 + 2 * g + (lane & 1)];
            }
#pragma unroll
            for (int j = 0; j < DEC_FN; ++j) {
                ldmatrix_x4(b[j], sb + kk * DEC_B_KSTEP_BYTES + b_off(j * MMA_N + (lane & 7), lane >> 3));
            }
#pragma unroll
            for (int i = 0; i < DEC_FM; ++i)
#pragma unroll
                for (int j = 0; j < DEC_FN; ++j) mma_sp_16832<BF16>(acc[i][j], a[i], b[j], e[i]);

            if (swaps_at(ks)) {  // window boundary: the working accumulator joins the kept row's candidate
                const unsigned char* ri = smem + stage * DEC_STAGE_BYTES + kk * DEC_TILE_BYTES + DEC_A_BYTES +
                                          DEC_META_BYTES;
#pragma unroll
                for (int i = 0; i < DEC_FM; ++i)
#pragma unroll
                    for (int half = 0; half < 2; ++half) {
                        const int q = has_ri ? (int)ri[warp * DEC_WARP_M + i * MMA_M + g + 8 * half] : 0;
#pragma unroll
                        for (int j = 0; j < DEC_FN; ++j)
#pragma unroll
                            for (int h = 0; h < 2; ++h) {
                                float& w = acc[i][j][2 * half + h];
#pragma unroll
                                for (int s = 0; s < DEC_SEL_M; ++s)
                                    cand[i][j][2 * half + h][s] = (q == s) ? cand[i][j][2 * half + h][s] + w
                                                                           : cand[i][j][2 * half + h][s];
                                w = 0.0f;
                            }
                    }
            }
        }
    }
    cp_async_wait<0>();

    // The sel_n compressed rows of a group (lanes g, g^1, ... of one 8-row half) share their dense rows.
#pragma unroll
    for (int o = 1; o < DEC_SEL_N; o <<= 1)
#pragma unroll
        for (int i = 0; i < DEC_FM; ++i)
#pragma unroll
            for (int j = 0; j < DEC_FN; ++j)
#pragma unroll
                for (int q = 0; q < 4; ++q)
#pragma unroll
                    for (int s = 0; s < DEC_SEL_M; ++s)
                        cand[i][j][q][s] += __shfl_xor_sync(0xffffffffu, cand[i][j][q][s], 4 * o);

    // has_ri == 0 (plain 2:4): compressed row c is dense row c, candidate 0 only.
    const int sel_n = has_ri ? DEC_SEL_N : 1, sel_m = has_ri ? DEC_SEL_M : 1;
    const bool leader = (g % sel_n) == 0;
    // Visit this thread's outputs: fn(i, j, q, s, position-in-tile n, dense row r).
    auto for_outputs = [&](auto&& fn) {
#pragma unroll
        for (int i = 0; i < DEC_FM; ++i)
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int c = c0 + warp * DEC_WARP_M + i * MMA_M + g + 8 * half;
                if (c >= crows || !leader) continue;
#pragma unroll
                for (int j = 0; j < DEC_FN; ++j)
#pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        const int n = j * MMA_N + 2 * t + h;
                        if (n >= cnt) continue;
#pragma unroll
                        for (int s = 0; s < DEC_SEL_M; ++s) {
                            if (s >= sel_m) break;
                            const int r = (c / sel_n) * sel_m + s;
                            if (r < rows) fn(i, j, 2 * half + h, s, n, r);
                        }
                    }
            }
    };

    if (splits > 1) {
        // every split's partials → workspace; the last CTA of (row block, token tile) sums them in split order
        const i64 total = positions * rows;
        for_outputs([&](int i, int j, int q, int s, int n, int r) {
            workspace[blockIdx.z * total + (p0 + n) * rows + r] = cand[i][j][q][s];
        });
        __threadfence();
        __syncthreads();
        if (tid == 0) {
            int* ctr = counters + (i64)blockIdx.y * mblocks + rb;
            const int prev = atomicAdd(ctr, 1);
            const int last = prev == splits - 1;
            if (last) atomicExch(ctr, 0);  // ready for the next launch
            *last_s = last;
        }
        __syncthreads();
        if (!*last_s) return;
        __threadfence();
        for_outputs([&](int i, int j, int q, int s, int n, int r) {
            const float* src = workspace + (p0 + n) * rows + r;
            float v = ld_cg_f32(src);
            for (int z = 1; z < splits; ++z) v += ld_cg_f32(src + z * total);
            cand[i][j][q][s] = v;
        });
    }
    // epilogue: pairs of adjacent dense rows (candidates s, s+1) where sel_m is even
#pragma unroll
    for (int i = 0; i < DEC_FM; ++i)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int c = c0 + warp * DEC_WARP_M + i * MMA_M + g + 8 * half;
            if (c >= crows || !leader) continue;
#pragma unroll
            for (int j = 0; j < DEC_FN; ++j)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int n = j * MMA_N + 2 * t + h;
                    if (n >= cnt) continue;
                    const int q = 2 * half + h;
#pragma unroll
                    for (int s = 0; s < DEC_SEL_M; s += 2) {
                        if (s >= sel_m) break;
                        const int r = (c / sel_n) * sel_m + s;
                        if (r >= rows) break;
                        const bool two = (s + 1 < sel_m) && (r + 1 < rows);
                        dec_store<BF16>(ep, p0 + n, r, cand[i][j][q][s], two ? cand[i][j][q][(s + 1) % DEC_SEL_M] : 0.0f,
                                        two);
                    }
                }
        }
}

#define SSMM_DECODE_ENTRY(NAME, BF16)                                                                        \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS) NAME(                                          \
        const unsigned char* tiled, int has_ri, const u16* x, int ldx, int x_rows, const int* token_idx,   \
        const int* tile_expert, const int* tile_start, const int* tile_count, int rows, int crows, int cols, \
        int vector, int steps_per_split, float* workspace, int* counters, long long positions, int epilogue, \
        void* out, int ldo, int out_f32, const u16* up, const int* scatter_idx, const float* scale) {      \
        DecEpilogue ep{epilogue, out, ldo, out_f32, up, scatter_idx, scale};                                 \
        ssmm_decode_body<BF16>(tiled, has_ri, x, ldx, x_rows, token_idx, tile_expert, tile_start, tile_count, \
                               rows, crows, cols, vector, steps_per_split, workspace, counters, positions, ep); \
    }

SSMM_DECODE_ENTRY(ssmm_decode_f16, false)
SSMM_DECODE_ENTRY(ssmm_decode_bf16, true)
