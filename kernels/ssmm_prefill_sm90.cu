// ssmm_prefill_sm90.cu — the Samoyeds SSMM for prefill on Hopper (sm_90a only): warp-specialised,
// mbarrier-pipelined, wgmma.mma_async.sp with 128 or 256 tokens per instruction.
//
//   out[p, r] = epilogue( sum_k W[r, k] · x[token_idx[p], k] )       (the same op as kernels/ssmm.cu)
//
// One CTA = 3 warpgroups (384 threads) on a tile of PF_BM = 128 compressed weight rows x PF_BN tokens:
//   warpgroup 0, the producer (setmaxnreg.dec to PF_PRODUCER_REGS): fills PF_STAGES shared-memory stages of
//     PF_KS K each. Per stage, thread 0 issues ONE cp.async.bulk (global -> shared, completion counted in
//     bytes on the stage's `full` mbarrier via expect_tx) of the weight tile pre-tiled on the host
//     (samoyeds_lab/kernels/prefill.py: compressed values already in the ldmatrix swizzle, their mma.sp
//     metadata words and the row_index bytes of the stage's window: one contiguous burst). The gathered token
//     rows (B) cannot be one bulk copy (rows of x picked by token id; TMA on sm_90 has no gather), so the 128
//     producer threads copy them with 16-byte cp.async (zero-fill for SENTINEL ids and K tails) into the
//     K-major 64-byte-swizzle layout the wgmma descriptor reads, and each thread's
//     cp.async.mbarrier.arrive.noinc lands on the same `full` barrier when its copies have completed.
//     Before refilling a stage the producer waits on its `empty` barrier.
//   warpgroups 1 and 2, the consumers (setmaxnreg.inc to PF_CONSUMER_REGS): consumer c owns compressed rows
//     64c .. 64c+63 of the tile (one m64 slab) and all PF_BN tokens. Per stage: wait `full`, ldmatrix the
//     A fragments and read the metadata words of its 4 x 16-row tiles, issue PF_KS/32 wgmma.mma_async.sp
//     m64n{PF_BN}k32 (A in registers, B through a shared-memory descriptor), commit, then
//     wgmma.wait_group 1: the previous stage's group is done, so that stage is handed back (`empty`
//     arrive, one per warp) while this stage's wgmmas still run. Only at a Samoyeds window boundary does a
//     consumer wait for 0 groups, because the window flush reads the accumulators.
// Window flush in registers (the Samoyeds row selection, sel_n = 1): besides the working accumulator each
// consumer thread keeps PF_CAND candidate accumulators, one per dense row its compressed row can land on
// (dense = c · sel_m + row_index[w, c]); at the end of window w it adds the working accumulator into the
// candidate row_index[w, c] selects (predicated adds: the others get + 0), then clears it. No shared fp32
// tile, no bank conflicts; the row_index bytes came with the stage. A plain 2:4 weight (row_index NULL)
// has no windows: the working accumulator is the result (any PF_CAND).
// Epilogues straight from registers: 0 plain store, 1 SiLU·up, 2 scatter-add (out[scatter_idx[p], r] +=
// scale[p] · acc; fp32 out by atomicAdd, 16-bit out by red.global.add.noftz.{f16,bf16}, paired .x2 when one
// thread owns two adjacent dense rows: sel_m = 2 candidates of one compressed row).
//
// Compile-time parameters (-D, part of the compile cache key; samoyeds_lab/kernels/prefill.py
// PrefillConfig): PF_BN tokens per tile (128 or 256), PF_STAGES, PF_KS K per stage (multiple of 32),
// PF_CAND candidate accumulators (0: plain 2:4 only). Runtime limits the host checks: sel_n = 1,
// sel_m <= PF_CAND, vector % PF_KS == 0 for Samoyeds weights; x rows 16-byte aligned (ldx % 8 == 0) for
// the cp.async gather (else a scalar copy); no split-K (prefill grids are large).
// The grid: x = 128-row blocks of the compressed weight, y = token tiles of at most PF_BN positions
// (tile_expert / tile_start / tile_count, the same tiles as kernels/ssmm.cu with block_n = PF_BN).
// Off sm_90a the entry points exist but trap (the host never launches them there).

#include "sptc_common.cuh"  // u16/u32/i64, smem_u32, cp_async16, ldmatrix_x4, b_off, fp16/bf16 conversions

