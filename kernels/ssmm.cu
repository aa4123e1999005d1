// ssmm.cu — Samoyeds dual-side sparse matmul (SSMM) on Sparse Tensor Cores.
//
//   out[p, r] = epilogue( sum_k W[r, k] · x[token_idx[p], k] )        p: position in the token list,
//                                                                      r: dense output row (feature)
// W is a Samoyeds weight (samoyeds_lab.formats.SamoyedsWeight): in every `vector`-wide window of K only
// `sel_n` of every `sel_m` rows are kept, and the kept rows are 2:4 along K. A plain 2:4 weight
// (NMWeight) is the special case row_index == NULL (compressed row c == dense row c, no windows).
//
// Operands, exactly as the Python formats write them (one expert; `experts` stacked contiguously):
//   values    u16  [crows, cols/2]            fp16/bf16 bit patterns of the kept values (NMWeight.values)
//   meta      u32  [ceil(crows/16), ceil(cols/32), 16]   formats.sptc.mma_metadata(logical): word 2g+h
//                                              is the `e` register of lane 4g+h (sparsity selector 0)
//   row_index u8   [cols/vector, crows]        SamoyedsWeight.row_index (NULL for 2:4)
//   x         u16  [tokens, ldx]              activations, row-major
//   token_idx i32  [positions]                 rows of x per position; SENTINEL (-1) = zero row;
//                                              NULL = identity (position p reads x row p)
// The grid's y dimension walks "token tiles" (tile_expert, tile_start, tile_count): up to BLOCK_N
// consecutive positions of one expert. A single-expert call has expert 0 everywhere; the grouped
// variant gets its tiles from TokenSelection.padded_offsets, so all experts run in one launch.
//
// Math: one warp issues mma.sp(::ordered_metadata).sync.aligned.m16n8k32.row.col.f32 with the weight
// in A (M = compressed rows) and the gathered tokens in B (N = tokens): Yᵀ = W · Xᵀ, fp32 accumulate.
// Row selection moves no data: the fp32 working accumulators are flushed at every window boundary into
// a shared-memory tile indexed by *dense* row (dense = (c / sel_n)·sel_m + row_index[w, c]).
//
// Pipeline: STAGES-deep cp.async (16-byte, zero-fill for tails) into XOR-swizzled shared memory,
// ldmatrix.x4 for A and B. The token ids of a tile are read once into shared memory and used as the
// row addresses of B (the gather is fused into the load). Split-K (gridDim.z > 1, split boundaries on
// window boundaries) writes fp32 partials to `workspace [splits, positions, rows]`; ssmm_finalize_*
// sums them and applies the epilogue.
//
// Epilogues (runtime `epilogue`): 0 plain (out[p, r] = acc), 1 SiLU·up (out = silu(acc) · up[p, r]),
// 2 scatter-add (out[scatter_idx[p], r] += scale[p] · acc, atomics; SENTINEL scatter ids skipped; a 16-bit
// out takes paired red.global.add.noftz.{f16x2,bf16x2} where one thread owns two adjacent rows).
//
// Hopper (sm_90a only): ssmm_wg_{f16,bf16} run the same loads, flushes and epilogues with one warpgroup
// instead of four independent warps: per k-step, WG_FRAGS_M x wgmma.mma_async.sp.m64n64k32 with A (the
// compressed weight) in registers - per warp exactly the mma.sp m16n8k32 A fragment and metadata register
// of rows 16·warp.. of each 64-row slab - and B (the gathered tokens) read by the tensor cores straight
// from the swizzled B stage through a shared-memory matrix descriptor: the B stage layout
// b_off(tok, chunk) IS the K-major 64-byte-swizzle canonical layout (64-byte rows, 16-byte chunks XOR
// (row >> 1) & 3, 8-row groups 512 B apart), so nothing is re-laid out. The shared-memory base is
// rounded up to SMEM_ALIGN so the swizzle phase the hardware derives from address bits matches b_off.
// Whether this beats the mma.sp path on H100 is decided by `samoyeds-lab bench kernels`, not assumed.
//
// Tails: any rows / crows (rows past the end are zero values with 0x4 metadata, never stored), any
// cols that is a multiple of 4 (the last k-step is zero-filled), any number of positions (0 and 1
// included). Tile constants arrive as -D defines from samoyeds_lab/tiles.py (the defaults in
// kernels/sptc_common.cuh are the same numbers, so `nvcc` alone compiles it; tests/kernels checks they
// agree). The helpers the three families share (cp.async, ldmatrix, mma.sp, conversions) live there too.

