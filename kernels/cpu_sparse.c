/* cpu_sparse.c — the CPU kernels of samoyeds-lab: sparse expert GEMMs straight from the compressed operand.
 *
 * One source, compiled three ways by samoyeds_lab/kernels/cpu.py with the machine's C compiler
 * (never downloaded; cached on disk):
 *   SL_ISA=512 : AVX-512 F/BW/VL + AVX512_BF16   (-mavx512f -mavx512bw -mavx512vl -mavx512bf16 -mfma -mf16c)
 *   SL_ISA=2   : AVX2 + FMA + F16C               (-mavx2 -mfma -mf16c)
 *                (vpshufb gathers of bf16 x; vpermps of fp32 x below 4 tokens, from 4 a per-call dense fp32 tile of
 *                 each row block, sl_worker_x)
 *   SL_ISA=0   : portable C                       (any compiler, any CPU: aarch64 included)
 *
 * What is computed (W the dense [rows, K] weight the operand stands for, xg the gathered tokens):
 *     y[t, r] += sum_k W[r, k] * xg[t, k]       fp32 accumulation, y [T, rows] fp32 (zeroed by the caller)
 * The dense W is never built: every 2:4 group contributes its two kept values times the two x columns
 * named by its metadata.
 *
 * The CPU layout of the operand (built once per weight by cpu.py, see its docstring) is cut into
 * 32-column *units* (8 groups of 4 columns, 16 kept values):
 *   vals  [crows, upr*16]  kept values; natural order, except the AVX-512 bf16 layout, which interleaves
 *                          the two units of each pair at 2-value granularity (pair lane j holds value
 *                          (j&1)|((j>>2)<<1) of unit (j>>1)&1) so that one broadcast 64-bit metadata word
 *                          decodes to the 32 gather indices of the pair in two instructions.
 *   meta  [crows, upr]     one uint32 per unit: bits 2g..2g+1 = first kept position of group g,
 *                          bits 16+2g..17+2g = second kept position (the same 4 bits per group as the
 *                          format's metadata, in another order).
 *   The AVX2 "lanes" layout (SL_LANES) reorders both, same bytes: meta byte j holds the four kept positions
 *   of groups 2j and 2j+1 (the 8 columns of one 128-bit lane of 16-bit x), p0(2j) | p0(2j+1) << 2 |
 *   p1(2j) << 4 | p1(2j+1) << 6, so it indexes a table of vpshufb controls directly; bf16 values
 *   interleave the unit's two halves (16-bit slot 2d = value d, slot 2d+1 = value 8+d), so one 32-byte load
 *   gives both halves in fp32 with one shift and one and.
 *   rsel  [crows, W]       Samoyeds only: per V-window, which row of its m-group the compressed row stands
 *                          for (the format's row_index, transposed so a row's windows are contiguous).
 * Windows of a compressed row are visited grouped by candidate row (all windows of candidate 0 of a
 * K-block, then candidate 1, ...), so one set of accumulators serves a whole run of windows and is reduced
 * once per run: no per-window routing of partial sums.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if SL_ISA > 0
#include <immintrin.h>
#endif

#ifndef SL_ISA
#define SL_ISA 0
#endif

#define SL_TB 4        /* tokens per block (their x slices stay in L1)                    */
#ifndef SL_RB
#define SL_RB 32       /* compressed rows per block (their weights stay in L2)            */
#endif
#ifndef SL_KCOLS
#define SL_KCOLS 4096  /* columns per K-block for 16-bit x (2048 for fp32 x): 4 tokens x ~ 32 KB */
#endif

enum { SL_F32 = 0, SL_F16 = 1, SL_BF16 = 2 };
enum { SL_NATURAL = 0, SL_PAIR = 1, SL_LANES = 2 }; /* operand layouts (sl_args.layout) */

typedef struct {
    const void *vals;      /* [crows, upr*16] CPU layout                                  */
    const uint32_t *meta;  /* [crows, upr]                                                */
    const uint8_t *rsel;   /* [crows, W] candidate row per window, or NULL (plain 2:4)    */
    const void *x;         /* [T, ldx] gathered tokens, 64-byte aligned rows, zero padded */
    float *y;              /* [T, ldy] fp32 output (accumulated into)                     */
    int64_t crows, rows, upr, upw, nwin, n, m;
    int64_t vdtype, xdtype, T, ldx, ldy, nthreads, layout;
} sl_args;