#ifndef PF_BN
#define PF_BN 128
#endif
#ifndef PF_STAGES
#define PF_STAGES 6
#endif
#ifndef PF_KS
#define PF_KS 32
#endif
#ifndef PF_CAND
#define PF_CAND 2
#endif
#ifndef PF_PRODUCER_REGS
#define PF_PRODUCER_REGS 40
#endif
#ifndef PF_CONSUMER_REGS
#define PF_CONSUMER_REGS 232
#endif

#define PF_BM 128                                   // compressed rows per CTA (two m64 consumer slabs)
#define PF_WG 128                                   // threads per warpgroup
#define PF_THREADS (3 * PF_WG)                      // producer + two consumers
#define PF_KSTEPS (PF_KS / 32)                      // k32 wgmma steps per stage
#define PF_B_SLAB (PF_BN * 64)                      // one k32 step of B: PF_BN tokens x 64 B (64 B swizzle)
#define PF_B_BYTES (PF_KSTEPS * PF_B_SLAB)
#define PF_A_SLAB (PF_BM * 32)                      // one k32 step of A: 128 rows x 16 stored halves
#define PF_A_BYTES (PF_KSTEPS * PF_A_SLAB)
#define PF_M_SLAB ((PF_BM / 16) * 64)               // one k32 step of metadata: 8 tiles x 16 words
#define PF_M_BYTES (PF_KSTEPS * PF_M_SLAB)
#define PF_RI_BYTES PF_BM                           // row_index bytes of the stage's window
#define PF_TILE_BYTES (PF_A_BYTES + PF_M_BYTES + PF_RI_BYTES)  // the pre-tiled burst of one (block, stage)
#define PF_STAGE_BYTES (((PF_B_BYTES + PF_TILE_BYTES) + 1023) / 1024 * 1024)
#define PF_ALIGN 1024                               // shared base alignment (64 B swizzle phase = address bits)
#define PF_SMEM_BYTES (PF_STAGES * PF_STAGE_BYTES + PF_BN * 4 + PF_STAGES * 16 + PF_ALIGN)
#define PF_FN (PF_BN / 8)                           // n8 column blocks of one accumulator
#define PF_CAND_ARR (PF_CAND > 0 ? PF_CAND : 1)

static_assert(PF_BN == 128 || PF_BN == 256, "PF_BN: wgmma operand lists are written for N = 128 and 256");
static_assert(PF_KS % 32 == 0 && PF_KS >= 32 && PF_KS <= 256, "PF_KS: a multiple of 32 in [32, 256]");
static_assert(PF_STAGES >= 2 && PF_STAGES <= 12, "PF_STAGES in [2, 12]");
static_assert(PF_CAND >= 0 && PF_CAND <= 4, "PF_CAND in [0, 4]");
static_assert(PF_TILE_BYTES % 16 == 0, "cp.async.bulk sizes are multiples of 16 bytes");
static_assert(PF_SMEM_BYTES <= 227 * 1024, "shared memory per CTA above the 227 KB of sm_90");
#ifdef PF_EXPECT_SMEM  // the host's PrefillConfig.smem_bytes, checked by tests/kernels/test_prefill_sm90.py
static_assert(PF_SMEM_BYTES == PF_EXPECT_SMEM, "host and kernel disagree on the shared memory per CTA");
#endif
#ifdef PF_EXPECT_TILE  // the host's PrefillConfig.tile_bytes (the pre-tiled burst of one block and stage)
static_assert(PF_TILE_BYTES == PF_EXPECT_TILE, "host and kernel disagree on the pre-tiled burst size");
#endif

// A stage: [B slabs | A slabs | metadata | row_index], B first so every slab is 1024-B aligned.
__device__ __forceinline__ int pf_a_off(int row, int chunk) { return row * 32 + ((chunk ^ ((row >> 2) & 1)) << 4); }

// wgmma descriptor of one B slab: start, LBO 16 B (unused by swizzled K-major), SBO 512 B, 64-byte swizzle.
__device__ __forceinline__ unsigned long long pf_b_desc(u32 addr) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | (1ull << 16) | ((unsigned long long)(512 >> 4) << 32) |
           (2ull << 62);
}