#include "sptc_common.cuh"  // tile defaults, cp.async / ldmatrix / mma.sp helpers, fp16/bf16 conversions

#define KC_STEP (MMA_K / 2)                         // stored (compressed) halves per row per k-step
#define A_STAGE_BYTES (BLOCK_M * KC_STEP * 2)       // [BLOCK_M][16] halves
#define M_STAGE_BYTES ((BLOCK_M / MMA_M) * 16 * 4)  // [BLOCK_M/16 tiles][16 words]
#define STAGE_BYTES (A_STAGE_BYTES + B_STAGE_BYTES + M_STAGE_BYTES)
// wgmma (sm_90a) path
#define WG_M 64                                     // rows of one wgmma.m64nNk32 (4 warps x 16)
#define WG_FRAGS_M (BLOCK_M / WG_M)                 // wgmma row slabs per block and k-step
#define WG_FRAGS_N (BLOCK_N / MMA_N)                // n8 column blocks of one m64n(BLOCK_N)k32 accumulator
#define B_ROW_BYTES (MMA_K * 2)                     // one token's K-step in the B stage (= the 64 B swizzle row)
#define B_SBO (8 * B_ROW_BYTES)                     // descriptor stride byte offset: 8-row groups of B
#define SMEM_ALIGN 1024                             // shared base alignment of the wgmma path


static_assert((BLOCK_M * 2) % THREADS == 0 && (BLOCK_N * 4) % THREADS == 0, "copy loops");
static_assert(M_STAGE_BYTES / 16 <= THREADS, "one metadata chunk per thread");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  // constraints of the wgmma path only (other builds never run it)
static_assert(BLOCK_M % WG_M == 0 && THREADS == 128, "wgmma path: one warpgroup, 64-row slabs");
static_assert(BLOCK_N == 64, "wgmma path: the m64n64k32 operand list below is written for BLOCK_N = 64");
static_assert(STAGE_BYTES % 512 == 0 && A_STAGE_BYTES % 512 == 0, "B stages on 512 B (64 B swizzle atom) boundaries");
#endif

// ------------------------------------------------------------------------------------------ sm_90a wgmma
// Shared-memory matrix descriptor of a B stage: start address, LBO (unused for swizzled K-major: 1),
// SBO = 512 B between 8-token groups, layout type 2 = 64-byte swizzle, base offset 0 (stages are aligned).
__device__ __forceinline__ unsigned long long b_desc(u32 addr) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | (1ull << 16) |
           ((unsigned long long)((B_SBO & 0x3FFFF) >> 4) << 32) | (2ull << 62);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SAMOYEDS_WGMMA 1
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }

#define WGMMA_SP_ASM(TYPES)                                                                                  \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"                                               \
                 "wgmma.mma_async.sp.sync.aligned.m64n64k32.f32" TYPES " "                                   \
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                    \
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "          \
                 "{%32, %33, %34, %35}, %36, %37, 0, p, 1, 1, 0;\n}\n"                                       \
                 : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),  \
                   "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),  \
                   "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),  \
                   "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),  \
                   "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),  \
                   "+f"(d[7][2]), "+f"(d[7][3])                                                              \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(e), "r"(1))