/* ------------------------------------------------------------------------------------------ helpers */
static inline float sl_half_to_float(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, f = h & 0x3ff, bits;
    if (e == 0) {
        if (f == 0) {
            bits = s;
        } else { /* subnormal */
            int sh = 0;
            while (!(f & 0x400)) { f <<= 1; sh++; }
            f &= 0x3ff;
            bits = s | ((uint32_t)(113 - sh) << 23) | (f << 13);
        }
    } else if (e == 31) {
        bits = s | 0x7f800000u | (f << 13);
    } else {
        bits = s | ((e + 112) << 23) | (f << 13);
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

static inline float sl_bf16_to_float(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

static inline float sl_load_val(const void *vals, int64_t i, int64_t vdtype) {
    if (vdtype == SL_F32) return ((const float *)vals)[i];
    if (vdtype == SL_F16) return sl_half_to_float(((const uint16_t *)vals)[i]);
    return sl_bf16_to_float(((const uint16_t *)vals)[i]);
}

/* Kept position (0..3) of slot s of group g in a unit's metadata word md. */
static inline int sl_pos(const sl_args *a, uint32_t md, int g, int s) {
    return (int)(a->layout == SL_LANES ? (md >> (8 * (g >> 1) + 4 * s + 2 * (g & 1))) & 3 : (md >> (16 * s + 2 * g)) & 3);
}
/* Slot of value v (natural order: 2g + s) among its unit's 16 (SL_LANES bf16: halves interleaved). */
static inline int sl_vslot(const sl_args *a, int v) {
    return a->layout == SL_LANES && a->vdtype == SL_BF16 ? (v < 8 ? 2 * v : 2 * v - 15) : v;
}

/* The dense row a compressed row c stands for in a window whose candidate code is r. */
static inline int64_t sl_dense_row(const sl_args *a, int64_t c, int64_t r) {
    return a->rsel ? (c / a->n) * a->m + r : c;
}

/* Bit masks of the windows [w0, w0+nw) (nw <= 64) of compressed row c whose candidate is r, r < m. */
static inline void sl_window_masks(const sl_args *a, int64_t c, int64_t w0, int64_t nw, int64_t m, uint64_t *masks) {
    for (int64_t r = 0; r < m; ++r) masks[r] = 0;
    if (!a->rsel) {
        masks[0] = nw >= 64 ? ~0ull : ((1ull << nw) - 1);
        return;
    }
    const uint8_t *rs = a->rsel + c * a->nwin + w0;
#if SL_ISA >= 512
    const __mmask64 live = nw >= 64 ? ~0ull : ((1ull << nw) - 1);
    const __m512i v = _mm512_maskz_loadu_epi8(live, rs);
    for (int64_t r = 0; r < m; ++r) masks[r] = _mm512_mask_cmpeq_epi8_mask(live, v, _mm512_set1_epi8((char)r));
#elif SL_ISA == 2
    /* byte compares, 32 windows per instruction (the scalar masks[rs[w]] |= ... chains every window through a
     * store and a reload: about 6 cycles a window, 0.5 ns per unit at V = 128) */
    uint8_t buf[64] __attribute__((aligned(32)));
    memset(buf, 0xFF, sizeof buf);
    memcpy(buf, rs, (size_t)nw);
    const __m256i lo = _mm256_load_si256((const __m256i *)buf), hi = _mm256_load_si256((const __m256i *)(buf + 32));
    const uint64_t live = nw >= 64 ? ~0ull : ((1ull << nw) - 1);
    for (int64_t r = 0; r < m; ++r) {
        const __m256i rv = _mm256_set1_epi8((char)r);
        masks[r] = ((uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(lo, rv)) |
                    ((uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(hi, rv)) << 32)) & live;
    }
#else
    for (int64_t w = 0; w < nw; ++w) masks[rs[w]] |= 1ull << w;
#endif
}

/* ------------------------------------------------------------------------------------------ portable */
/* One run of windows (all of candidate r in one K-block) for tb tokens, scalar C (tokens in fp32): per unit
 * the 16 kept values and their columns are decoded once, then every token multiplies them. */
static void sl_run_portable(const sl_args *a, int64_t c, int64_t w0, uint64_t wmask, int64_t t0, int64_t tb, const char **pf,
                            float *acc) {
    const char *pfp = pf ? *pf : NULL;
    const int64_t pstep = a->vdtype == SL_F32 ? 64 : 32; /* value bytes per unit */
    const int64_t upw = a->upw, upr = a->upr, ldx = a->ldx;
    const float *x = (const float *)a->x + t0 * ldx;
    float wv[16];
    int32_t col[16];
    for (int64_t t = 0; t < tb; ++t) acc[t] = 0.f;
    for (uint64_t bits = wmask; bits; bits &= bits - 1) {
        int64_t u = (w0 + __builtin_ctzll(bits)) * upw;
        const int64_t ue = u + upw < upr ? u + upw : upr;
        for (; u < ue; ++u) {
            const uint32_t md = a->meta[c * upr + u];
            const int64_t vbase = (c * upr + u) * 16;
            if (pfp) { __builtin_prefetch(pfp, 0, 3); pfp += pstep; }
            for (int v = 0; v < 16; ++v) {
                const int g = v >> 1, s = v & 1;
                col[v] = (int32_t)(u * 32 + 4 * g + sl_pos(a, md, g, s));
                wv[v] = sl_load_val(a->vals, vbase + sl_vslot(a, v), a->vdtype);
            }
            for (int64_t t = 0; t < tb; ++t) {
                const float *xt = x + t * ldx;
                float s0 = 0.f, s1 = 0.f;
                for (int v = 0; v < 16; v += 2) {
                    s0 += wv[v] * xt[col[v]];
                    s1 += wv[v + 1] * xt[col[v + 1]];
                }
                acc[t] += s0 + s1;
            }
        }
    }
    if (pf) *pf = pfp;
}

/* One entry per body with TB (tokens) a compile-time constant in every instance. */
#define SL_DISPATCH(NAME, BODY)                                                                          \
    static void NAME(const sl_args *a, int64_t c, int64_t w0, uint64_t wmask, int64_t t0, int64_t tb,    \
                     const char **pf, float *out) {                                                     \
        switch (tb) {                                                                                    \
            case 1: BODY(a, c, w0, wmask, t0, 1, pf, out); break;                                        \
            case 2: BODY(a, c, w0, wmask, t0, 2, pf, out); break;                                        \
            case 3: BODY(a, c, w0, wmask, t0, 3, pf, out); break;                                        \
            default: BODY(a, c, w0, wmask, t0, 4, pf, out); break;                                       \
        }                                                                                                \
    }
/* ------------------------------------------------------------------------------------------ AVX2 */
#if SL_ISA == 2
static inline __m256 sl_vals8(const void *vals, int64_t i, int64_t vdtype) {
    if (vdtype == SL_F32) return _mm256_loadu_ps((const float *)vals + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)vals + i));
    if (vdtype == SL_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
/* The unit's 16 values at vbase as two halves of 8 (natural order) in fp32. */
static inline __attribute__((always_inline)) void sl_vals16(const sl_args *a, int64_t vbase, __m256 *v0, __m256 *v1) {
    if (a->layout == SL_LANES && a->vdtype == SL_BF16) { /* halves interleaved: slot 2d = value d, 2d+1 = 8+d */
        const __m256i v = _mm256_loadu_si256((const __m256i *)((const uint16_t *)a->vals + vbase));
        *v0 = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        *v1 = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xFFFF0000u)));
    } else {
        *v0 = sl_vals8(a->vals, vbase, a->vdtype);
        *v1 = sl_vals8(a->vals, vbase + 8, a->vdtype);
    }
}

static inline float sl_hsum8(__m256 v) {
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

/* fp32 x; per unit two halves of 8 values, each gathered from 16 columns (two ymm) by two vpermps.
 * TB is a compile-time constant; named accumulators (a0-a3 per token, and b0/b1 for the second half with
 * one or two tokens, so each token has two dependency chains) stay in registers. */
static inline __attribute__((always_inline)) void sl_avx2_body(const sl_args *a, int64_t c, int64_t w0,
                                                               uint64_t wmask, int64_t t0, const int TB,
                                                               const char **pf, float *out) {
    const int64_t upw = a->upw, upr = a->upr, ldx = a->ldx;
    const char *pfp = pf ? *pf : NULL;
    const int64_t pstep = a->vdtype == SL_F32 ? 64 : 32; /* value bytes per unit */
    const __m256i three = _mm256_set1_epi32(3);
    const __m256i base = _mm256_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12);
    /* where the kept position of value i of each half sits in the metadata word (sl_pos) */
    const int lanes = a->layout == SL_LANES;
    const __m256i sh0 = lanes ? _mm256_setr_epi32(0, 4, 2, 6, 8, 12, 10, 14) : _mm256_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22);
    const __m256i sh1 = lanes ? _mm256_setr_epi32(16, 20, 18, 22, 24, 28, 26, 30)
                              : _mm256_setr_epi32(8, 24, 10, 26, 12, 28, 14, 30);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0;
    const float *x = (const float *)a->x + t0 * ldx;
    const uint32_t *meta = a->meta + c * upr;