struct PfEpilogue {
    int epilogue;            // 0 plain, 1 silu·up, 2 scatter-add
    void* out;               // [positions, ldo] (0, 1) or [out_rows, ldo] (2)
    int ldo;
    int out_f32;             // scatter-add into fp32 `out`
    const u16* up;           // epilogue 1
    const int* scatter_idx;  // epilogue 2: destination row per position (NULL: the position)
    const float* scale;      // epilogue 2: multiplier per position (NULL: 1)
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define PF_SM90 1
// D[64 x 128] += A(2:4, registers) . B(descriptor): d[j][q] = D[16 warp + g + 8 (q >> 1)][8 j + 2 t + (q & 1)].
#define PF_WGMMA_N128(TYPES) \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %70, 0;\n" \
                 "wgmma.mma_async.sp.sync.aligned.m64n128k32.f32" TYPES " {" \
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63" \
                 "}, {%64, %65, %66, %67}, %68, %69, 0, p, 1, 1, 0;\n}\n" \
                 : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
                   "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), \
                   "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
                   "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), \
                   "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), \
                   "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), \
                   "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), \
                   "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3]) \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(e), "r"(1) : "memory")

// D[64 x 256] += A(2:4, registers) . B(descriptor): d[j][q] = D[16 warp + g + 8 (q >> 1)][8 j + 2 t + (q & 1)].
#define PF_WGMMA_N256(TYPES) \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %134, 0;\n" \
                 "wgmma.mma_async.sp.sync.aligned.m64n256k32.f32" TYPES " {" \
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, " \
                 "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
                 "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
                 "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
                 "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127" \
                 "}, {%128, %129, %130, %131}, %132, %133, 0, p, 1, 1, 0;\n}\n" \
                 : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
                   "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), \
                   "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
                   "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), \
                   "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), \
                   "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), \
                   "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), \
                   "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3]), \
                   "+f"(d[16][0]), "+f"(d[16][1]), "+f"(d[16][2]), "+f"(d[16][3]), "+f"(d[17][0]), "+f"(d[17][1]), "+f"(d[17][2]), "+f"(d[17][3]), \
                   "+f"(d[18][0]), "+f"(d[18][1]), "+f"(d[18][2]), "+f"(d[18][3]), "+f"(d[19][0]), "+f"(d[19][1]), "+f"(d[19][2]), "+f"(d[19][3]), \
                   "+f"(d[20][0]), "+f"(d[20][1]), "+f"(d[20][2]), "+f"(d[20][3]), "+f"(d[21][0]), "+f"(d[21][1]), "+f"(d[21][2]), "+f"(d[21][3]), \
                   "+f"(d[22][0]), "+f"(d[22][1]), "+f"(d[22][2]), "+f"(d[22][3]), "+f"(d[23][0]), "+f"(d[23][1]), "+f"(d[23][2]), "+f"(d[23][3]), \
                   "+f"(d[24][0]), "+f"(d[24][1]), "+f"(d[24][2]), "+f"(d[24][3]), "+f"(d[25][0]), "+f"(d[25][1]), "+f"(d[25][2]), "+f"(d[25][3]), \
                   "+f"(d[26][0]), "+f"(d[26][1]), "+f"(d[26][2]), "+f"(d[26][3]), "+f"(d[27][0]), "+f"(d[27][1]), "+f"(d[27][2]), "+f"(d[27][3]), \
                   "+f"(d[28][0]), "+f"(d[28][1]), "+f"(d[28][2]), "+f"(d[28][3]), "+f"(d[29][0]), "+f"(d[29][1]), "+f"(d[29][2]), "+f"(d[29][3]), \
                   "+f"(d[30][0]), "+f"(d[30][1]), "+f"(d[30][2]), "+f"(d[30][3]), "+f"(d[31][0]), "+f"(d[31][1]), "+f"(d[31][2]), "+f"(d[31][3]) \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(e), "r"(1) : "memory")

template <bool BF16>
__device__ __forceinline__ void pf_wgmma(float (&d)[PF_FN][4], const u32 (&a)[4], unsigned long long desc, u32 e) {
#if PF_BN == 128
    if (BF16) PF_WGMMA_N128(".bf16.bf16");
    else PF_WGMMA_N128(".f16.f16");
#else
    if (BF16) PF_WGMMA_N256(".bf16.bf16");
    else PF_WGMMA_N256(".f16.f16");
#endif
}

