// sptc_common.cuh — what kernels/spmm.cu, ssmm.cu and dense_mm.cu share: tile constants, the cp.async
// pipeline, ldmatrix, mma.sp / mma.sync, fp16/bf16 conversions and the swizzled B-stage layout.
//
// Included by every kernel family; NVRTC gets it as a named in-memory header (samoyeds_lab/kernels/build.py,
// whose compile cache key hashes this file too), nvcc finds it beside the .cu file. Header-free itself:
// no CUDA toolkit header is needed (fp16/bf16 values travel as u16 bit patterns).
//
// Tile constants arrive as -D defines from samoyeds_lab/tiles.py; the #ifndef defaults below are the same
// numbers so a bare `nvcc kernels/<family>.cu` agrees (tests/kernels/test_compile.py checks both).
#pragma once

#ifndef BLOCK_M
#define BLOCK_M 128
#endif
#ifndef BLOCK_N
#define BLOCK_N 64
#endif
#ifndef BLOCK_K
#define BLOCK_K 32
#endif
#ifndef WARPS_M
#define WARPS_M 2
#endif
#ifndef WARPS_N
#define WARPS_N 2
#endif
#ifndef MMA_M
#define MMA_M 16
#endif
#ifndef MMA_N
#define MMA_N 8
#endif
#ifndef MMA_K
#define MMA_K 32
#endif
#ifndef STAGES
#define STAGES 2
#endif
#ifndef ACC_PAD
#define ACC_PAD 4
#endif
#ifndef SENTINEL
#define SENTINEL (-1)
#endif

#define WARP_SIZE 32
#define THREADS (WARPS_M * WARPS_N * WARP_SIZE)
#define WARP_TILE_M (BLOCK_M / WARPS_M)
#define WARP_TILE_N (BLOCK_N / WARPS_N)
#define FRAGS_M (WARP_TILE_M / MMA_M)
#define FRAGS_N (WARP_TILE_N / MMA_N)
#define B_STAGE_BYTES (BLOCK_N * MMA_K * 2)         // [BLOCK_N][32] halves of gathered tokens per k-step
#define PAD_WORD 0x44444444u                        // metadata of an all-zero 16x32 tile (nibble 0x4 = {0, 1})

static_assert(BLOCK_K == MMA_K, "one pipeline stage is one m16n8k32 k-step");
static_assert(MMA_M == 16 && MMA_N == 8 && MMA_K == 32, "m16n8k32 fragments are hard-coded in the kernels");
static_assert(BLOCK_M % (WARPS_M * MMA_M) == 0 && BLOCK_N % (WARPS_N * MMA_N) == 0, "warp tiling");
static_assert(STAGES >= 2, "cp.async pipeline needs >= 2 stages");

// PTX ISA 8.5 (CUDA 12.5) introduced mma.sp::ordered_metadata; older toolchains only know plain .sp.
#ifndef SAMOYEDS_ORDERED_METADATA
#if defined(__CUDACC_VER_MAJOR__) && (__CUDACC_VER_MAJOR__ > 12 || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ >= 5))
#define SAMOYEDS_ORDERED_METADATA 1
#else
#define SAMOYEDS_ORDERED_METADATA 0
#endif
#endif
#if SAMOYEDS_ORDERED_METADATA
#define MMA_SP "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32"
#else
#define MMA_SP "mma.sp.sync.aligned.m16n8k32.row.col.f32"
#endif

typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

// ------------------------------------------------------------------------------------------ shared memory
__device__ __forceinline__ u32 smem_u32(const void* p) {
    unsigned long long a;
    asm volatile("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p));
    return (u32)a;
}
__device__ __forceinline__ void st_shared_zero16(u32 dst) {
    asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(dst), "r"(0u));
}
__device__ __forceinline__ void st_shared_u16(u32 dst, u16 v) {
    asm volatile("st.shared.u16 [%0], %1;\n" ::"r"(dst), "h"(v));
}
__device__ __forceinline__ void st_shared_u32(u32 dst, u32 v) {
    asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(dst), "r"(v));
}

// Byte offset of 16-byte chunk `chunk` (0..3) of token row `tok` in a B stage: 64-byte rows, chunks XOR
// (tok >> 1) & 3 so ldmatrix is conflict-free (also the wgmma K-major 64-byte-swizzle layout, see ssmm.cu).
__device__ __forceinline__ int b_off(int tok, int chunk) { return tok * 64 + ((chunk ^ ((tok >> 1) & 3)) << 4); }

