// one_warp_mma_sp.cu — layout probe for the first GPU job: one warp, one instruction, registers out.
//
// mma_sp_probe_{f16,bf16}_s{0,1}: every lane loads its own a[4], b[4] (32-bit words of two 16-bit
// values), c[4] (fp32) and e (metadata word) from global memory, issues exactly one
//   mma.sp(::ordered_metadata).sync.aligned.m16n8k32.row.col.f32.{f16,bf16}.{f16,bf16}.f32 d, a, b, c, e, f
// with selector f = 0 or 1, and writes d[4] back: d_out[lane][4]. The test compares d_out with
// samoyeds_lab.reference.mma_sp.mma_sp_m16n8k32 on the same per-lane registers.
//
// ldmatrix_probe: one warp stages a compressed 16x16 A tile and a 8x32 B tile (tokens x K) through the
// same XOR-swizzled shared-memory layouts and ldmatrix.x4 addressing as kernels/ssmm.cu, and writes the
// registers it got: a_out[lane][4], b_out[lane][4] (32-bit words). The test compares them with
// reference.mma_sp.pack_a / pack_b. Header-free, like the kernels.

typedef unsigned short u16;
typedef unsigned int u32;

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

#define PROBE(NAME, TYPES, SEL)                                                                             \
    extern "C" __global__ void NAME(const u32* a_in, const u32* b_in, const float* c_in, const u32* e_in, \
                                    float* d_out) {                                                        \
        const int l = threadIdx.x;                                                                          \
        u32 a0 = a_in[4 * l], a1 = a_in[4 * l + 1], a2 = a_in[4 * l + 2], a3 = a_in[4 * l + 3];            \
        u32 b0 = b_in[4 * l], b1 = b_in[4 * l + 1], b2 = b_in[4 * l + 2], b3 = b_in[4 * l + 3];            \
        float d0 = c_in[4 * l], d1 = c_in[4 * l + 1], d2 = c_in[4 * l + 2], d3 = c_in[4 * l + 3];          \
        u32 e = e_in[l];                                                                                    \
        asm volatile(MMA_SP TYPES " {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, "             \
                     "{%0, %1, %2, %3}, %12, " #SEL ";\n"                                                  \
                     : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)                                              \
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(b2), "r"(b3), "r"(e));  \
        d_out[4 * l] = d0;                                                                                  \
        d_out[4 * l + 1] = d1;                                                                              \
        d_out[4 * l + 2] = d2;                                                                              \
        d_out[4 * l + 3] = d3;                                                                              \
    }

PROBE(mma_sp_probe_f16_s0, ".f16.f16.f32", 0x0)
PROBE(mma_sp_probe_f16_s1, ".f16.f16.f32", 0x1)
PROBE(mma_sp_probe_bf16_s0, ".bf16.bf16.f32", 0x0)
PROBE(mma_sp_probe_bf16_s1, ".bf16.bf16.f32", 0x1)

__device__ __forceinline__ u32 smem_u32(const void* p) {
    unsigned long long a;
    asm volatile("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p));
    return (u32)a;
}
__device__ __forceinline__ void ldmatrix_x4(u32 (&r)[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
// the swizzles of kernels/ssmm.cu
__device__ __forceinline__ int a_off(int row, int chunk) { return row * 32 + ((chunk ^ ((row >> 2) & 1)) << 4); }
__device__ __forceinline__ int b_off(int tok, int chunk) { return tok * 64 + ((chunk ^ ((tok >> 1) & 3)) << 4); }

// a_tile: u16 [16][16] compressed values (row-major); b_tile: u16 [8][32] token rows (row-major).
extern "C" __global__ void ldmatrix_probe(const u16* a_tile, const u16* b_tile, u32* a_out, u32* b_out) {
    __shared__ __align__(16) unsigned char sa[16 * 32];
    __shared__ __align__(16) unsigned char sb[8 * 64];
    const int l = threadIdx.x;
    for (int i = l; i < 16 * 16; i += 32) {
        const int r = i / 16, c = i % 16;
        *(u16*)(sa + a_off(r, c / 8) + 2 * (c % 8)) = a_tile[i];
    }
    for (int i = l; i < 8 * 32; i += 32) {
        const int n = i / 32, k = i % 32;
        *(u16*)(sb + b_off(n, k / 8) + 2 * (k % 8)) = b_tile[i];
    }
    __syncthreads();
    u32 a[4], b[4];
    ldmatrix_x4(a, smem_u32(sa + a_off(l & 15, l >> 4)));
    ldmatrix_x4(b, smem_u32(sb + b_off(l & 7, l >> 3)));
    for (int i = 0; i < 4; ++i) {
        a_out[4 * l + i] = a[i];
        b_out[4 * l + i] = b[i];
    }
}