// ------------------------------------------------------------------------------------------ mbarrier
__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u32 bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
    u32 done;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done) : "r"(bar), "r"(parity) : "memory");
    } while (!done);
}
// The arrive-on of this thread's earlier cp.async copies (counted in the barrier's init count: .noinc).
__device__ __forceinline__ void cp_async_mbar_arrive(u32 bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void bulk_g2s(u32 dst, const void* src, u32 bytes, u32 bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
                 ::"r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}
__device__ __forceinline__ void pf_fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void pf_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void pf_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void pf_wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }

// ------------------------------------------------------------------------------------------ epilogue
// 16-bit scatter-add: red_add_16 / red_add_16x2 of sptc_common.cuh (sm_90a: the red forms, no CAS loop).
// One output element (position p, dense row r) of value v.
template <bool BF16>
__device__ __forceinline__ void pf_store(const PfEpilogue& ep, i64 p, int r, float v) {
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

// Dense rows r, r + 1 of position p (r even, paired reduction allowed).
template <bool BF16>
__device__ __forceinline__ void pf_store_pair(const PfEpilogue& ep, i64 p, int r, float v0, float v1) {
    const i64 dst = ep.scatter_idx ? (i64)ep.scatter_idx[p] : p;
    if (dst < 0) return;
    const float s = ep.scale ? ep.scale[p] : 1.0f;
    red_add_16x2<BF16>((u16*)ep.out + dst * ep.ldo + r, s * v0, s * v1);
}

// ------------------------------------------------------------------------------------------ the kernel
template <bool BF16>
__device__ __forceinline__ void pf_body(const unsigned char* __restrict__ tiled, int kstages, const u16* __restrict__ x,
                                        int ldx, int x_rows, const int* __restrict__ token_idx,
                                        const int* __restrict__ tile_expert, const int* __restrict__ tile_start,
                                        const int* __restrict__ tile_count, int rows, int crows, int cols,
                                        int sel_m, int vector, int has_ri, const PfEpilogue& ep) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    unsigned char* smem = smem_raw + ((PF_ALIGN - (smem_u32(smem_raw) & (PF_ALIGN - 1))) & (PF_ALIGN - 1));
    int* tok_s = (int*)(smem + PF_STAGES * PF_STAGE_BYTES);
    const u32 base = smem_u32(smem);
    const u32 full0 = smem_u32(tok_s + PF_BN);      // full[s] at full0 + 8 s
    const u32 empty0 = full0 + 8 * PF_STAGES;        // empty[s] at empty0 + 8 s

    const int tid = threadIdx.x, wg = tid / PF_WG, ltid = tid % PF_WG;
    const int bm = blockIdx.x;
    const int expert = tile_expert[blockIdx.y];
    const i64 p0 = tile_start[blockIdx.y];
    const int cnt = tile_count[blockIdx.y];
    const int mblocks = gridDim.x;

    for (int n = tid; n < PF_BN; n += PF_THREADS) {
        int id = SENTINEL;
        if (n < cnt) {
            id = token_idx ? token_idx[p0 + n] : (int)(p0 + n);
            if (id < 0 || id >= x_rows) id = SENTINEL;
        }
        tok_s[n] = id;
    }
    if (tid == 0) {
        for (int s = 0; s < PF_STAGES; ++s) {
            mbar_init(full0 + 8 * s, PF_WG + 1);  // 128 cp.async arrivals + thread 0's expect_tx arrival
            mbar_init(empty0 + 8 * s, 8);         // one arrival per consumer warp
        }
    }
    __syncthreads();  // the only CTA-wide barrier: token ids and barrier init visible to all

    if (wg == 0) {
        // ---------------------------------------------------------------- producer
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(PF_PRODUCER_REGS));
        const unsigned char* src_tile = tiled + ((i64)expert * mblocks + bm) * (i64)kstages * PF_TILE_BYTES;
        const bool x_vec = (ldx % 8 == 0) && (((unsigned long long)x & 15ull) == 0);
        for (int it = 0; it < kstages; ++it) {
            const int s = it % PF_STAGES;
            if (it >= PF_STAGES) mbar_wait(empty0 + 8 * s, ((it / PF_STAGES) - 1) & 1);
            const u32 sb = base + s * PF_STAGE_BYTES;
            const u32 full = full0 + 8 * s;
            if (ltid == 0) {
                mbar_arrive_expect_tx(full, PF_TILE_BYTES);
                bulk_g2s(sb + PF_B_BYTES, src_tile + (i64)it * PF_TILE_BYTES, PF_TILE_BYTES, full);
            }
            for (int i = ltid; i < PF_BN * PF_KSTEPS * 4; i += PF_WG) {
                const int n = i / (PF_KSTEPS * 4), rem = i - n * (PF_KSTEPS * 4);
                const int kk = rem >> 2, chunk = rem & 3;
                const int id = tok_s[n];
                const int k0 = it * PF_KS + kk * 32 + chunk * 8;
                const int valid = (id >= 0) ? min(8, max(0, cols - k0)) : 0;
                const u32 dst = sb + kk * PF_B_SLAB + b_off(n, chunk);
                const u16* src = x + (i64)(valid ? id : 0) * ldx + (valid ? k0 : 0);
                if (x_vec) {
                    cp_async16(dst, valid ? (const void*)src : (const void*)x, valid * 2);
                } else {
                    for (int h = 0; h < 8; ++h) st_shared_u16(dst + 2 * h, h < valid ? src[h] : (u16)0);
                }
            }
            // one arrival per thread: when its cp.async copies have landed, or (scalar stores) now, with release
            if (x_vec) cp_async_mbar_arrive(full);
            else mbar_arrive(full);
        }
        return;  // no CTA-wide barrier follows
    }

    // -------------------------------------------------------------------- consumers
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(PF_CONSUMER_REGS));
    const int c = wg - 1;                 // consumer: compressed rows 64c .. 64c + 63 of the tile
    const int warp = (tid / 32) & 3, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    const int slab_row = c * 64 + warp * 16;  // first row of this warp's 16-row tile inside the block
    const int tile16 = slab_row / 16;         // its metadata tile (0..7)

    float acc[PF_FN][4];
    float cand[PF_CAND_ARR][PF_FN][4];