#define SL_G2(t, IDX, H)                                                                                 \
    _mm256_blend_ps(_mm256_permutevar8x32_ps(_mm256_load_ps(xp + (t) * ldx + 16 * (H)), IDX),            \
                    _mm256_permutevar8x32_ps(_mm256_load_ps(xp + (t) * ldx + 16 * (H) + 8), IDX), 0xF0)
    for (uint64_t bits = wmask; bits; bits &= bits - 1) {
        int64_t u = (w0 + __builtin_ctzll(bits)) * upw;
        const int64_t ue = u + upw < upr ? u + upw : upr;
        for (; u < ue; ++u) {
            const __m256i md = _mm256_set1_epi32((int)meta[u]);
            const int64_t vbase = (c * upr + u) * 16;
            const float *xp = x + u * 32;
            const __m256i i0 = _mm256_add_epi32(_mm256_and_si256(_mm256_srlv_epi32(md, sh0), three), base);
            const __m256i i1 = _mm256_add_epi32(_mm256_and_si256(_mm256_srlv_epi32(md, sh1), three), base);
            __m256 v0, v1;
            sl_vals16(a, vbase, &v0, &v1);
            if (pfp) { __builtin_prefetch(pfp, 0, 3); pfp += pstep; } /* as much ahead as consumed */
            a0 = _mm256_fmadd_ps(v0, SL_G2(0, i0, 0), a0);
            if (TB >= 2) a1 = _mm256_fmadd_ps(v0, SL_G2(1, i0, 0), a1);
            if (TB >= 3) a2 = _mm256_fmadd_ps(v0, SL_G2(2, i0, 0), a2);
            if (TB >= 4) a3 = _mm256_fmadd_ps(v0, SL_G2(3, i0, 0), a3);
            if (TB <= 2) {
                b0 = _mm256_fmadd_ps(v1, SL_G2(0, i1, 1), b0);
                if (TB == 2) b1 = _mm256_fmadd_ps(v1, SL_G2(1, i1, 1), b1);
            } else {
                a0 = _mm256_fmadd_ps(v1, SL_G2(0, i1, 1), a0);
                a1 = _mm256_fmadd_ps(v1, SL_G2(1, i1, 1), a1);
                a2 = _mm256_fmadd_ps(v1, SL_G2(2, i1, 1), a2);
                if (TB >= 4) a3 = _mm256_fmadd_ps(v1, SL_G2(3, i1, 1), a3);
            }
        }
    }
#undef SL_G2
    if (pf) *pf = pfp;
    out[0] = sl_hsum8(_mm256_add_ps(a0, b0));
    if (TB >= 2) out[1] = sl_hsum8(_mm256_add_ps(a1, b1));
    if (TB >= 3) out[2] = sl_hsum8(a2);
    if (TB >= 4) out[3] = sl_hsum8(a3);
}
SL_DISPATCH(sl_run_avx2, sl_avx2_body)

/* Several tokens (sl_worker_x): the kept values are expanded once per call into the dense columns they stand
 * for (per 8-column chunk one vpermps of 4 values and a zero, the lanes from a table), then every token
 * multiplies dense x slices with plain FMAs: twice the multiply-adds of the kept values, but no shuffle per
 * token. sl_xlut[e][j]: for the two groups of an 8-column chunk whose kept positions are e = p0(a) | p0(b) << 2 |
 * p1(a) << 4 | p1(b) << 6, which lane of [va0, va1, vb0, vb1, 0, ...] dense column j takes (4: the zero). */
static int32_t sl_xlut[256][8] __attribute__((aligned(32)));
static uint8_t sl_blut[256][16] __attribute__((aligned(64)));
static pthread_once_t sl_xlut_once = PTHREAD_ONCE_INIT;
static void sl_xlut_init(void) {
    for (int e = 0; e < 256; ++e)
        for (int j = 0; j < 8; ++j) {
            const int g = j >> 2, q = j & 3, p0 = (e >> (2 * g)) & 3, p1 = (e >> (4 + 2 * g)) & 3;
            sl_xlut[e][j] = p0 == q ? 2 * g : (p1 == q ? 2 * g + 1 : 4);
        }
    /* sl_blut[e]: dword i of the lane takes value i (group i >> 1 of the lane, slot i & 1): bytes [0x80, 0x80,
     * 2col, 2col+1], col its column among the lane's 8 */
    for (int e = 0; e < 256; ++e)
        for (int i = 0; i < 4; ++i) {
            const int g = i >> 1, col = 4 * g + ((e >> (4 * (i & 1) + 2 * g)) & 3);
            sl_blut[e][4 * i] = 0x80;
            sl_blut[e][4 * i + 1] = 0x80;
            sl_blut[e][4 * i + 2] = (uint8_t)(2 * col);
            sl_blut[e][4 * i + 3] = (uint8_t)(2 * col + 1);
        }
}
/* the 16 bits of x spread to one nibble per byte */
static inline uint32_t sl_nibbles(uint32_t x) {
    x = (x | (x << 8)) & 0x00FF00FFu;
    return (x | (x << 4)) & 0x0F0F0F0Fu;
}

/* bf16 tokens, any number of them (the SL_LANES layout): a 128-bit lane of 16 bf16 x columns holds the 8 columns
 * of two groups, so one vpshufb per 8 kept values and token picks their 4 + 4 x values straight into the high
 * halves of fp32 lanes (the exact bf16 -> fp32 conversion for free): one x load, one shuffle, one FMA. The
 * shuffle controls come from sl_blut, indexed by the metadata bytes (two 16-byte loads per half unit); this
 * beat computing them from the metadata word with variable shifts (about 4.1 -> 2.6 ns per unit with the
 * weights in cache, Zen 2), whose shift and shuffle uops queue on the same two pipes as the gathers.
 * VB: bf16 values (interleaved halves, one load); else fp16 / fp32 values in natural order. TB <= 2 alternate
 * two accumulator sets over the units of a window, so no FMA waits on the previous unit's. */
static inline __m256i sl_bctl(uint32_t lo, uint32_t hi) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_load_si128((const __m128i *)sl_blut[lo])),
                                   _mm_load_si128((const __m128i *)sl_blut[hi]), 1);
}
static inline __attribute__((always_inline)) void sl_avx2b_body(const sl_args *a, int64_t c, int64_t w0,
                                                                uint64_t wmask, int64_t t0, const int TB,
                                                                const int VB, const char **pf, float *out) {
    const int64_t upw = a->upw, upr = a->upr, ldx = a->ldx;
    const char *pfp = pf ? *pf : NULL;
    const int64_t pstep = !VB && a->vdtype == SL_F32 ? 64 : 32; /* value bytes per unit */
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    const uint16_t *x = (const uint16_t *)a->x + t0 * ldx;
    const uint32_t *meta = a->meta + c * upr;
    const int64_t vrow = c * upr * 16;
    const uint16_t *vr = (const uint16_t *)a->vals + vrow; /* 16-bit values of the row (VB) */
    const __m256i hmask = _mm256_set1_epi32((int)0xFFFF0000u);
#define SL_BG(t, H, CTL) _mm256_castsi256_ps(_mm256_shuffle_epi8(                                        \
        _mm256_load_si256((const __m256i *)(xp + (t) * ldx + 16 * (H))), CTL))
    /* unit UU into accumulators P* (token 0..3, first half) and Q* (second half) */