// D[64 x 64] += A(2:4, registers) · B(descriptor); d[j][q] = D[16·warp + g + 8·(q >> 1)][8j + 2t + (q & 1)].
template <bool BF16>
__device__ __forceinline__ void wgmma_sp_m64n64k32(float (&d)[WG_FRAGS_N][4], const u32 (&a)[4],
                                                   unsigned long long desc, u32 e) {
    if (BF16) WGMMA_SP_ASM(".bf16.bf16");
    else WGMMA_SP_ASM(".f16.f16");
}
#else
#define SAMOYEDS_WGMMA 0
__device__ __forceinline__ void fence_proxy_async() {}
__device__ __forceinline__ void wgmma_fence() {}
__device__ __forceinline__ void wgmma_commit() {}
__device__ __forceinline__ void wgmma_wait0() {}
template <bool BF16>
__device__ __forceinline__ void wgmma_sp_m64n64k32(float (&)[WG_FRAGS_N][4], const u32 (&)[4], unsigned long long,
                                                   u32) {
    __trap();  // never instantiated: ssmm_entry traps before reaching the wgmma path off sm_90a
}
#endif

// Row of weight-tile fragment i (16 compressed rows) and first token of column fragment j (8 tokens).
template <bool WG>
__device__ __forceinline__ int frag_row(int wm, int warp, int i) {
    return WG ? i * WG_M + warp * MMA_M : wm * WARP_TILE_M + i * MMA_M;
}
template <bool WG>
__device__ __forceinline__ int frag_tok(int wn, int j) {
    return WG ? j * MMA_N : wn * WARP_TILE_N + j * MMA_N;
}


// Swizzled byte offsets inside a stage (16-byte chunks XOR-permuted so ldmatrix is conflict-free).
__device__ __forceinline__ int a_off(int row, int chunk) { return row * 32 + ((chunk ^ ((row >> 2) & 1)) << 4); }

struct EpilogueArgs {
    int epilogue;             // 0 plain, 1 silu·up, 2 scatter-add
    void* out;                // [positions, ldo] (0, 1) or [out_rows, ldo] (2)
    int ldo;
    int out_f32;              // scatter-add into an fp32 `out` (else the input dtype)
    const u16* up;            // epilogue 1: [positions, ldo] of the input dtype
    const int* scatter_idx;   // epilogue 2: output row of each position (NULL: the position)
    const float* scale;       // epilogue 2: multiplier per position (NULL: 1)
};

template <bool BF16>
__device__ __forceinline__ void apply_epilogue(const EpilogueArgs& ep, i64 p, int r, float v) {
    if (ep.epilogue == 2) {
        const i64 dst = ep.scatter_idx ? (i64)ep.scatter_idx[p] : p;
        if (dst < 0) return;  // SENTINEL
        const float s = ep.scale ? ep.scale[p] : 1.0f;
        if (ep.out_f32) atomicAdd((float*)ep.out + dst * ep.ldo + r, s * v);
        else red_add_16<BF16>((u16*)ep.out + dst * ep.ldo + r, s * v);
        return;
    }
    if (ep.epilogue == 1) {
        const float u = to_float<BF16>(ep.up[p * ep.ldo + r]);
        v = v / (1.0f + __expf(-v)) * u;
    }
    ((u16*)ep.out)[p * ep.ldo + r] = from_float<BF16>(v);
}

// The paired scatter-add applies: a 16-bit scatter-add whose columns r0, r0 + 2, ... start 4-byte words
// (even ldo, even first column, 4-byte aligned out). Uniform over the block.
__device__ __forceinline__ bool scatter_pairs(const EpilogueArgs& ep, int r0) {
    return ep.epilogue == 2 && !ep.out_f32 && (ep.ldo & 1) == 0 && (r0 & 1) == 0 &&
           ((unsigned long long)ep.out & 3ull) == 0;
}