#pragma unroll
    for (int j = 0; j < PF_FN; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            acc[j][q] = 0.0f;
#pragma unroll
            for (int m = 0; m < PF_CAND_ARR; ++m) cand[m][j][q] = 0.0f;
        }

    const int win_stages = has_ri ? vector / PF_KS : 0x7fffffff;
    int released = 0;  // stages [0, released) are handed back to the producer
    for (int it = 0; it < kstages; ++it) {
        const int s = it % PF_STAGES;
        const u32 sb = base + s * PF_STAGE_BYTES;
        mbar_wait(full0 + 8 * s, (it / PF_STAGES) & 1);
        pf_fence_proxy_async();  // the producer's cp.async (generic proxy) writes of B, seen by the async proxy
        const u32 sa = sb + PF_B_BYTES;
        const u32* sm = (const u32*)(smem + s * PF_STAGE_BYTES + PF_B_BYTES + PF_A_BYTES);
        u32 a[PF_KSTEPS][4], e[PF_KSTEPS];
#pragma unroll
        for (int kk = 0; kk < PF_KSTEPS; ++kk) {
            ldmatrix_x4(a[kk], sa + kk * PF_A_SLAB + pf_a_off(slab_row + (lane & 15), lane >> 4));
            e[kk] = sm[kk * (PF_M_SLAB / 4) + tile16 * 16 + 2 * g + (lane & 1)];
        }
        pf_wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < PF_KSTEPS; ++kk) pf_wgmma<BF16>(acc, a[kk], pf_b_desc(sb + kk * PF_B_SLAB), e[kk]);
        pf_wgmma_commit();
        const bool flush = PF_CAND > 0 && has_ri && ((it + 1) % win_stages == 0 || it + 1 == kstages);
        if (flush) {
            pf_wgmma_wait<0>();
            if constexpr (PF_CAND > 0) {
                const unsigned char* ri = smem + s * PF_STAGE_BYTES + PF_B_BYTES + PF_A_BYTES + PF_M_BYTES;
                const int sel0 = ri[slab_row + g], sel1 = ri[slab_row + g + 8];
#pragma unroll
                for (int m = 0; m < PF_CAND; ++m) {
                    const float k0 = (sel0 == m) ? 1.0f : 0.0f, k1 = (sel1 == m) ? 1.0f : 0.0f;
#pragma unroll
                    for (int j = 0; j < PF_FN; ++j) {
                        // NOTE: select, not multiply: a product by 0 would turn -0 into +0 and keep NaN
                        cand[m][j][0] += k0 != 0.0f ? acc[j][0] : 0.0f;
                        cand[m][j][1] += k0 != 0.0f ? acc[j][1] : 0.0f;
                        cand[m][j][2] += k1 != 0.0f ? acc[j][2] : 0.0f;
                        cand[m][j][3] += k1 != 0.0f ? acc[j][3] : 0.0f;
                    }
                }
            }
#pragma unroll
            for (int j = 0; j < PF_FN; ++j)
#pragma unroll
                for (int q = 0; q < 4; ++q) acc[j][q] = 0.0f;
            __syncwarp();
            for (; released <= it; ++released)
                if (lane == 0) mbar_arrive(empty0 + 8 * (released % PF_STAGES));
        } else {
            pf_wgmma_wait<1>();  // the group of stage it-1 is complete: hand that stage back
            __syncwarp();
            for (; released < it; ++released)
                if (lane == 0) mbar_arrive(empty0 + 8 * (released % PF_STAGES));
        }
    }
    pf_wgmma_wait<0>();

    // Epilogue from registers: thread (g, t) holds compressed rows slab_row + g (+8) of tokens 8j + 2t (+1).
    const int crow0 = bm * PF_BM + slab_row + g;
    const bool pairs = ep.epilogue == 2 && !ep.out_f32 && (ep.ldo & 1) == 0 && ((unsigned long long)ep.out & 3ull) == 0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int cr = crow0 + 8 * h;
        if (cr >= crows) continue;