#define SL_BU(UU, P0, Q0, P1, Q1, P2, Q2, P3, Q3)                                                          \
    do {                                                                                                 \
        const int64_t u_ = (UU);                                                                         \
        const uint16_t *xp = x + u_ * 32;                                                                \
        const uint32_t w_ = meta[u_];                                                                    \
        const __m256i k0 = sl_bctl(w_ & 255, (w_ >> 8) & 255), k1 = sl_bctl((w_ >> 16) & 255, w_ >> 24); \
        __m256 v0, v1;                                                                                   \
        if (VB) {                                                                                        \
            const __m256i v_ = _mm256_loadu_si256((const __m256i *)(vr + u_ * 16));                      \
            v0 = _mm256_castsi256_ps(_mm256_slli_epi32(v_, 16));                                         \
            v1 = _mm256_castsi256_ps(_mm256_and_si256(v_, hmask));                                       \
        } else {                                                                                         \
            v0 = sl_vals8(a->vals, vrow + u_ * 16, a->vdtype);                                           \
            v1 = sl_vals8(a->vals, vrow + u_ * 16 + 8, a->vdtype);                                       \
        }                                                                                                \
        P0 = _mm256_fmadd_ps(v0, SL_BG(0, 0, k0), P0);                                                   \
        Q0 = _mm256_fmadd_ps(v1, SL_BG(0, 1, k1), Q0);                                                   \
        if (TB >= 2) {                                                                                   \
            P1 = _mm256_fmadd_ps(v0, SL_BG(1, 0, k0), P1);                                               \
            Q1 = _mm256_fmadd_ps(v1, SL_BG(1, 1, k1), Q1);                                               \
        }                                                                                                \
        if (TB >= 3) {                                                                                   \
            P2 = _mm256_fmadd_ps(v0, SL_BG(2, 0, k0), P2);                                               \
            Q2 = _mm256_fmadd_ps(v1, SL_BG(2, 1, k1), Q2);                                               \
        }                                                                                                \
        if (TB >= 4) {                                                                                   \
            P3 = _mm256_fmadd_ps(v0, SL_BG(3, 0, k0), P3);                                               \
            Q3 = _mm256_fmadd_ps(v1, SL_BG(3, 1, k1), Q3);                                               \
        }                                                                                                \
    } while (0)
#define SL_BPAIR(UU)                                                                                    \
    do {                                                                                                 \
        if (pfp) { /* the two units' values: one line of 16-bit values, two of fp32 */                  \
            __builtin_prefetch(pfp, 0, 3);                                                               \
            if (pstep > 32) __builtin_prefetch(pfp + 64, 0, 3);                                          \
            pfp += 2 * pstep;                                                                            \
        }                                                                                                \
        SL_BU((UU), a0, b0, a1, b1, a2, b2, a3, b3);                                                     \
        if (TB <= 2) SL_BU((UU) + 1, a2, b2, a3, b3, a0, b0, a1, b1);                                    \
        else SL_BU((UU) + 1, a0, b0, a1, b1, a2, b2, a3, b3);                                            \
    } while (0)
    if (upw == 4 && upr % 4 == 0) { /* V = 128, every window whole: two pairs per window, unrolled */
        for (uint64_t bits = wmask; bits; bits &= bits - 1) {
            const int64_t u = (w0 + __builtin_ctzll(bits)) * 4;
            SL_BPAIR(u);
            SL_BPAIR(u + 2);
        }
    } else {
        for (uint64_t bits = wmask; bits; bits &= bits - 1) {
            int64_t u = (w0 + __builtin_ctzll(bits)) * upw;
            const int64_t ue = u + upw < upr ? u + upw : upr;
            for (; u + 1 < ue; u += 2) SL_BPAIR(u);
            if (u < ue) {
                if (pfp) { __builtin_prefetch(pfp, 0, 3); pfp += pstep; }
                SL_BU(u, a0, b0, a1, b1, a2, b2, a3, b3);
            }
        }
    }
#undef SL_BPAIR
#undef SL_BU
#undef SL_BG
    if (pf) *pf = pfp;
    if (TB <= 2) {
        out[0] = sl_hsum8(_mm256_add_ps(_mm256_add_ps(a0, b0), _mm256_add_ps(a2, b2)));
        if (TB == 2) out[1] = sl_hsum8(_mm256_add_ps(_mm256_add_ps(a1, b1), _mm256_add_ps(a3, b3)));
    } else {
        out[0] = sl_hsum8(_mm256_add_ps(a0, b0));
        out[1] = sl_hsum8(_mm256_add_ps(a1, b1));
        out[2] = sl_hsum8(_mm256_add_ps(a2, b2));
        if (TB >= 4) out[3] = sl_hsum8(_mm256_add_ps(a3, b3));
    }
}
static inline __attribute__((always_inline)) void sl_avx2b_bf(const sl_args *a, int64_t c, int64_t w0, uint64_t wmask,
                                                              int64_t t0, const int TB, const char **pf, float *out) {
    sl_avx2b_body(a, c, w0, wmask, t0, TB, 1, pf, out);
}
static inline __attribute__((always_inline)) void sl_avx2b_any(const sl_args *a, int64_t c, int64_t w0, uint64_t wmask,
                                                               int64_t t0, const int TB, const char **pf, float *out) {
    sl_avx2b_body(a, c, w0, wmask, t0, TB, 0, pf, out);
}
SL_DISPATCH(sl_run_avx2b, sl_avx2b_bf)
SL_DISPATCH(sl_run_avx2bx, sl_avx2b_any)

/* Expand units [u0, u1) of compressed row c into dense fp32 columns at sp (32 per unit). */
static void sl_avx2_expand(const sl_args *a, int64_t c, int64_t u0, int64_t u1, float *sp) {
    const __m256 zero = _mm256_setzero_ps();
    const __m256i four = _mm256_set1_epi32(4);
    const uint32_t *meta = a->meta + c * a->upr;
    for (int64_t u = u0; u < u1; ++u, sp += 32) {
        const uint32_t md = meta[u];
        /* byte j: the sl_xlut index of the unit's 8-column chunk j (the lanes layout stores exactly that) */
        const uint32_t ch = a->layout == SL_LANES ? md : sl_nibbles(md & 0xFFFFu) | (sl_nibbles(md >> 16) << 4);
        const int64_t vbase = (c * a->upr + u) * 16;
        __m256 vh[2];
        sl_vals16(a, vbase, &vh[0], &vh[1]);
        for (int hf = 0; hf < 2; ++hf) {
            const __m256 v = vh[hf];
            const __m256i il = _mm256_load_si256((const __m256i *)sl_xlut[(ch >> (16 * hf)) & 0xFF]);
            const __m256i ih = _mm256_xor_si256(
                _mm256_load_si256((const __m256i *)sl_xlut[(ch >> (16 * hf + 8)) & 0xFF]), four);
            _mm256_store_ps(sp + 16 * hf, _mm256_permutevar8x32_ps(_mm256_blend_ps(v, zero, 0xF0), il));
            _mm256_store_ps(sp + 16 * hf + 8, _mm256_permutevar8x32_ps(_mm256_blend_ps(v, zero, 0x0F), ih));
        }
    }
}

/* A run over expanded columns: windows of wmask (window w = units [w*upw, (w+1)*upw) of the row, K-block
 * starting at unit ub, expanded at sp) times TB tokens, plain FMAs, two chains per token. */