// out[scatter_idx[p], r .. r+1] += scale[p] · (v0, v1) in one paired reduction (scatter_pairs held, r even).
template <bool BF16>
__device__ __forceinline__ void scatter_add_pair(const EpilogueArgs& ep, i64 p, int r, float v0, float v1) {
    const i64 dst = ep.scatter_idx ? (i64)ep.scatter_idx[p] : p;
    if (dst < 0) return;  // SENTINEL
    const float s = ep.scale ? ep.scale[p] : 1.0f;
    red_add_16x2<BF16>((u16*)ep.out + dst * ep.ldo + r, s * v0, s * v1);
}

// The block's scatter-add epilogue with paired reductions: thread i takes rows (2j, 2j + 1) of a position.
// Out of line, EpilogueArgs by value: inlined it raised the sm_80 kernels' registers (126 -> 140+), by
// reference it put the struct on the stack.
template <bool BF16>
__device__ __noinline__ void scatter_tile_pairs(const float* acc_s, int acc_ld, int r_tile, int r_valid, int cnt,
                                                i64 p0, int r0, const EpilogueArgs ep) {
    const int half = (r_tile + 1) / 2;
    for (int i = threadIdx.x; i < cnt * half; i += blockDim.x) {
        const int n = i / half, rl = 2 * (i - n * half);
        if (rl >= r_valid) continue;
        const float v0 = acc_s[n * acc_ld + rl];
        if (rl + 1 < r_valid) scatter_add_pair<BF16>(ep, p0 + n, r0 + rl, v0, acc_s[n * acc_ld + rl + 1]);
        else apply_epilogue<BF16>(ep, p0 + n, r0 + rl, v0);
    }
}