#pragma unroll
        for (int j = 0; j < PF_FN; ++j) {
#pragma unroll
            for (int qq = 0; qq < 2; ++qq) {
                const int n = 8 * j + 2 * t + qq;
                if (n >= cnt) continue;
                const i64 p = p0 + n;
                if (!has_ri) {
                    if (cr < rows) pf_store<BF16>(ep, p, cr, acc[j][2 * h + qq]);
                    continue;
                }
                if constexpr (PF_CAND > 0) {
                    const int r = cr * sel_m;
                    if (PF_CAND >= 2 && sel_m == 2 && pairs && r + 1 < rows) {
                        pf_store_pair<BF16>(ep, p, r, cand[0][j][2 * h + qq], cand[PF_CAND >= 2 ? 1 : 0][j][2 * h + qq]);
                        continue;
                    }
#pragma unroll
                    for (int m = 0; m < PF_CAND; ++m)
                        if (m < sel_m && r + m < rows) pf_store<BF16>(ep, p, r + m, cand[m][j][2 * h + qq]);
                }
            }
        }
    }
}
#else
#define PF_SM90 0
#endif

// ------------------------------------------------------------------------------------------ entry points
#define PF_ENTRY(NAME, BF16)                                                                                \
    extern "C" __global__ void __launch_bounds__(PF_THREADS, 1) NAME(                                       \
        const unsigned char* tiled, int kstages, const u16* x, int ldx, int x_rows, const int* token_idx,  \
        const int* tile_expert, const int* tile_start, const int* tile_count, int rows, int crows, int cols, \
        int sel_m, int vector, int has_ri, int epilogue, void* out, int ldo, int out_f32, const u16* up,   \
        const int* scatter_idx, const float* scale) {                                                      \
        PfEpilogue ep{epilogue, out, ldo, out_f32, up, scatter_idx, scale};                                 \
        if constexpr (PF_SM90) {                                                                            \
            pf_body_entry<BF16>(tiled, kstages, x, ldx, x_rows, token_idx, tile_expert, tile_start,         \
                                tile_count, rows, crows, cols, sel_m, vector, has_ri, ep);                  \
        } else {                                                                                            \
            __trap();                                                                                       \
        }                                                                                                   \
    }

template <bool BF16>
__device__ __forceinline__ void pf_body_entry(const unsigned char* tiled, int kstages, const u16* x, int ldx,
                                              int x_rows, const int* token_idx, const int* tile_expert,
                                              const int* tile_start, const int* tile_count, int rows, int crows,
                                              int cols, int sel_m, int vector, int has_ri, const PfEpilogue& ep) {
#if PF_SM90
    pf_body<BF16>(tiled, kstages, x, ldx, x_rows, token_idx, tile_expert, tile_start, tile_count, rows, crows, cols,
                  sel_m, vector, has_ri, ep);
#else
    __trap();
#endif
}

PF_ENTRY(ssmm_prefill_f16, false)
PF_ENTRY(ssmm_prefill_bf16, true)