static inline __attribute__((always_inline)) void sl_avx2d_body(const sl_args *a, const float *sp, int64_t ub,
                                                                int64_t upw, int64_t w0, uint64_t wmask,
                                                                int64_t t0, const int TB, float *out) {
    const int64_t upr = a->upr, ldx = a->ldx;
    __m256 l0 = _mm256_setzero_ps(), l1 = l0, l2 = l0, l3 = l0, h0 = l0, h1 = l0, h2 = l0, h3 = l0;
    const float *x = (const float *)a->x + t0 * ldx;
    for (uint64_t bits = wmask; bits; bits &= bits - 1) {
        const int64_t u = (w0 + __builtin_ctzll(bits)) * upw;
        const int64_t ue = u + upw < upr ? u + upw : upr;
        const float *wp = sp + (u - ub) * 32, *we = sp + (ue - ub) * 32;
        const float *xp = x + u * 32;
        for (; wp < we; wp += 16, xp += 16) {
            const __m256 wl = _mm256_load_ps(wp), wh = _mm256_load_ps(wp + 8);
            l0 = _mm256_fmadd_ps(wl, _mm256_load_ps(xp), l0);
            h0 = _mm256_fmadd_ps(wh, _mm256_load_ps(xp + 8), h0);
            if (TB >= 2) {
                l1 = _mm256_fmadd_ps(wl, _mm256_load_ps(xp + ldx), l1);
                h1 = _mm256_fmadd_ps(wh, _mm256_load_ps(xp + ldx + 8), h1);
            }
            if (TB >= 3) {
                l2 = _mm256_fmadd_ps(wl, _mm256_load_ps(xp + 2 * ldx), l2);
                h2 = _mm256_fmadd_ps(wh, _mm256_load_ps(xp + 2 * ldx + 8), h2);
            }
            if (TB >= 4) {
                l3 = _mm256_fmadd_ps(wl, _mm256_load_ps(xp + 3 * ldx), l3);
                h3 = _mm256_fmadd_ps(wh, _mm256_load_ps(xp + 3 * ldx + 8), h3);
            }
        }
    }
    out[0] = sl_hsum8(_mm256_add_ps(l0, h0));
    if (TB >= 2) out[1] = sl_hsum8(_mm256_add_ps(l1, h1));
    if (TB >= 3) out[2] = sl_hsum8(_mm256_add_ps(l2, h2));
    if (TB >= 4) out[3] = sl_hsum8(_mm256_add_ps(l3, h3));
}
static void sl_run_avx2d(const sl_args *a, const float *sp, int64_t ub, int64_t upw, int64_t w0, uint64_t wmask,
                         int64_t t0, int64_t tb, float *out) {
    switch (tb) {
        case 1: sl_avx2d_body(a, sp, ub, upw, w0, wmask, t0, 1, out); break;
        case 2: sl_avx2d_body(a, sp, ub, upw, w0, wmask, t0, 2, out); break;
        case 3: sl_avx2d_body(a, sp, ub, upw, w0, wmask, t0, 3, out); break;
        default: sl_avx2d_body(a, sp, ub, upw, w0, wmask, t0, 4, out); break;
    }
}
#endif

/* ------------------------------------------------------------------------------------------ AVX-512 */
#if SL_ISA >= 512
/* Four named accumulators (GCC keeps arrays of vectors in memory across loops; named ones stay in
 * registers). Tokens and chains share them: TB=1 uses four chains of token 0 (rotated after each step, a
 * register rename), TB=2 two chains per token, TB=3/4 one per token. SL_STEP(G) feeds one product per
 * token, G(t) being the gathered operand of token t. */
#define SL_STEP4(OP, WV, G, A0, A1, A2, A3)                                                \
    do {                                                                                   \
        if (TB == 1) {                                                                     \
            A0 = OP(A0, WV, G(0));                                                         \
            const __m512 r_ = A0; A0 = A1; A1 = A2; A2 = A3; A3 = r_;                      \
        } else if (TB == 2) {                                                              \
            A0 = OP(A0, WV, G(0));                                                         \
            A2 = OP(A2, WV, G(1));                                                         \
            const __m512 r_ = A0; A0 = A1; A1 = r_;                                        \
            const __m512 q_ = A2; A2 = A3; A3 = q_;                                        \
        } else {                                                                           \
            A0 = OP(A0, WV, G(0));                                                         \
            A1 = OP(A1, WV, G(1));                                                         \
            A2 = OP(A2, WV, G(2));                                                         \
            if (TB == 4) A3 = OP(A3, WV, G(3));                                            \
        }                                                                                  \
    } while (0)
/* Two accumulator sets (acc0-3, acc4-7): consecutive steps of a window alternate between them, so twice as
 * many independent dependency chains hide the product latency. */
#define SL_STEP(OP, WV, G) SL_STEP4(OP, WV, G, acc0, acc1, acc2, acc3)
#define SL_STEP_B(OP, WV, G) SL_STEP4(OP, WV, G, acc4, acc5, acc6, acc7)

#define SL_FINISH(out)                                                                     \
    do {                                                                                   \
        acc0 = _mm512_add_ps(acc0, acc4); acc1 = _mm512_add_ps(acc1, acc5);                \
        acc2 = _mm512_add_ps(acc2, acc6); acc3 = _mm512_add_ps(acc3, acc7);                \
        if (TB == 1) {                                                                     \
            out[0] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3))); \
        } else if (TB == 2) {                                                              \
            out[0] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));                      \
            out[1] = _mm512_reduce_add_ps(_mm512_add_ps(acc2, acc3));                      \
        } else {                                                                           \
            out[0] = _mm512_reduce_add_ps(acc0);                                           \
            out[1] = _mm512_reduce_add_ps(acc1);                                           \
            out[2] = _mm512_reduce_add_ps(acc2);                                           \
            if (TB == 4) out[3] = _mm512_reduce_add_ps(acc3);                              \
        }                                                                                  \
    } while (0)

static inline __m512 sl_fma(__m512 acc, __m512 w, __m512 g) { return _mm512_fmadd_ps(w, g, acc); }
static inline __m512 sl_dp(__m512 acc, __m512i w, __m512i g) { return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)g); }
static inline __m512 sl_vals16(const void *vals, int64_t i, int64_t vdtype) {
    if (vdtype == SL_F32) return _mm512_loadu_ps((const float *)vals + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)vals + i));
    if (vdtype == SL_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}


/* fp32 x (fp32 / fp16 / bf16 values, natural layout): one vpermt2ps + FMA per unit and token. */
static inline __attribute__((always_inline)) void sl_f32x_body(const sl_args *a, int64_t c, int64_t w0,
                                                               uint64_t wmask, int64_t t0, const int TB, const char **pf,
                                                               float *out) {
    const int64_t upw = a->upw, upr = a->upr, ldx = a->ldx;
    const __m512i three = _mm512_set1_epi32(3);
    const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
    const __m512i sh = _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0, acc4 = acc0, acc5 = acc0,
           acc6 = acc0, acc7 = acc0;
    const char *pfp = pf ? *pf : NULL;
    const float *x = (const float *)a->x + t0 * ldx;
    const uint32_t *meta = a->meta + c * upr;
    for (uint64_t bits = wmask; bits; bits &= bits - 1) {
        int64_t u = (w0 + __builtin_ctzll(bits)) * upw;
        const int64_t ue = u + upw < upr ? u + upw : upr;
#define SL_UNIT(STEP)                                                                                   \
    do {                                                                                                \
        const __m512i s = _mm512_srlv_epi32(_mm512_set1_epi32((int)meta[u]), sh);                      \
        const __m512i idx = _mm512_ternarylogic_epi32(s, three, base, 0xEA); /* (s & 3) | base */       \
        const __m512 wv = sl_vals16(a->vals, (c * upr + u) * 16, a->vdtype);                           \
        if (pfp) { __builtin_prefetch(pfp, 0, 3); pfp += a->vdtype == SL_F32 ? 64 : 32; }              \
        const float *xp = x + u * 32;                                                                   \
        STEP(sl_fma, wv, SL_G);                                                                         \
        ++u;                                                                                            \
    } while (0)
#define SL_G(t) _mm512_permutex2var_ps(_mm512_load_ps(xp + (t) * ldx), idx, _mm512_load_ps(xp + (t) * ldx + 16))
        while (u + 1 < ue) { SL_UNIT(SL_STEP); SL_UNIT(SL_STEP_B); }
        if (u < ue) SL_UNIT(SL_STEP);
#undef SL_G
#undef SL_UNIT
    }
    if (pf) *pf = pfp;
    SL_FINISH(out);
}