// ------------------------------------------------------------------------------------------ cp.async pipeline
// 16-byte async copy; bytes past `src_bytes` are zero-filled (src_bytes == 0 reads nothing).
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// ------------------------------------------------------------------------------------------ fragments
__device__ __forceinline__ void ldmatrix_x4(u32 (&r)[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// d += A(2:4, 16x32 stored as 16x16) · B(32x8); `e` is this lane's metadata register, sparsity selector 0.
template <bool BF16>
__device__ __forceinline__ void mma_sp_16832(float (&d)[4], const u32 (&a)[4], const u32 (&b)[4], u32 e) {
    if (BF16) {
        asm volatile(MMA_SP ".bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, "
                     "{%0, %1, %2, %3}, %12, 0x0;\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]),
                       "r"(e));
    } else {
        asm volatile(MMA_SP ".f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, "
                     "{%0, %1, %2, %3}, %12, 0x0;\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]),
                       "r"(e));
    }
}

// d += A(16x16, dense) · B(16x8): the dense baseline's instruction (two per 32-wide k-step).
template <bool BF16>
__device__ __forceinline__ void mma_16816(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    if (BF16) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    } else {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
}

// ------------------------------------------------------------------------------------------ fp16 / bf16
template <bool BF16>
__device__ __forceinline__ float to_float(u16 h) {
    if (BF16) return __uint_as_float(((u32)h) << 16);
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
template <bool BF16>
__device__ __forceinline__ u16 from_float(float f) {
    u16 h;
    if (BF16) asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    else asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// ------------------------------------------------------------------------------------------ 16-bit scatter-add
// Scatter-add into a 16-bit output. Where one thread owns two adjacent columns (4-byte aligned), one
// paired reduction adds both: red.global.add.noftz.f16x2 (sm_53+) / .bf16x2 (sm_90+). Single columns use
// red.global.add.noftz.f16 / .bf16 (sm_90+). Only bf16 below sm_90 (no bf16 red there) keeps a 32-bit CAS
// loop, which then updates both halves of the word at once. NOTE: red adds the 16-bit rounded addend
// (v is rounded to fp16/bf16 first, then the sum), the CAS loop rounds once; both stay within the dtype's
// tolerance of the fp32 reference.
template <bool BF16>
__device__ __forceinline__ void red_add_16(u16* addr, float v) {
    const u16 h = from_float<BF16>(v);
    if (!BF16) {
        asm volatile("red.global.add.noftz.f16 [%0], %1;\n" ::"l"(addr), "h"(h) : "memory");
        return;
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("red.global.add.noftz.bf16 [%0], %1;\n" ::"l"(addr), "h"(h) : "memory");
#else
    u32* word = (u32*)((unsigned long long)addr & ~3ull);
    const u32 shift = ((unsigned long long)addr & 2ull) ? 16u : 0u;
    u32 old = *word, assumed;
    do {
        assumed = old;
        const u16 cur = (u16)((assumed >> shift) & 0xFFFFu);
        const u16 nxt = from_float<BF16>(to_float<BF16>(cur) + v);
        const u32 upd = (assumed & ~(0xFFFFu << shift)) | ((u32)nxt << shift);
        old = atomicCAS(word, assumed, upd);
    } while (old != assumed);
#endif
}

// addr[0] += lo, addr[1] += hi on two adjacent 16-bit floats; `addr` is 4-byte aligned.
template <bool BF16>
__device__ __forceinline__ void red_add_16x2(u16* addr, float lo, float hi) {
    const u32 packed = (u32)from_float<BF16>(lo) | ((u32)from_float<BF16>(hi) << 16);  // lower address: low half
    if (!BF16) {
        asm volatile("red.global.add.noftz.f16x2 [%0], %1;\n" ::"l"(addr), "r"(packed) : "memory");
        return;
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("red.global.add.noftz.bf16x2 [%0], %1;\n" ::"l"(addr), "r"(packed) : "memory");
#else
    u32* word = (u32*)addr;
    u32 old = *word, assumed;
    do {
        assumed = old;
        const u32 a = from_float<BF16>(to_float<BF16>((u16)(assumed & 0xFFFFu)) + lo);
        const u32 b = from_float<BF16>(to_float<BF16>((u16)(assumed >> 16)) + hi);
        old = atomicCAS(word, assumed, a | (b << 16));
    } while (old != assumed);
#endif
}