// ------------------------------------------------------------------------------------------ main kernel
template <bool BF16, bool WG>
__device__ __forceinline__ void ssmm_body(
    const u16* __restrict__ values, const u32* __restrict__ meta, const unsigned char* __restrict__ row_index,
    const u16* __restrict__ x, int ldx, int x_rows, const int* __restrict__ token_idx,
    const int* __restrict__ tile_expert, const int* __restrict__ tile_start, const int* __restrict__ tile_count,
    int rows, int crows, int cols, int sel_n, int sel_m, int vector,
    int steps_per_split, float* __restrict__ workspace, i64 positions, const EpilogueArgs& ep) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    // wgmma path: round the base up to SMEM_ALIGN (the host allocates SMEM_ALIGN extra bytes)
    unsigned char* smem = smem_raw + (WG ? (SMEM_ALIGN - (smem_u32(smem_raw) & (SMEM_ALIGN - 1))) & (SMEM_ALIGN - 1) : 0);
    int* tok_s = (int*)(smem + STAGES * STAGE_BYTES);
    float* acc_s = (float*)(smem + STAGES * STAGE_BYTES + BLOCK_N * 4);

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;  // same order as reference/tiled.py
    const int bm = blockIdx.x;
    const int expert = tile_expert[blockIdx.y];
    const i64 p0 = tile_start[blockIdx.y];
    const int cnt = tile_count[blockIdx.y];

    const int kc = cols / 2;  // stored halves per row
    const int ksteps = (cols + MMA_K - 1) / MMA_K;
    const int mtiles = (crows + MMA_M - 1) / MMA_M;
    const int windows = row_index ? cols / vector : 1;
    const int window_steps = row_index ? vector / MMA_K : 0x7fffffff;
    const int k_begin = blockIdx.z * steps_per_split;
    const int k_end = min(ksteps, k_begin + steps_per_split);

    values += (i64)expert * crows * kc;
    meta += (i64)expert * mtiles * ksteps * 16;
    if (row_index) row_index += (i64)expert * windows * crows;

    // Dense rows this block's compressed rows can land on: groups [c0/sel_n, ...) · sel_m.
    const int c0 = bm * BLOCK_M;
    const int r_tile = BLOCK_M / sel_n * sel_m;
    const int r0 = c0 / sel_n * sel_m;
    const int acc_ld = r_tile + ACC_PAD;

    // Token ids → shared memory once; out-of-tile and SENTINEL positions read zero rows.
    for (int n = tid; n < BLOCK_N; n += THREADS) {
        int id = SENTINEL;
        if (n < cnt) {
            id = token_idx ? token_idx[p0 + n] : (int)(p0 + n);
            if (id < 0 || id >= x_rows) id = SENTINEL;  // the wrapper validated; never read out of bounds
        }
        tok_s[n] = id;
    }
    for (int i = tid; i < BLOCK_N * acc_ld; i += THREADS) acc_s[i] = 0.0f;
    __syncthreads();

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

    constexpr int FM = WG ? WG_FRAGS_M : FRAGS_M;  // weight fragments (16 rows) per thread
    constexpr int FN = WG ? WG_FRAGS_N : FRAGS_N;  // token fragments (8 tokens) per thread
    float acc[FM][FN][4];
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j)
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
        if (WG) fence_proxy_async();  // make this thread's shared writes visible to the tensor cores' async proxy
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

        if constexpr (WG) {
            u32 a[WG_FRAGS_M][4], e[WG_FRAGS_M];
#pragma unroll
            for (int i = 0; i < WG_FRAGS_M; ++i) {
                const int row = frag_row<true>(wm, warp, i) + (lane & 15);
                ldmatrix_x4(a[i], sa + a_off(row, lane >> 4));
                e[i] = sm[(frag_row<true>(wm, warp, i) / MMA_M) * 16 + 2 * g + (lane & 1)];
            }
            wgmma_fence();  // A registers and accumulators were written by ordinary instructions
#pragma unroll
            for (int i = 0; i < WG_FRAGS_M; ++i) wgmma_sp_m64n64k32<BF16>(acc[i], a[i], b_desc(sb), e[i]);
            wgmma_commit();
            wgmma_wait0();  // before the flush reads acc and before the next barrier frees this stage
        } else {
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

        // End of a window (or of this split's K range): flush into dense-row shared accumulators.
        if ((ks + 1) % window_steps == 0 || ks + 1 == k_end) {
            const int w = ks / (row_index ? window_steps : 1);
#pragma unroll
            for (int i = 0; i < FM; ++i) {
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    const int c = c0 + frag_row<WG>(wm, warp, i) + g + 8 * half;
                    if (c >= crows) continue;
                    const int dense = row_index ? (c / sel_n) * sel_m + (int)row_index[(i64)w * crows + c] : c;
                    float* dst = acc_s + (dense - r0);
#pragma unroll
                    for (int j = 0; j < FN; ++j) {
                        const int n = frag_tok<WG>(wn, j) + 2 * t;
                        dst[n * acc_ld] += acc[i][j][2 * half];
                        dst[(n + 1) * acc_ld] += acc[i][j][2 * half + 1];
                        acc[i][j][2 * half] = 0.0f;
                        acc[i][j][2 * half + 1] = 0.0f;
                    }
                }
            }
        }
    }
    cp_async_wait<0>();
    __syncthreads();

    // Epilogue: rows [r0, r0 + r_tile) x positions [p0, p0 + cnt), consecutive threads on consecutive rows.
    const int r_valid = min(r_tile, rows - r0);
    if (r_valid <= 0) return;
    if (gridDim.z == 1 && scatter_pairs(ep, r0)) {  // one thread, two adjacent rows: paired reductions
        scatter_tile_pairs<BF16>(acc_s, acc_ld, r_tile, r_valid, cnt, p0, r0, ep);
        return;
    }
    for (int i = tid; i < cnt * r_tile; i += THREADS) {
        const int n = i / r_tile, rl = i - n * r_tile;
        if (rl >= r_valid) continue;
        const float v = acc_s[n * acc_ld + rl];
        if (gridDim.z > 1) {
            workspace[((i64)blockIdx.z * positions + p0 + n) * rows + r0 + rl] = v;
        } else {
            apply_epilogue<BF16>(ep, p0 + n, r0 + rl, v);
        }
    }
}