/* bf16 x and values (pair layout): per unit pair one vpermt2w + one vdpbf16ps per token; a lone unit
 * (V % 64 == 32, or the last unit of a row) one masked vpermw + vdpbf16ps on natural-order values. */
static inline __attribute__((always_inline)) void sl_bf16_body(const sl_args *a, int64_t c, int64_t w0,
                                                               uint64_t wmask, int64_t t0, const int TB, const char **pf,
                                                               float *out) {
    const int64_t upw = a->upw, upr = a->upr, ldx = a->ldx;
    const __m512i three = _mm512_set1_epi16(3);
    /* pair lane j: slot j%4 of the broadcast qword, shift 2*(j>>2); base 32*((j>>1)&1) + 4*(j>>2) */
    const __m512i psh = _mm512_set_epi16(14, 14, 14, 14, 12, 12, 12, 12, 10, 10, 10, 10, 8, 8, 8, 8,
                                         6, 6, 6, 6, 4, 4, 4, 4, 2, 2, 2, 2, 0, 0, 0, 0);
    const __m512i pbase = _mm512_set_epi16(60, 60, 28, 28, 56, 56, 24, 24, 52, 52, 20, 20, 48, 48, 16, 16,
                                           44, 44, 12, 12, 40, 40, 8, 8, 36, 36, 4, 4, 32, 32, 0, 0);
    /* lone unit lane j (j < 16): slot j%2 of the broadcast dword, shift 2*(j>>1); base 4*(j>>1) */
    const __m512i ssh = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                         14, 14, 12, 12, 10, 10, 8, 8, 6, 6, 4, 4, 2, 2, 0, 0);
    const __m512i sbase = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                           28, 28, 24, 24, 20, 20, 16, 16, 12, 12, 8, 8, 4, 4, 0, 0);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0, acc4 = acc0, acc5 = acc0,
           acc6 = acc0, acc7 = acc0;
    const char *pfp = pf ? *pf : NULL;
    const uint16_t *x = (const uint16_t *)a->x + t0 * ldx;
    const uint16_t *vals = (const uint16_t *)a->vals + c * upr * 16;
    const uint32_t *meta = a->meta + c * upr;
    for (uint64_t bits = wmask; bits; bits &= bits - 1) {
        int64_t u = (w0 + __builtin_ctzll(bits)) * upw;
        const int64_t ue = u + upw < upr ? u + upw : upr;
#define SL_PAIR(STEP)                                                                                   \
    do {                                                                                                \
        uint64_t mq;                                                                                    \
        memcpy(&mq, meta + u, 8);                                                                       \
        const __m512i s = _mm512_srlv_epi16(_mm512_set1_epi64((int64_t)mq), psh);                      \
        const __m512i idx = _mm512_ternarylogic_epi32(s, three, pbase, 0xEA); /* (s & 3) | base */      \
        const __m512i wv = _mm512_loadu_si512((const void *)(vals + u * 16));                          \
        if (pfp) { __builtin_prefetch(pfp, 0, 3); pfp += 64; } /* one line ahead per line consumed */   \
        const uint16_t *xp = x + u * 32;                                                                \
        STEP(sl_dp, wv, SL_G);                                                                          \
        u += 2;                                                                                         \
    } while (0)
#define SL_G(t) _mm512_permutex2var_epi16(_mm512_load_si512((const void *)(xp + (t) * ldx)), idx, \
                                          _mm512_load_si512((const void *)(xp + (t) * ldx + 32)))
        while (u + 3 < ue) { SL_PAIR(SL_STEP); SL_PAIR(SL_STEP_B); }
        if (u + 1 < ue) SL_PAIR(SL_STEP);
#undef SL_G
#undef SL_PAIR
        if (u < ue) { /* a lone unit */
            const __m512i s = _mm512_srlv_epi16(_mm512_set1_epi32((int)meta[u]), ssh);
            const __m512i idx = _mm512_ternarylogic_epi32(s, three, sbase, 0xEA);
            const __m512i wv = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(vals + u * 16)));
            const uint16_t *xp = x + u * 32;
#define SL_G(t) _mm512_maskz_permutexvar_epi16(0x0000FFFFu, idx, _mm512_load_si512((const void *)(xp + (t) * ldx)))
            SL_STEP(sl_dp, wv, SL_G);
#undef SL_G
        }
    }
    if (pf) *pf = pfp;
    SL_FINISH(out);
}

SL_DISPATCH(sl_run_512_f32x, sl_f32x_body)
SL_DISPATCH(sl_run_512_bf16, sl_bf16_body)
#endif

/* ------------------------------------------------------------------------------------------ driver */
typedef void (*sl_run_fn)(const sl_args *, int64_t, int64_t, uint64_t, int64_t, int64_t, const char **, float *);

static sl_run_fn sl_pick(const sl_args *a) {
    (void)a;
#if SL_ISA >= 512
    if (a->xdtype == SL_BF16) return sl_run_512_bf16;
    if (a->xdtype == SL_F32) return sl_run_512_f32x;
#elif SL_ISA >= 2
    if (a->xdtype == SL_F32) return sl_run_avx2;
    if (a->xdtype == SL_BF16 && a->layout == SL_LANES) return a->vdtype == SL_BF16 ? sl_run_avx2b : sl_run_avx2bx;
#endif
    return sl_run_portable;
}

/* Software prefetch distance (bytes of values ahead). The windows of a row are visited grouped by
 * candidate, an order the hardware prefetchers do not follow. */
#ifndef SL_PF_BYTES
#define SL_PF_BYTES 16384
#endif

typedef struct {
    const sl_args *a;
    int64_t c0, c1;
    int status;
} sl_job;

