// one_warpgroup_wgmma_sp.cu — layout probe for Hopper (sm_90a only): one warpgroup, one instruction.
//
// wgmma_sp_probe_{f16,bf16}_s{0,1}: each of the 128 threads loads its own a[4] (32-bit words of two 16-bit
// compressed A values), e (metadata word) and c[32] (fp32 accumulators) from global memory; the block
// copies `b_img` (the B operand already laid out by samoyeds_lab.reference.wgmma.store_k_major in the
// K-major 64-byte-swizzle layout, relative to a 1024-byte-aligned base) into shared memory rounded up to a
// 1024-byte boundary, builds the descriptor exactly as kernels/ssmm.cu's b_desc does (LBO 16 B, SBO 512 B,
// layout type 2), issues one
//   wgmma.mma_async.sp.sync.aligned.m64n64k32.f32.{f16,bf16}.{f16,bf16} d, a, b-desc, e, sel, 1, 1, 1, 0
// and writes d[32] per thread. The test compares with reference.wgmma.wgmma_sp_m64nNk32. Header-free.
//
// wgmma_sp_probe_at_{f16,bf16}: the same with selector 0 and B placed `b_offset` bytes past the 1024-aligned
// base (a multiple of 512, the 64-byte swizzle's repeat): kernels/ssmm.cu's B stages sit at such offsets
// (stage s at s·STAGE_BYTES + A_STAGE_BYTES, e.g. +4096 and +12800 with the default tiles), and the
// descriptor's start address is the only thing that moves. `b_img` is then the image of the window
// [base, base + b_offset + 4096), also from store_k_major (with that start address).

typedef unsigned int u32;

#define B_BYTES (64 * 64)  // 64 tokens x 32 halves

__device__ __forceinline__ u32 smem_u32(const void* p) {
    unsigned long long a;
    asm volatile("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p));
    return (u32)a;
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WGMMA_PROBE_ASM(TYPES, SEL)                                                                          \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"                                               \
                 "wgmma.mma_async.sp.sync.aligned.m64n64k32.f32" TYPES " "                                   \
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                    \
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "          \
                 "{%32, %33, %34, %35}, %36, %37, " #SEL ", p, 1, 1, 0;\n}\n"                                \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),        \
                   "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),    \
                   "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), \
                   "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), \
                   "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])                                         \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(e), "r"(1))
#define WGMMA_PROBE_BODY(TYPES, SEL)                                                                         \
    fence_and_sync();                                                                                        \
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");                                                \
    WGMMA_PROBE_ASM(TYPES, SEL);                                                                             \
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");                                         \
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
__device__ __forceinline__ void fence_and_sync() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
}
#else
#define WGMMA_PROBE_BODY(TYPES, SEL) __trap();
#endif

#define PROBE_AT(NAME, TYPES)                                                                                \
    extern "C" __global__ void __launch_bounds__(128)                                                       \
        NAME(const u32* a_in, const u32* e_in, const float* c_in, const u32* b_img, float* d_out,           \
             int b_offset) {                                                                                \
        extern __shared__ __align__(16) unsigned char smem_raw[];                                           \
        unsigned char* base = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);                    \
        const int l = threadIdx.x;                                                                          \
        for (int i = l; i < (b_offset + B_BYTES) / 4; i += 128) ((u32*)base)[i] = b_img[i];                \
        u32 a[4] = {a_in[4 * l], a_in[4 * l + 1], a_in[4 * l + 2], a_in[4 * l + 3]};                      \
        const u32 e = e_in[l];                                                                              \
        float d[32];                                                                                        \
        for (int i = 0; i < 32; ++i) d[i] = c_in[32 * l + i];                                               \
        const u32 addr = smem_u32(base) + (u32)b_offset;                                                    \
        const unsigned long long desc = (unsigned long long)((addr & 0x3FFFF) >> 4) | (1ull << 16) |        \
                                        ((unsigned long long)(512 >> 4) << 32) | (2ull << 62);             \
        WGMMA_PROBE_BODY(TYPES, 0)                                                                          \
        for (int i = 0; i < 32; ++i) d_out[32 * l + i] = d[i];                                              \
    }

#define PROBE(NAME, TYPES, SEL)                                                                              \
    extern "C" __global__ void __launch_bounds__(128)                                                       \
        NAME(const u32* a_in, const u32* e_in, const float* c_in, const u32* b_img, float* d_out) {          \
        extern __shared__ __align__(16) unsigned char smem_raw[];                                           \
        unsigned char* sb = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);                      \
        const int l = threadIdx.x;                                                                          \
        for (int i = l; i < B_BYTES / 4; i += 128) ((u32*)sb)[i] = b_img[i];                               \
        u32 a[4] = {a_in[4 * l], a_in[4 * l + 1], a_in[4 * l + 2], a_in[4 * l + 3]};                      \
        const u32 e = e_in[l];                                                                              \
        float d[32];                                                                                        \
        for (int i = 0; i < 32; ++i) d[i] = c_in[32 * l + i];                                               \
        const u32 addr = smem_u32(sb);                                                                      \
        const unsigned long long desc = (unsigned long long)((addr & 0x3FFFF) >> 4) | (1ull << 16) |        \
                                        ((unsigned long long)(512 >> 4) << 32) | (2ull << 62);             \
        WGMMA_PROBE_BODY(TYPES, SEL)                                                                        \
        for (int i = 0; i < 32; ++i) d_out[32 * l + i] = d[i];                                              \
    }

PROBE(wgmma_sp_probe_f16_s0, ".f16.f16", 0)
PROBE(wgmma_sp_probe_f16_s1, ".f16.f16", 1)
PROBE(wgmma_sp_probe_bf16_s0, ".bf16.bf16", 0)
PROBE(wgmma_sp_probe_bf16_s1, ".bf16.bf16", 1)
PROBE_AT(wgmma_sp_probe_at_f16, ".f16.f16")
PROBE_AT(wgmma_sp_probe_at_bf16, ".bf16.bf16")