template <bool BF16>
__device__ __forceinline__ void finalize_body(const float* __restrict__ workspace, int splits, i64 positions,
                                              int rows, const EpilogueArgs& ep) {
    const i64 total = positions * rows;
    if (scatter_pairs(ep, 0)) {  // rows (0, 1), (2, 3), ... of each position: paired reductions
        const int half = (rows + 1) / 2;
        const i64 pairs = positions * half;
        for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < pairs; i += (i64)gridDim.x * blockDim.x) {
            const i64 p = i / half;
            const int r = 2 * (int)(i - p * half);
            float v0 = 0.0f, v1 = 0.0f;
            for (int z = 0; z < splits; ++z) {
                v0 += workspace[z * total + p * rows + r];
                if (r + 1 < rows) v1 += workspace[z * total + p * rows + r + 1];
            }
            if (r + 1 < rows) scatter_add_pair<BF16>(ep, p, r, v0, v1);
            else apply_epilogue<BF16>(ep, p, r, v0);
        }
        return;
    }
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
        float v = 0.0f;
        for (int z = 0; z < splits; ++z) v += workspace[z * total + i];
        apply_epilogue<BF16>(ep, i / rows, (int)(i % rows), v);
    }
}

// The wgmma entry points exist in every build (nvcc's host pass must see them) but only sm_90a builds
// instantiate their body; elsewhere they trap (ops never launches them off Hopper).
template <bool BF16, bool WG>
__device__ __forceinline__ void ssmm_entry(
    const u16* values, const u32* meta, const unsigned char* row_index, const u16* x, int ldx, int x_rows,
    const int* token_idx, const int* tile_expert, const int* tile_start, const int* tile_count, int rows, int crows,
    int cols, int sel_n, int sel_m, int vector, int steps_per_split, float* workspace, i64 positions,
    const EpilogueArgs& ep) {
    if constexpr (WG && !SAMOYEDS_WGMMA) {
        __trap();
    } else {
        ssmm_body<BF16, WG>(values, meta, row_index, x, ldx, x_rows, token_idx, tile_expert, tile_start, tile_count,
                            rows, crows, cols, sel_n, sel_m, vector, steps_per_split, workspace, positions, ep);
    }
}

// ------------------------------------------------------------------------------------------ entry points
#define SSMM_ENTRY(NAME, BF16, WG)                                                                          \
    extern "C" __global__ void __launch_bounds__(THREADS) NAME(                                             \
        const u16* values, const u32* meta, const unsigned char* row_index, const u16* x, int ldx,         \
        int x_rows, const int* token_idx, const int* tile_expert, const int* tile_start,                   \
        const int* tile_count, int rows, int crows, int cols, int sel_n, int sel_m, int vector,           \
        int steps_per_split, float* workspace, long long positions, int epilogue, void* out, int ldo,     \
        int out_f32, const u16* up, const int* scatter_idx, const float* scale) {                         \
        EpilogueArgs ep{epilogue, out, ldo, out_f32, up, scatter_idx, scale};                              \
        ssmm_entry<BF16, WG>(values, meta, row_index, x, ldx, x_rows, token_idx, tile_expert, tile_start, \
                        tile_count, rows, crows, cols, sel_n, sel_m, vector, steps_per_split, workspace,  \
                        positions, ep);                                                                   \
    }                                                                                                       \
    extern "C" __global__ void NAME##_finalize(const float* workspace, int splits, long long positions,    \
                                               int rows, int epilogue, void* out, int ldo, int out_f32,   \
                                               const u16* up, const int* scatter_idx, const float* scale) { \
        EpilogueArgs ep{epilogue, out, ldo, out_f32, up, scatter_idx, scale};                              \
        finalize_body<BF16>(workspace, splits, positions, rows, ep);                                       \
    }

SSMM_ENTRY(ssmm_f16, false, false)
SSMM_ENTRY(ssmm_bf16, true, false)
SSMM_ENTRY(ssmm_wg_f16, false, true)
SSMM_ENTRY(ssmm_wg_bf16, true, true)