static void *sl_worker(void *p) {
    sl_job *job = (sl_job *)p;
    const sl_args *a = job->a;
    const int64_t m = a->rsel ? a->m : 1;
    const int64_t kcols = a->xdtype == SL_F32 ? SL_KCOLS / 2 : SL_KCOLS;
    int64_t wpk = kcols / (a->upw * 32);
    if (!a->rsel) wpk = 1; /* plain 2:4: one window per row; K-blocks cut the row into units instead */
    if (wpk < 1) wpk = 1;
    if (wpk > 64) wpk = 64;
    const int64_t nkb = (a->nwin + wpk - 1) / wpk;
    const sl_run_fn run = sl_pick(a);
    const int64_t esz = a->vdtype == SL_F32 ? 4 : 2;
    /* prefetch distance: about SL_PF_BYTES of the operand ahead */
    const int64_t kb_bytes = wpk * a->upw * 16 * esz;
    const int64_t pf_rows = (SL_PF_BYTES + kb_bytes - 1) / kb_bytes;
    float part[SL_TB];
    uint64_t masks[256];
    for (int64_t cb = job->c0; cb < job->c1; cb += SL_RB) {
        const int64_t ce = cb + SL_RB < job->c1 ? cb + SL_RB : job->c1;
        for (int64_t t0 = 0; t0 < a->T; t0 += SL_TB) {
            const int64_t tb = a->T - t0 < SL_TB ? a->T - t0 : SL_TB;
            for (int64_t kb = 0; kb < nkb; ++kb) {
                const int64_t w0 = kb * wpk, nw = a->nwin - w0 < wpk ? a->nwin - w0 : wpk;
                for (int64_t c = cb; c < ce; ++c) {
                    /* prefetch the same K-block of the row pf_rows ahead, a line per line consumed */
                    const char *pfp = NULL;
                    if (t0 == 0 && c + pf_rows < a->crows) {
                        pfp = (const char *)a->vals + ((c + pf_rows) * a->upr + w0 * a->upw) * 16 * esz;
                        const char *mt = (const char *)(a->meta + (c + pf_rows) * a->upr + w0 * a->upw);
                        for (int64_t i = 0; i < nw * a->upw * 4; i += 64) __builtin_prefetch(mt + i, 0, 3);
                    }
                    sl_window_masks(a, c, w0, nw, m, masks);
                    for (int64_t r = 0; r < m; ++r) {
                        if (!masks[r]) continue;
                        run(a, c, w0, masks[r], t0, tb, pfp ? &pfp : NULL, part);
                        const int64_t dr = sl_dense_row(a, c, r);
                        for (int64_t t = 0; t < tb; ++t) a->y[(t0 + t) * a->ldy + dr] += part[t];
                    }
                }
            }
        }
    }
    job->status = 0;
    return NULL;
}


#if SL_ISA == 2
/* AVX2, several tokens: per block of SL_XRB compressed rows and K-block of SL_XKCOLS columns, every row's
 * kept values are expanded once into a dense fp32 tile (scratch, in L2), which then serves every block of
 * SL_TB tokens (their x slices in L1). Expanding costs more than a few tokens' gathers, so fewer tokens take
 * the gather bodies instead (sl_worker). */
#ifndef SL_XT
#define SL_XT 4 /* fp32 tokens from which expanding pays over vpermps gathers (measured: 2 slower, 4 faster); bf16
                 * tokens stay bf16 and take the vpshufb gathers at any count (they beat these tiles from 16 to
                 * 256 tokens by 1.13-1.46x on Zen 2 once their controls came from sl_blut) */
#endif
#ifndef SL_XRB
#define SL_XRB 32
#endif
#ifndef SL_XKCOLS
#define SL_XKCOLS 1024
#endif
static void *sl_worker_x(void *p) {
    sl_job *job = (sl_job *)p;
    const sl_args *a = job->a;
    const int64_t m = a->rsel ? a->m : 1;
    /* units per K-block: whole windows for Samoyeds; plain 2:4 rows have one window, cut into K-blocks */
    const int64_t kbu0 = SL_XKCOLS / 32;
    const int64_t upw = a->rsel ? a->upw : (kbu0 < a->upr ? kbu0 : a->upr);
    const int64_t nwin = a->rsel ? a->nwin : (a->upr + upw - 1) / upw;
    int64_t wpk = a->rsel ? kbu0 / a->upw : 1;
    if (wpk < 1) wpk = 1;
    if (wpk > 64) wpk = 64;
    const int64_t nkb = (nwin + wpk - 1) / wpk, kbu = wpk * upw;
    float *scratch = (float *)aligned_alloc(64, (size_t)(SL_XRB * kbu * 32) * sizeof(float));
    uint64_t *masks = (uint64_t *)malloc((size_t)(SL_XRB * m) * sizeof(uint64_t));
    if (!scratch || !masks) {
        free(scratch);
        free(masks);
        job->status = 1;
        return NULL;
    }
    const int64_t esz = a->vdtype == SL_F32 ? 4 : 2;
    float part[SL_TB];
    for (int64_t cb = job->c0; cb < job->c1; cb += SL_XRB) {
        const int64_t ce = cb + SL_XRB < job->c1 ? cb + SL_XRB : job->c1;
        for (int64_t kb = 0; kb < nkb; ++kb) {
            const int64_t w0 = kb * wpk, nw = nwin - w0 < wpk ? nwin - w0 : wpk;
            const int64_t ub = w0 * upw, ue = ub + nw * upw < a->upr ? ub + nw * upw : a->upr;
            for (int64_t c = cb; c < ce; ++c) {
                /* prefetch what comes after this K-block of the block: the next K-block of this row, or
                 * the first of the row a block ahead */
                const int64_t pc = kb + 1 < nkb ? c : c + SL_XRB, pu = kb + 1 < nkb ? ue : 0;
                if (pc < a->crows) {
                    const char *pv = (const char *)a->vals + (pc * a->upr + pu) * 16 * esz;
                    for (int64_t i = 0; i < kbu * 16 * esz; i += 64) __builtin_prefetch(pv + i, 0, 3);
                    const char *pm = (const char *)(a->meta + pc * a->upr + pu);
                    for (int64_t i = 0; i < kbu * 4; i += 64) __builtin_prefetch(pm + i, 0, 3);
                }
                sl_avx2_expand(a, c, ub, ue, scratch + (c - cb) * kbu * 32);
                if (a->rsel) {
                    sl_window_masks(a, c, w0, nw, m, masks + (c - cb) * m);
                } else {
                    masks[c - cb] = 1; /* window w0 = this K-block */
                }
            }
            for (int64_t t0 = 0; t0 < a->T; t0 += SL_TB) {
                const int64_t tb = a->T - t0 < SL_TB ? a->T - t0 : SL_TB;
                for (int64_t c = cb; c < ce; ++c) {
                    for (int64_t r = 0; r < m; ++r) {
                        const uint64_t wm = masks[(c - cb) * m + r];
                        if (!wm) continue;
                        sl_run_avx2d(a, scratch + (c - cb) * kbu * 32, ub, upw, a->rsel ? w0 : kb, wm, t0, tb, part);
                        const int64_t dr = sl_dense_row(a, c, r);
                        for (int64_t t = 0; t < tb; ++t) a->y[(t0 + t) * a->ldy + dr] += part[t];
                    }
                }
            }
        }
    }
    free(scratch);
    free(masks);
    job->status = 0;
    return NULL;
}
#endif

/* y[T, rows] += W x^T over compressed rows; returns 0 on success. Threads split the compressed rows in
 * contiguous ranges aligned to m-groups (n compressed rows), so no two threads write one output row. */
int sl_gemm(const sl_args *a) {
    if (a->T <= 0 || a->crows <= 0) return 0;
#if SL_ISA == 2
    if (a->xdtype == SL_BF16 && a->layout != SL_LANES) return 2; /* the bf16-token bodies read the lanes layout */
    pthread_once(&sl_xlut_once, sl_xlut_init);
#endif
    int64_t nt = a->nthreads < 1 ? 1 : (a->nthreads > 64 ? 64 : a->nthreads);
    const int64_t unit = a->rsel ? a->n : 1;
    const int64_t groups = a->crows / unit;
    if (nt > groups) nt = groups;
    sl_job jobs[64];
#ifndef _OPENMP
    pthread_t th[64];
#endif
    for (int64_t i = 0; i < nt; ++i) {
        jobs[i].a = a;
        jobs[i].c0 = groups * i / nt * unit;
        jobs[i].c1 = groups * (i + 1) / nt * unit;
        jobs[i].status = 0;
    }
    void *(*work)(void *) = sl_worker;
#if SL_ISA == 2
    if (a->xdtype == SL_F32 && a->T >= SL_XT) work = sl_worker_x;
#endif
#ifdef _OPENMP
    /* Built with -fopenmp, this library shares the OpenMP runtime torch has already loaded (libgomp.so.1),
     * so its workers are torch's own threads: no thread start per call, and no torch threads left spinning
     * beside ours after a torch op. */
    if (nt > 1) {
#pragma omp parallel for num_threads(nt) schedule(static, 1)
        for (int64_t i = 0; i < nt; ++i) work(&jobs[i]);
    } else {
        work(&jobs[0]);
    }
    int status = 0;
    for (int64_t i = 0; i < nt; ++i) status |= jobs[i].status;
    return status;
#else
    int64_t started = 0;
    for (int64_t i = 1; i < nt; ++i) {
        if (pthread_create(&th[i], NULL, work, &jobs[i]) != 0) break;
        started = i;
    }
    for (int64_t i = started + 1; i < nt; ++i) work(&jobs[i]); /* threads that could not start */
    work(&jobs[0]);
    int status = jobs[0].status;
    for (int64_t i = 1; i <= started; ++i) {
        pthread_join(th[i], NULL);
        status |= jobs[i].status;
    }
    for (int64_t i = started + 1; i < nt; ++i) status |= jobs[i].status;
    return status;
#endif
}

/* Decompress compressed rows [c0, c1) into dense rows of out ([rows, ldo] in the value dtype, rows that
 * these compressed rows stand for are fully written, zeros included). For the tile-by-tile dense path. */
int sl_decompress(const sl_args *a, int64_t c0, int64_t c1, void *out, int64_t ldo, int64_t row0) {
    const int64_t esz = a->vdtype == SL_F32 ? 4 : 2;
    const int64_t m = a->rsel ? a->m : 1, n = a->rsel ? a->n : 1;
    const int64_t K = a->upr * 32 < ldo ? a->upr * 32 : ldo;
    const int64_t g0 = c0 / n, g1 = (c1 + n - 1) / n;
    /* groups in parallel (torch's OpenMP threads where built with OpenMP): each zeroes its m dense rows,
     * then writes what its n compressed rows keep */
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(a->nthreads > 0 ? (int)a->nthreads : 1) if (g1 - g0 > 8)
#endif
    for (int64_t g = g0; g < g1; ++g) {
        memset((char *)out + ((g * m) - row0) * ldo * esz, 0, (size_t)(m * ldo * esz));
        for (int64_t c = g * n > c0 ? g * n : c0, ce = (g + 1) * n < c1 ? (g + 1) * n : c1; c < ce; ++c)
        for (int64_t u = 0; u < a->upr; ++u) {
            const int64_t w = u / a->upw;
            const int64_t r = a->rsel ? a->rsel[c * a->nwin + w] : 0;
            const int64_t dr = sl_dense_row(a, c, r) - row0;
            const uint32_t md = a->meta[c * a->upr + u];
#if SL_ISA >= 512
            if (esz == 2) { /* 32 dense columns at once: kept-position compares, then one masked vpermw */
                int64_t blk = (c * a->upr + u) * 16, p = 0;
                __mmask32 vmask = 0x0000FFFFu;
                if (a->layout == SL_PAIR) {
                    const int64_t uw = u % a->upw, ue = (w + 1) * a->upw < a->upr ? (w + 1) * a->upw : a->upr;
                    if ((uw & 1) || u + 1 < ue) {
                        p = uw & 1;
                        blk = (c * a->upr + u - p) * 16;
                        vmask = 0xFFFFFFFFu;
                    }
                }
                const __m512i lane = _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
                                                      15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
                const __m512i grp = _mm512_srli_epi16(lane, 2), kc = _mm512_and_si512(lane, _mm512_set1_epi16(3));
                const __m512i sh = _mm512_slli_epi16(grp, 1), three = _mm512_set1_epi16(3);
                const __m512i p0 = _mm512_and_si512(_mm512_srlv_epi16(_mm512_set1_epi16((short)(md & 0xFFFF)), sh), three);
                const __m512i p1 = _mm512_and_si512(_mm512_srlv_epi16(_mm512_set1_epi16((short)(md >> 16)), sh), three);
                const __mmask32 m0 = _mm512_cmpeq_epi16_mask(p0, kc), m1 = _mm512_cmpeq_epi16_mask(p1, kc);
                /* lane of (group g, s) in the values block: natural 2g + s, pair (g << 2) | (p << 1) | s */
                const __m512i i0 = a->layout == SL_PAIR && vmask == 0xFFFFFFFFu
                                       ? _mm512_or_si512(_mm512_slli_epi16(grp, 2), _mm512_set1_epi16((short)(p << 1)))
                                       : _mm512_slli_epi16(grp, 1);
                const __m512i idx = _mm512_mask_add_epi16(i0, m1, i0, _mm512_set1_epi16(1));
                const __m512i vb = _mm512_maskz_loadu_epi16(vmask, (const uint16_t *)a->vals + blk);
                const __m512i d = _mm512_maskz_permutexvar_epi16(m0 | m1, idx, vb);
                const int64_t left = K - u * 32;
                const __mmask32 st = left >= 32 ? 0xFFFFFFFFu : (__mmask32)((1u << left) - 1);
                _mm512_mask_storeu_epi16((uint16_t *)out + dr * ldo + u * 32, st, d);
                continue;
            }
#endif
            for (int v = 0; v < 16; ++v) {
                const int gi = v >> 1, s = v & 1;
                const int64_t col = u * 32 + 4 * gi + sl_pos(a, md, gi, s);
                if (col >= K) continue;
                int64_t src = (c * a->upr + u) * 16 + sl_vslot(a, v);
                if (a->layout == SL_PAIR) { /* where the pair layout put value v of unit u */
                    const int64_t uw = u % a->upw, ue = (w + 1) * a->upw < a->upr ? (w + 1) * a->upw : a->upr;
                    const int64_t p = uw & 1, first = u - p;
                    if (p == 1 || u + 1 < ue)
                        src = (c * a->upr + first) * 16 + ((v & 1) | (p << 1) | ((v >> 1) << 2));
                }
                if (esz == 4)
                    ((float *)out)[dr * ldo + col] = ((const float *)a->vals)[src];
                else
                    ((uint16_t *)out)[dr * ldo + col] = ((const uint16_t *)a->vals)[src];
            }
        }
    }
    return 0;
}

int sl_isa(void) { return SL_ISA; }
