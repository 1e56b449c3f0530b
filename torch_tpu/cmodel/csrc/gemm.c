/* Packed, blocked, threaded GEMM: f32 (FMA) and int8 x int8 -> int32, with a fused epilogue.
 *
 * out[i, j] = act(sum_k A[i, k] B[k, j] + bias) rounded once to the output dtype (int8: optionally requantized,
 * per row or column, in the same epilogue while the int32 micro-tile is in L1), A row-major M x K,
 * B either a dense row-major K x N matrix or the implicit im2col of one convolution input (rows
 * k = (c, ki, kj), columns p = (oh, ow)), never materialised.
 *
 * Blocking (BLIS style): B is packed once into NR-column strips per K block of KC; the output is cut into
 * tasks of mc x nc; a task walks K in blocks, packs its A block (MR-row strips) and runs an MR x NR
 * micro-kernel over the strips
 * (AVX2 + FMA 6x16, AVX-512 6x32, portable C 6x16; int8: pairs of k as int16 through vpmaddwd). Every
 * output element is summed in the order k = 0..K-1 (the accumulator is carried between K blocks), and the
 * arithmetic per element does not depend on where its tile lies, so the split into tasks (and the
 * number of threads running them, threads.h) never changes a result. The SIMD level is chosen once at
 * run time with __builtin_cpu_supports and can be forced with cm_set_simd (tests run every level the
 * CPU has).
 */
#include <stdlib.h>
#include "common.h"
#include "kernels.h"
#include "threads.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CM_X86 1
#include <immintrin.h>
#endif

#if defined(_MSC_VER)
#define CM_TLS __declspec(thread)
#else
#define CM_TLS __thread
#endif

/* levels in order: each implies the ones before it (avx512vnni: AVX-512 with the int8 / int16 dot products) */
enum { SIMD_GENERIC = 0, SIMD_AVX2 = 1, SIMD_AVX512 = 2, SIMD_AVX512_VNNI = 3 };
static int g_simd = -1;

static int simd_detect(void) {
#ifdef CM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
        return __builtin_cpu_supports("avx512vnni") ? SIMD_AVX512_VNNI : SIMD_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SIMD_AVX2;
#endif
    return SIMD_GENERIC;
}

int cm_simd_level(void) {
    if (g_simd < 0) g_simd = simd_detect();
    return g_simd;
}

/* Force a SIMD level (0 generic, 1 avx2, 2 avx512, 3 avx512vnni); returns -1 when the CPU lacks it. */
int cm_set_simd(int level) {
    if (level < 0 || level > simd_detect()) return -1;
    g_simd = level;
    return 0;
}

const char *cm_simd_name(void) {
    static const char *names[] = {"generic", "avx2", "avx512", "avx512vnni"};
    return names[cm_simd_level()];
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define CM_LITTLE_ENDIAN 0
#else
#define CM_LITTLE_ENDIAN 1
#endif

#define MR 6
#define MC 144       /* rows of A per task: 24 strips; a 144 x 256 f32 block (144 KiB) stays in L2 */
#define KC 256       /* f32 K block: a 256 x 16 B strip (16 KiB) stays in L1 */
#define KC2 256      /* int8 K block in pairs of k */
#define NC_MAX 1024  /* columns per task */
#define NR_MAX 32

/* ---- per-thread scratch (grown on demand, kept for the thread's life) ---------------------------- */

static CM_TLS void *t_buf[6];
static CM_TLS size_t t_cap[6];

static void *scratch(int which, size_t bytes) {
    if (t_cap[which] < bytes) {
        free(t_buf[which]);
        t_buf[which] = malloc(bytes + 64);
        t_cap[which] = t_buf[which] ? bytes : 0;
    }
    return t_buf[which];
}

/* BUF_AP / BUF_BP: all of A / B packed once per GEMM, in the calling thread's scratch (kept between calls, so
 * a run does not page-fault fresh buffers in for every instruction) */
enum { BUF_A = 0, BUF_B = 1, BUF_C = 2, BUF_ROW = 3, BUF_AP = 4, BUF_BP = 5 };

/* ---- B rows: dense, or one row of the implicit im2col ------------------------------------------- */

/* columns [j0, j0 + n) of im2col row k of a conv input x (cig x H x W), element size es, into dst */
static void conv_row(const CmConvGeom *g, const char *x, size_t es, size_t k, size_t j0, size_t n, char *dst) {
    i64 khw = g->kh * g->kw, ci = (i64)k / khw, rem = (i64)k % khw, ki = rem / g->kw, kj = rem % g->kw;
    i64 off = kj * g->dw - g->pl, sw = g->sw, Wo = g->Wo, W = g->W;
    /* valid ow: 0 <= ow * sw + off < W */
    i64 lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
    i64 hi = W - off <= 0 ? 0 : (W - off + sw - 1) / sw;
    if (hi > Wo) hi = Wo;
    if (lo > hi) lo = hi;
    const char *xc = x + (size_t)(ci * g->H * W) * es;
    int pv = es == 1 ? g->pad_value : 0; /* padded taps: the int8 pad value's byte, or f32 zeros */
    i64 oh = (i64)j0 / Wo, ow = (i64)j0 % Wo;
    size_t done = 0;
    while (done < n) {
        i64 seg = Wo - ow < (i64)(n - done) ? Wo - ow : (i64)(n - done);
        i64 ih = oh * g->sh - g->pt + ki * g->dh;
        char *d = dst + done * es;
        if (ih < 0 || ih >= g->H) {
            memset(d, pv, (size_t)seg * es);
        } else {
            i64 e = ow + seg, a = lo < ow ? ow : lo > e ? e : lo, b = hi < a ? a : hi > e ? e : hi;
            memset(d, pv, (size_t)(a - ow) * es);
            const char *src = xc + (size_t)(ih * W + off) * es;
            if (sw == 1) {
                memcpy(d + (size_t)(a - ow) * es, src + (size_t)a * es, (size_t)(b - a) * es);
            } else if (es == 4) {
                float *df = (float *)d - ow;
                const float *sf = (const float *)src;
                for (i64 q = a; q < b; q++) df[q] = sf[q * sw];
            } else {
                int8_t *di = (int8_t *)d - ow;
                const int8_t *si = (const int8_t *)src;
                for (i64 q = a; q < b; q++) di[q] = si[q * sw];
            }
            memset(d + (size_t)(b - ow) * es, pv, (size_t)(ow + seg - b) * es);
        }
        done += (size_t)seg;
        oh++;
        ow = 0;
    }
}

/* row k, columns [j0, j0 + n) of B as a pointer (dense: into B itself; conv: filled into tmp) */
static const char *b_row(const CmGemm *g, size_t es, size_t k, size_t j0, size_t n, char *tmp) {
    if (!g->conv) return (const char *)g->b + (k * g->ldb + j0) * es;
    conv_row(g->conv, (const char *)g->b, es, k, j0, n, tmp);
    return tmp;
}

/* ---- f32: packing ------------------------------------------------------------------------------ */

/* A rows [i0, i0 + mc) x k [k0, k0 + kc) into MR-row strips: Ap[s][k][r], rows past M zero */
static void pack_a_f32(const CmGemm *g, size_t i0, size_t mc, size_t k0, size_t kc, float *Ap) {
    const float *A = (const float *)g->a;
    for (size_t s = 0; s < mc; s += MR, Ap += kc * MR)
        for (size_t r = 0; r < MR; r++) {
            if (s + r < mc) {
                const float *row = A + (i0 + s + r) * g->K + k0;
                for (size_t k = 0; k < kc; k++) Ap[k * MR + r] = row[k];
            } else {
                for (size_t k = 0; k < kc; k++) Ap[k * MR + r] = 0.f;
            }
        }
}

/* B k [k0, k0 + kc) x columns [j0, j0 + nc) into NR-column strips: Bp[t][k][c], columns past nc zero */
static void pack_b_f32(const CmGemm *g, size_t k0, size_t kc, size_t j0, size_t nc, size_t nr, float *Bp,
                       float *tmp) {
    size_t strips = (nc + nr - 1) / nr;
    for (size_t k = 0; k < kc; k++) {
        const float *row = (const float *)b_row(g, 4, k0 + k, j0, nc, (char *)tmp);
        for (size_t t = 0; t < strips; t++) {
            float *d = Bp + (t * kc + k) * nr;
            size_t w = nc - t * nr < nr ? nc - t * nr : nr;
            memcpy(d, row + t * nr, w * 4);
            for (size_t c = w; c < nr; c++) d[c] = 0.f;
        }
    }
}

/* ---- f32 micro-kernels: C[MR x nr] (ldc) = (acc ? C : 0) + Ap . Bp over kc --------------------------- */

typedef void (*ukr_f32)(size_t kc, const float *Ap, const float *Bp, float *C, size_t ldc, int acc);

static void ukr_f32_generic(size_t kc, const float *Ap, const float *Bp, float *C, size_t ldc, int acc) {
    float c[MR][16];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < 16; j++) c[r][j] = acc ? C[r * ldc + j] : 0.f;
    for (size_t k = 0; k < kc; k++, Ap += MR, Bp += 16)
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < 16; j++) c[r][j] += Ap[r] * Bp[j];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < 16; j++) C[r * ldc + j] = c[r][j];
}

#ifdef CM_X86
__attribute__((target("avx2,fma")))
static void ukr_f32_avx2(size_t kc, const float *Ap, const float *Bp, float *C, size_t ldc, int acc) {
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    if (acc) {
        c00 = _mm256_loadu_ps(C); c01 = _mm256_loadu_ps(C + 8);
        c10 = _mm256_loadu_ps(C + ldc); c11 = _mm256_loadu_ps(C + ldc + 8);
        c20 = _mm256_loadu_ps(C + 2 * ldc); c21 = _mm256_loadu_ps(C + 2 * ldc + 8);
        c30 = _mm256_loadu_ps(C + 3 * ldc); c31 = _mm256_loadu_ps(C + 3 * ldc + 8);
        c40 = _mm256_loadu_ps(C + 4 * ldc); c41 = _mm256_loadu_ps(C + 4 * ldc + 8);
        c50 = _mm256_loadu_ps(C + 5 * ldc); c51 = _mm256_loadu_ps(C + 5 * ldc + 8);
    } else {
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
    }
    for (size_t k = 0; k < kc; k++, Ap += MR, Bp += 16) {
        __m256 b0 = _mm256_load_ps(Bp), b1 = _mm256_load_ps(Bp + 8), a;
        a = _mm256_broadcast_ss(Ap); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(Ap + 1); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(Ap + 2); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(Ap + 3); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(Ap + 4); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(Ap + 5); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    }
    _mm256_storeu_ps(C, c00); _mm256_storeu_ps(C + 8, c01);
    _mm256_storeu_ps(C + ldc, c10); _mm256_storeu_ps(C + ldc + 8, c11);
    _mm256_storeu_ps(C + 2 * ldc, c20); _mm256_storeu_ps(C + 2 * ldc + 8, c21);
    _mm256_storeu_ps(C + 3 * ldc, c30); _mm256_storeu_ps(C + 3 * ldc + 8, c31);
    _mm256_storeu_ps(C + 4 * ldc, c40); _mm256_storeu_ps(C + 4 * ldc + 8, c41);
    _mm256_storeu_ps(C + 5 * ldc, c50); _mm256_storeu_ps(C + 5 * ldc + 8, c51);
}

__attribute__((target("avx512f")))
static void ukr_f32_avx512(size_t kc, const float *Ap, const float *Bp, float *C, size_t ldc, int acc) {
    __m512 c[MR][2];
    for (int r = 0; r < MR; r++) {
        c[r][0] = acc ? _mm512_loadu_ps(C + r * ldc) : _mm512_setzero_ps();
        c[r][1] = acc ? _mm512_loadu_ps(C + r * ldc + 16) : _mm512_setzero_ps();
    }
    for (size_t k = 0; k < kc; k++, Ap += MR, Bp += 32) {
        __m512 b0 = _mm512_load_ps(Bp), b1 = _mm512_load_ps(Bp + 16);
        for (int r = 0; r < MR; r++) {
            __m512 a = _mm512_set1_ps(Ap[r]);
            c[r][0] = _mm512_fmadd_ps(a, b0, c[r][0]);
            c[r][1] = _mm512_fmadd_ps(a, b1, c[r][1]);
        }
    }
    for (int r = 0; r < MR; r++) {
        _mm512_storeu_ps(C + r * ldc, c[r][0]);
        _mm512_storeu_ps(C + r * ldc + 16, c[r][1]);
    }
}
#endif

/* ---- int8: packing (pairs of k as int16) and micro-kernels ------------------------------------------ */

/* Ap[s][p][r]: one int32 word per row holding (a[2p], a[2p+1]) as int16, zero past K and past mc.
 * Whole strips over whole pairs of k (all but the edges) take a fast path: each row is widened to int16 once
 * (a loop the compiler vectorises), then the pairs are interleaved across the strip's rows as int32 words. */
static void pack_a_i8(const CmGemm *g, size_t i0, size_t mc, size_t p0, size_t kc2, int32_t *Ap) {
    const int8_t *A = (const int8_t *)g->a;
    int16_t wide[MR][2 * KC2];
    for (size_t s = 0; s < mc; s += MR, Ap += kc2 * MR) {
        if (CM_LITTLE_ENDIAN && s + MR <= mc && 2 * (p0 + kc2) <= g->K && kc2 <= KC2) {
            for (size_t r = 0; r < MR; r++) {
                const int8_t *row = A + (i0 + s + r) * g->K + 2 * p0;
                for (size_t k = 0; k < 2 * kc2; k++) wide[r][k] = row[k];
            }
            for (size_t p = 0; p < kc2; p++)
                for (size_t r = 0; r < MR; r++) {
                    int32_t w;
                    memcpy(&w, &wide[r][2 * p], 4); /* (a[2p], a[2p + 1]): low half first, as below */
                    Ap[p * MR + r] = w;
                }
            continue;
        }
        for (size_t r = 0; r < MR; r++) {
            const int8_t *row = s + r < mc ? A + (i0 + s + r) * g->K : NULL;
            for (size_t p = 0; p < kc2; p++) {
                size_t k = 2 * (p0 + p);
                int32_t lo = row && k < g->K ? row[k] : 0, hi = row && k + 1 < g->K ? row[k + 1] : 0;
                Ap[p * MR + r] = (int32_t)((uint32_t)(uint16_t)(int16_t)lo | ((uint32_t)(uint16_t)(int16_t)hi << 16));
            }
        }
    }
}

#ifdef CM_X86
/* d[2c] = a[c], d[2c + 1] = b[c] as int16, c < 16 */
__attribute__((target("avx2")))
static void interleave16_avx2(const int8_t *a, const int8_t *b, int16_t *d) {
    __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)a));
    __m256i y = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b));
    __m256i lo = _mm256_unpacklo_epi16(x, y), hi = _mm256_unpackhi_epi16(x, y); /* per 128-bit half */
    _mm256_storeu_si256((__m256i *)d, _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256((__m256i *)(d + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
}
#endif

/* Bp[t][p][c][2] = (b[2p][c], b[2p+1][c]) as int16, zero past K and past nc */
static void pack_b_i8(const CmGemm *g, size_t p0, size_t kc2, size_t j0, size_t nc, size_t nr, int16_t *Bp,
                      int8_t *tmp) {
    size_t strips = (nc + nr - 1) / nr;
    int8_t *t0 = tmp, *t1 = tmp + nc + 64;
    for (size_t p = 0; p < kc2; p++) {
        size_t k = 2 * (p0 + p);
        const int8_t *r0 = (const int8_t *)b_row(g, 1, k, j0, nc, (char *)t0);
        const int8_t *r1 = NULL;
        if (k + 1 < g->K) r1 = (const int8_t *)b_row(g, 1, k + 1, j0, nc, (char *)t1);
        if (!r1) { /* K odd: the last pair's second row is zero */
            memset(t1, 0, nc);
            r1 = t1;
        }
        for (size_t t = 0; t < strips; t++) {
            int16_t *d = Bp + ((t * kc2 + p) * nr) * 2;
            size_t w = nc - t * nr < nr ? nc - t * nr : nr, c = 0;
            const int8_t *a = r0 + t * nr, *b = r1 + t * nr;
#ifdef CM_X86
            if (cm_simd_level() > 0)
                for (; c + 16 <= w; c += 16) interleave16_avx2(a + c, b + c, d + 2 * c);
#endif
            for (; c < w; c++) { d[2 * c] = a[c]; d[2 * c + 1] = b[c]; }
            for (; c < nr; c++) d[2 * c] = d[2 * c + 1] = 0;
        }
    }
}

typedef void (*ukr_i8)(size_t kc2, const int32_t *Ap, const int16_t *Bp, int32_t *C, size_t ldc, int acc);

static void ukr_i8_generic(size_t kc2, const int32_t *Ap, const int16_t *Bp, int32_t *C, size_t ldc, int acc) {
    uint32_t c[MR][16]; /* unsigned: int32 wrap-around without undefined behaviour, as the SIMD kernels */
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < 16; j++) c[r][j] = acc ? (uint32_t)C[r * ldc + j] : 0u;
    for (size_t p = 0; p < kc2; p++, Ap += MR, Bp += 32)
        for (int r = 0; r < MR; r++) {
            int32_t lo = (int16_t)(Ap[r] & 0xffff), hi = (int16_t)((uint32_t)Ap[r] >> 16);
            for (int j = 0; j < 16; j++) c[r][j] += (uint32_t)(lo * Bp[2 * j] + hi * Bp[2 * j + 1]);
        }
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < 16; j++) C[r * ldc + j] = (int32_t)c[r][j];
}

#ifdef CM_X86
/* Twelve named accumulators, and each product added as soon as it is made: with an accumulator array and two
 * products in flight per row, GCC ran out of the 16 ymm registers and spilled accumulators to the stack in
 * the inner loop (a store and a load per vpaddd), which made this kernel slower than the f32 one. */
#define I8_ROW(r, c0, c1)                                                                                       \
    do {                                                                                                        \
        __m256i a = _mm256_set1_epi32(Ap[r]);                                                                   \
        c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(b0, a));                                                   \
        c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(b1, a));                                                   \
    } while (0)

__attribute__((target("avx2")))
static void ukr_i8_avx2(size_t kc2, const int32_t *Ap, const int16_t *Bp, int32_t *C, size_t ldc, int acc) {
    __m256i c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
#define I8_LD(r, c0, c1)                                                                                        \
    c0 = acc ? _mm256_loadu_si256((const __m256i *)(C + r * ldc)) : _mm256_setzero_si256();                   \
    c1 = acc ? _mm256_loadu_si256((const __m256i *)(C + r * ldc + 8)) : _mm256_setzero_si256()
    I8_LD(0, c00, c01); I8_LD(1, c10, c11); I8_LD(2, c20, c21); I8_LD(3, c30, c31); I8_LD(4, c40, c41);
    I8_LD(5, c50, c51);
#undef I8_LD
    for (size_t p = 0; p < kc2; p++, Ap += MR, Bp += 32) {
        __m256i b0 = _mm256_load_si256((const __m256i *)Bp), b1 = _mm256_load_si256((const __m256i *)(Bp + 16));
        I8_ROW(0, c00, c01); I8_ROW(1, c10, c11); I8_ROW(2, c20, c21);
        I8_ROW(3, c30, c31); I8_ROW(4, c40, c41); I8_ROW(5, c50, c51);
    }
#define I8_ST(r, c0, c1)                                                                                        \
    _mm256_storeu_si256((__m256i *)(C + r * ldc), c0);                                                          \
    _mm256_storeu_si256((__m256i *)(C + r * ldc + 8), c1)
    I8_ST(0, c00, c01); I8_ST(1, c10, c11); I8_ST(2, c20, c21); I8_ST(3, c30, c31); I8_ST(4, c40, c41);
    I8_ST(5, c50, c51);
#undef I8_ST
}
#undef I8_ROW

/* The AVX-512 int8 tiles (6 x 32, named accumulators as in ukr_i8_avx2), generated twice: with vpmaddwd + vpaddd,
 * and with AVX512-VNNI's vpdpwssd, which adds both int16 products of a pair to the int32 accumulator in one
 * instruction (wrapping, as vpmaddwd + vpaddd: the pair sum of int8-range values never overflows), so the two are
 * bit-identical and the VNNI one has half the instructions in the inner loop. */
#define I8_MADD512(c, b, a) _mm512_add_epi32(c, _mm512_madd_epi16(b, a))
#define I8_DPWSSD512(c, b, a) _mm512_dpwssd_epi32(c, b, a)
#define I8_LD512(r, c0, c1)                                                                                     \
    c0 = acc ? _mm512_loadu_si512((const void *)(C + r * ldc)) : _mm512_setzero_si512();                      \
    c1 = acc ? _mm512_loadu_si512((const void *)(C + r * ldc + 16)) : _mm512_setzero_si512()
#define I8_ROW512(UPD, r, c0, c1)                                                                               \
    do {                                                                                                        \
        __m512i a = _mm512_set1_epi32(Ap[r]);                                                                   \
        c0 = UPD(c0, b0, a);                                                                                    \
        c1 = UPD(c1, b1, a);                                                                                    \
    } while (0)
#define I8_ST512(r, c0, c1)                                                                                     \
    _mm512_storeu_si512((void *)(C + r * ldc), c0);                                                             \
    _mm512_storeu_si512((void *)(C + r * ldc + 16), c1)
#define UKR_I8_AVX512(NAME, TARGET, UPD)                                                                        \
    __attribute__((target(TARGET)))                                                                             \
    static void NAME(size_t kc2, const int32_t *Ap, const int16_t *Bp, int32_t *C, size_t ldc, int acc) {       \
        __m512i c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;                                     \
        I8_LD512(0, c00, c01); I8_LD512(1, c10, c11); I8_LD512(2, c20, c21);                                    \
        I8_LD512(3, c30, c31); I8_LD512(4, c40, c41); I8_LD512(5, c50, c51);                                    \
        for (size_t p = 0; p < kc2; p++, Ap += MR, Bp += 64) {                                                  \
            __m512i b0 = _mm512_load_si512((const void *)Bp), b1 = _mm512_load_si512((const void *)(Bp + 32)); \
            I8_ROW512(UPD, 0, c00, c01); I8_ROW512(UPD, 1, c10, c11); I8_ROW512(UPD, 2, c20, c21);              \
            I8_ROW512(UPD, 3, c30, c31); I8_ROW512(UPD, 4, c40, c41); I8_ROW512(UPD, 5, c50, c51);              \
        }                                                                                                       \
        I8_ST512(0, c00, c01); I8_ST512(1, c10, c11); I8_ST512(2, c20, c21);                                    \
        I8_ST512(3, c30, c31); I8_ST512(4, c40, c41); I8_ST512(5, c50, c51);                                    \
    }

UKR_I8_AVX512(ukr_i8_avx512, "avx512f,avx512bw", I8_MADD512)
UKR_I8_AVX512(ukr_i8_avx512vnni, "avx512f,avx512bw,avx512vnni", I8_DPWSSD512)
#endif

/* ---- epilogue: bias, activation, one rounding into the output ---------------------------------------- */

/* v = act(v + bias) over one row segment: one plain loop per case, so each vectorises */
static void bias_act_f32(float *v, size_t n, const float *cb, const float *rb, int act, float lo, float hi) {
    if (cb) for (size_t j = 0; j < n; j++) v[j] += cb[j];
    else if (rb) { float b = *rb; for (size_t j = 0; j < n; j++) v[j] += b; }
    switch (act) {
    case ACT_RELU: for (size_t j = 0; j < n; j++) v[j] = v[j] > 0.f ? v[j] : 0.f; break;
    case ACT_RELU6: for (size_t j = 0; j < n; j++) v[j] = v[j] < 0.f ? 0.f : v[j] > 6.f ? 6.f : v[j]; break;
    case ACT_CLIP: for (size_t j = 0; j < n; j++) v[j] = v[j] < lo ? lo : v[j] > hi ? hi : v[j]; break;
    default: break;
    }
}

static void epilogue_f32(const CmGemm *g, const float *C, size_t ldc, size_t i0, size_t mc, size_t j0, size_t nc) {
    const float *bias = (const float *)g->bias;
    for (size_t i = 0; i < mc; i++) {
        float *row = (float *)C + i * ldc;
        bias_act_f32(row, nc, bias && !g->bias_rows ? bias + j0 : NULL, bias && g->bias_rows ? bias + i0 + i : NULL,
                     g->act, g->lo, g->hi);
        char *o = (char *)g->out + ((i0 + i) * g->ldo + j0) * DT_SIZE[g->od];
        if ((char *)row != o) cm_from_f32(row, nc, g->od, o);
    }
}

/* The fused requant of one row segment (kernels_ref.requant_epilogue): v = clamp(acc + bias, L, U), [L, U] the
 * activation's range intersected with int32 (clamping to the one and then the other is clamping to that), then
 * clamp(rshift_rhaz(v * m, s) + zp, qlo, qhi) into int8. cb: per-column bias, else rb; m, s: per column when
 * per_col, else one pair. The portable loop, and AVX2 on 8 outputs at a time (the AVX2 loop returns how many it
 * did); the int64 products and shifts are the same in both. */
typedef struct { int64_t L, U, zp, qlo, qhi; } RqBounds;

static void rq_tail(const int32_t *row, size_t j, size_t n, const int32_t *cb, int64_t rb, const RqBounds *q,
                    const int32_t *m, const int32_t *s, int per_col, int8_t *o) {
    for (; j < n; j++) {
        int64_t v = (int64_t)row[j] + (cb ? cb[j] : rb);
        v = v < q->L ? q->L : v > q->U ? q->U : v;
        size_t p = per_col ? j : 0;
        v = rshift_rhaz(v * (int64_t)m[p], s[p]) + q->zp;
        o[j] = (int8_t)(v < q->qlo ? q->qlo : v > q->qhi ? q->qhi : v);
    }
}

#ifdef CM_X86
__attribute__((target("avx2")))
static __m256i rq4_avx2(__m256i v, __m256i vm, __m256i vs, const RqBounds *q) {
    const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi64x(1);
    __m256i L = _mm256_set1_epi64x(q->L), U = _mm256_set1_epi64x(q->U);
    __m256i qlo = _mm256_set1_epi64x(q->qlo), qhi = _mm256_set1_epi64x(q->qhi);
    v = _mm256_blendv_epi8(v, L, _mm256_cmpgt_epi64(L, v));
    v = _mm256_blendv_epi8(v, U, _mm256_cmpgt_epi64(v, U));
    v = _mm256_mul_epi32(v, vm);                                 /* v fits int32, m in [0, 2^31): exact */
    __m256i sg = _mm256_cmpgt_epi64(zero, v), half = _mm256_srli_epi64(_mm256_sllv_epi64(one, vs), 1);
    v = _mm256_sub_epi64(_mm256_xor_si256(v, sg), sg);           /* |v| < 2^62, + half < 2^63 */
    v = _mm256_srlv_epi64(_mm256_add_epi64(v, half), vs);
    v = _mm256_add_epi64(_mm256_sub_epi64(_mm256_xor_si256(v, sg), sg), _mm256_set1_epi64x(q->zp));
    v = _mm256_blendv_epi8(v, qlo, _mm256_cmpgt_epi64(qlo, v));
    return _mm256_blendv_epi8(v, qhi, _mm256_cmpgt_epi64(v, qhi));
}

__attribute__((target("avx2")))
static size_t rq_row_avx2(const int32_t *row, size_t n, const int32_t *cb, int64_t rb, const RqBounds *q,
                          const int32_t *m, const int32_t *s, int per_col, int8_t *o) {
    const __m256i lo32 = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m256i vrb = _mm256_set1_epi64x(rb), vm = _mm256_set1_epi64x(m[0]), vs = _mm256_set1_epi64x(s[0]);
    __m256i vm1 = vm, vs1 = vs;
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256i v0 = _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(row + j)));
        __m256i v1 = _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(row + j + 4)));
        if (cb) {
            v0 = _mm256_add_epi64(v0, _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(cb + j))));
            v1 = _mm256_add_epi64(v1, _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(cb + j + 4))));
        } else {
            v0 = _mm256_add_epi64(v0, vrb);
            v1 = _mm256_add_epi64(v1, vrb);
        }
        if (per_col) {
            vm = _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(m + j)));
            vm1 = _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(m + j + 4)));
            vs = _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(s + j)));
            vs1 = _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(s + j + 4)));
        }
        v0 = _mm256_permutevar8x32_epi32(rq4_avx2(v0, vm, vs, q), lo32);   /* int8 values in int64 lanes: */
        v1 = _mm256_permutevar8x32_epi32(rq4_avx2(v1, vm1, vs1, q), lo32); /* low halves to the front */
        __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v0), _mm256_castsi256_si128(v1));
        _mm_storel_epi64((__m128i *)(o + j), _mm_packs_epi16(w, w));
    }
    return j;
}
#endif

static void epilogue_rq(const CmGemm *g, const int32_t *C, size_t ldc, size_t i0, size_t mc, size_t j0, size_t nc) {
    const CmRequant *rq = g->rq;
    const int32_t *bias = (const int32_t *)g->bias;
    int64_t lo = (int64_t)g->lo, hi = (int64_t)g->hi, L = INT32_MIN, U = INT32_MAX;
    if (g->act == ACT_RELU) L = 0;
    else if (g->act == ACT_CLIP) { /* clamp(clamp(v, lo, hi), I32) = clamp(v, clamp(lo, I32), clamp(hi, I32)) */
        L = lo < INT32_MIN ? INT32_MIN : lo > INT32_MAX ? INT32_MAX : lo;
        U = hi < INT32_MIN ? INT32_MIN : hi > INT32_MAX ? INT32_MAX : hi;
    }
    RqBounds q = {L, U, rq->zp, rq->lo, rq->hi};
    int per_col = rq->n > 1 && rq->per_col;
    for (size_t i = 0; i < mc; i++) {
        const int32_t *row = C + i * ldc;
        int64_t rb = bias && g->bias_rows ? bias[i0 + i] : 0;
        const int32_t *cb = bias && !g->bias_rows ? bias + j0 : NULL;
        size_t p = rq->n == 1 ? 0 : per_col ? j0 : i0 + i;
        int8_t *o = (int8_t *)g->out + (i0 + i) * g->ldo + j0;
        size_t j = 0;
#ifdef CM_X86
        if (cm_simd_level() > 0) j = rq_row_avx2(row, nc, cb, rb, &q, rq->mult + p, rq->shift + p, per_col, o);
#endif
        rq_tail(row, j, nc, cb, rb, &q, rq->mult + p, rq->shift + p, per_col, o);
    }
}

static void epilogue_i32(const CmGemm *g, const int32_t *C, size_t ldc, size_t i0, size_t mc, size_t j0, size_t nc) {
    if (g->rq && g->rq->n > 0) { epilogue_rq(g, C, ldc, i0, mc, j0, nc); return; }
    const int32_t *bias = (const int32_t *)g->bias;
    int64_t lo = (int64_t)g->lo, hi = (int64_t)g->hi, omin = dt_min(g->od), omax = dt_max(g->od);
    for (size_t i = 0; i < mc; i++) {
        const int32_t *row = C + i * ldc;
        int64_t rb = bias && g->bias_rows ? bias[i0 + i] : 0;
        const int32_t *cb = bias && !g->bias_rows ? bias + j0 : NULL;
        char *o = (char *)g->out + ((i0 + i) * g->ldo + j0) * DT_SIZE[g->od];
        for (size_t j = 0; j < nc; j++) {
            int64_t v = (int64_t)row[j] + (cb ? cb[j] : rb);
            if (g->act == ACT_RELU) v = v > 0 ? v : 0;
            else if (g->act == ACT_CLIP) v = v < lo ? lo : v > hi ? hi : v;
            v = v < omin ? omin : v > omax ? omax : v;
            if (g->od == DT_I8) ((int8_t *)o)[j] = (int8_t)v;
            else if (g->od == DT_I32) ((int32_t *)o)[j] = (int32_t)v;
            else ((uint8_t *)o)[j] = (uint8_t)v;
        }
    }
}

/* ---- task split and driver -------------------------------------------------------------------------
 * Column-panel mode: a task is all rows of a panel of columns and packs its own B block per K block.
 * Shared mode (few columns): phase 1 packs all of B once (tasks: K block x 256-column chunk) into strips
 * laid out as [K block][strip][k][NR] (int8: [K block of pairs][strip][pair][NR][2]); phase 2 runs the
 * output tiles. Either way a task packs its A block (MC rows at a time) per K block. */

#define PACK_COLS 256

typedef struct {
    const CmGemm *g;
    int is_int;
    size_t nr;
    ukr_f32 kf;
    ukr_i8 ki;
    size_t kblk, ksteps;    /* K block (in k, or in pairs of k) and K in the same unit */
    size_t npad;            /* N rounded up to whole strips */
    void *bp;               /* all of B, packed */
    void *ap;               /* all of A, packed (when more than one column tile would pack it again) */
    size_t mpad;            /* M rounded up to whole MR strips */
    size_t tiles_m, tiles_n; /* output tiles along M and N: whole MR-row / NR-column strips, split evenly */
    size_t chunks_n;        /* phase-1 column chunks */
    int own_b;              /* column-panel mode: each task packs its own B (see split) */
    int failed;
} Job;

static size_t cdiv(size_t a, size_t b) { return (a + b - 1) / b; }

/* Tiles. Enough columns for every thread (or one thread): column panels of all rows, each packing its own B
 * per K block (it stays in cache, nothing is packed twice). Few columns (late conv layers, N = 7 x 7): B is
 * packed once for everyone and the tiles split M too. The strips are dealt out evenly (tiles differ by at most
 * one strip) and, with several threads, the tile count is a multiple of the thread count: rounding tile widths
 * up to whole strips used to leave e.g. 7 tiles for 2 threads on a 784-column layer (one thread idle 1/7). */
#define PANEL_COLS 384

static size_t round_up(size_t a, size_t b) { return cdiv(a, b) * b; }

static void split(Job *j, size_t M, size_t N, size_t K) {
    size_t nr = j->nr, threads = (size_t)cm_get_threads(), sm = cdiv(M, MR), sn = cdiv(N, nr);
    double work = (double)M * (double)N * (double)K;
    if (work < 2e5) threads = 1;
    size_t want = threads == 1 ? 1 : 2 * threads;
    size_t panels = round_up(cdiv(N, PANEL_COLS) > want ? cdiv(N, PANEL_COLS) : want, threads);
    if (sn >= 4 * panels || (threads == 1 && panels <= sn)) {
        j->own_b = 1;
        j->tiles_m = 1;
        j->tiles_n = panels;
        return;
    }
    size_t tm = cdiv(M, MC), tn = cdiv(N, NC_MAX), tn_max = sn / 4 > 1 ? sn / 4 : 1, tm_max = sm / 2 > 1 ? sm / 2 : 1;
    if (tm > sm) tm = sm;
    if (tn > sn) tn = sn;
    while (tm * tn < want && tn < tn_max) tn++;
    while (tm * tn < want && tm < tm_max) tm++;
    while ((tm * tn) % threads && tn < tn_max) tn++; /* a multiple of the threads where the strips allow */
    while ((tm * tn) % threads && tm < tm_max) tm++;
    j->tiles_m = tm;
    j->tiles_n = tn;
}

/* rows / columns of tile t of n over s strips of width w, clipped to len: [*lo, *lo + return) */
static size_t tile_range(size_t t, size_t n, size_t s, size_t w, size_t len, size_t *lo) {
    size_t a = t * s / n * w, b = (t + 1) * s / n * w;
    *lo = a;
    return (b < len ? b : len) - a;
}

/* packed B of K block starting at p0 (k or pairs), strip t; in elements of the packed type */
static size_t bp_offset(const Job *j, size_t p0, size_t kc, size_t t) {
    return (p0 * j->npad + t * kc * j->nr) * (j->is_int ? 2 : 1);
}

/* packed A of K block starting at p0, rows from i0 (a multiple of MR); in 4-byte words (f32, or int16 pairs) */
static size_t ap_offset(const Job *j, size_t p0, size_t kc, size_t i0) { return p0 * j->mpad + (i0 / MR) * kc * MR; }

/* A for K block task / groups, rows [MC (task % groups), + MC), into j->ap */
static void pack_a_task(void *ctx, size_t task) {
    Job *j = (Job *)ctx;
    const CmGemm *g = j->g;
    size_t groups = cdiv(g->M, MC), p0 = (task / groups) * j->kblk, i0 = (task % groups) * MC;
    size_t kc = j->ksteps - p0 < j->kblk ? j->ksteps - p0 : j->kblk, mc = g->M - i0 < MC ? g->M - i0 : MC;
    if (j->is_int) pack_a_i8(g, i0, mc, p0, kc, (int32_t *)j->ap + ap_offset(j, p0, kc, i0));
    else pack_a_f32(g, i0, mc, p0, kc, (float *)j->ap + ap_offset(j, p0, kc, i0));
}

static void pack_task(void *ctx, size_t task) {
    Job *j = (Job *)ctx;
    const CmGemm *g = j->g;
    size_t p0 = (task / j->chunks_n) * j->kblk, j0 = (task % j->chunks_n) * PACK_COLS;
    size_t kc = j->ksteps - p0 < j->kblk ? j->ksteps - p0 : j->kblk, nc = g->N - j0 < PACK_COLS ? g->N - j0 : PACK_COLS;
    void *row = scratch(BUF_ROW, 2 * (PACK_COLS + 64) * 4);
    if (!row) { j->failed = 1; return; }
    if (j->is_int)
        pack_b_i8(g, p0, kc, j0, nc, j->nr, (int16_t *)j->bp + bp_offset(j, p0, kc, j0 / j->nr), (int8_t *)row);
    else
        pack_b_f32(g, p0, kc, j0, nc, j->nr, (float *)j->bp + bp_offset(j, p0, kc, j0 / j->nr), (float *)row);
}

/* rows [i0, i0 + mc) x columns [j0, j0 + nc) of C for one K block: pack A, run the micro-kernels over the B
 * strips at bs (strip t at bs + t kc NR packed elements), then the epilogue after the last K block */
static void run_block(Job *j, void *Ap, const void *bs, char *C, size_t ldc, size_t i0, size_t mc, size_t j0,
                      size_t nc, size_t p0, size_t kc) {
    const CmGemm *g = j->g;
    size_t nr = j->nr, strips_n = cdiv(nc, nr);
    int acc = p0 > 0, last = p0 + kc >= j->ksteps;
    float edge_f[MR * NR_MAX];
    int32_t edge_i[MR * NR_MAX];
    if (j->ap) Ap = (char *)j->ap + ap_offset(j, p0, kc, i0) * 4;
    else if (j->is_int) pack_a_i8(g, i0, mc, p0, kc, (int32_t *)Ap);
    else pack_a_f32(g, i0, mc, p0, kc, (float *)Ap);
    for (size_t t = 0; t < strips_n; t++) {
        size_t w = nc - t * nr < nr ? nc - t * nr : nr;
        const void *b = j->is_int ? (const void *)((const int16_t *)bs + t * kc * nr * 2)
                                  : (const void *)((const float *)bs + t * kc * nr);
        for (size_t s = 0; s < mc; s += MR) {
            size_t h = mc - s < MR ? mc - s : MR;
            char *c = C + (s * ldc + t * nr) * 4;
            int full = h == MR && w == nr;
            /* an edge tile runs in a full-size buffer: the same arithmetic, only part of it kept */
            char *cc = full ? c : j->is_int ? (char *)edge_i : (char *)edge_f;
            size_t ld = full ? ldc : nr;
            if (!full && acc)
                for (size_t r = 0; r < h; r++) memcpy(cc + r * nr * 4, c + r * ldc * 4, w * 4);
            if (j->is_int) j->ki(kc, (const int32_t *)Ap + s * kc, (const int16_t *)b, (int32_t *)cc, ld, acc);
            else j->kf(kc, (const float *)Ap + s * kc, (const float *)b, (float *)cc, ld, acc);
            if (!full)
                for (size_t r = 0; r < h; r++) memcpy(c + r * ldc * 4, cc + r * nr * 4, w * 4);
            /* the micro-tile is final: bias, activation and the output rounding while it is in L1 */
            if (last && j->is_int) epilogue_i32(g, (const int32_t *)c, ldc, i0 + s, h, j0 + t * nr, w);
            else if (last) epilogue_f32(g, (const float *)c, ldc, i0 + s, h, j0 + t * nr, w);
        }
    }
}

/* one output tile; in column-panel mode (own_b) the tile is all rows of nc columns and packs its own B */
static void gemm_task(void *ctx, size_t task) {
    Job *j = (Job *)ctx;
    const CmGemm *g = j->g;
    size_t nr = j->nr, i0, j0;
    size_t mc = tile_range(task / j->tiles_n, j->tiles_m, cdiv(g->M, MR), MR, g->M, &i0);
    size_t nc = tile_range(task % j->tiles_n, j->tiles_n, cdiv(g->N, nr), nr, g->N, &j0);
    if (mc == 0 || nc == 0) return;
    size_t mblk = j->own_b ? MC : mc, bstrip = j->kblk * nr * 4; /* bytes of one packed B strip */
    void *Ap = j->ap ? j->ap : scratch(BUF_A, cdiv(mblk, MR) * MR * j->kblk * 4); /* run_block picks its block */
    void *Bo = j->own_b ? scratch(BUF_B, cdiv(nc, nr) * bstrip + 64) : NULL;
    void *row = j->own_b ? scratch(BUF_ROW, 2 * (nc + 64) * 4) : NULL;
    /* f32 output: accumulate in place; otherwise in an f32 / int32 tile */
    int in_place = !j->is_int && g->od == DT_F32;
    void *Ct = in_place ? NULL : scratch(BUF_C, mc * nc * 4);
    if (!Ap || (!in_place && !Ct) || (j->own_b && (!Bo || !row))) { j->failed = 1; return; }
    if (Bo) Bo = (void *)(((uintptr_t)Bo + 63) & ~(uintptr_t)63);
    char *C = in_place ? (char *)g->out + (i0 * g->ldo + j0) * 4 : (char *)Ct;
    size_t ldc = in_place ? g->ldo : nc;
    for (size_t p0 = 0; p0 < j->ksteps; p0 += j->kblk) {
        size_t kc = j->ksteps - p0 < j->kblk ? j->ksteps - p0 : j->kblk;
        const void *bs;
        if (j->own_b) {
            if (j->is_int) pack_b_i8(g, p0, kc, j0, nc, nr, (int16_t *)Bo, (int8_t *)row);
            else pack_b_f32(g, p0, kc, j0, nc, nr, (float *)Bo, (float *)row);
            bs = Bo;
        } else {
            size_t off = bp_offset(j, p0, kc, j0 / nr);
            bs = j->is_int ? (const void *)((const int16_t *)j->bp + off) : (const void *)((const float *)j->bp + off);
        }
        for (size_t ib = 0; ib < mc; ib += mblk) {
            size_t h = mc - ib < mblk ? mc - ib : mblk;
            run_block(j, Ap, bs, C + ib * ldc * 4, ldc, i0 + ib, h, j0, nc, p0, kc);
        }
    }
}

static int gemm_run(const CmGemm *g, int is_int) {
    Job j;
    memset(&j, 0, sizeof(j));
    j.g = g;
    j.is_int = is_int;
    j.nr = 16;
    j.kf = ukr_f32_generic;
    j.ki = ukr_i8_generic;
#ifdef CM_X86
    int level = cm_simd_level();
    if (level >= SIMD_AVX512) {
        j.nr = 32;
        j.kf = ukr_f32_avx512;
        j.ki = level == SIMD_AVX512_VNNI ? ukr_i8_avx512vnni : ukr_i8_avx512;
    }
    else if (level == SIMD_AVX2) { j.kf = ukr_f32_avx2; j.ki = ukr_i8_avx2; }
#endif
    if (g->M == 0 || g->N == 0) return 0;
    j.kblk = is_int ? KC2 : KC;
    j.ksteps = is_int ? cdiv(g->K, 2) : g->K;
    j.npad = cdiv(g->N, j.nr) * j.nr;
    j.chunks_n = cdiv(g->N, PACK_COLS);
    split(&j, g->M, g->N, g->K);
    j.mpad = cdiv(g->M, MR) * MR;
    if (j.tiles_n > 1) { /* every column tile reads all of its rows of A: pack A once (4 bytes per f32 or pair) */
        void *raw = scratch(BUF_AP, j.ksteps * j.mpad * 4 + 64);
        if (!raw) return -1;
        j.ap = (void *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
        cm_parallel_for(cdiv(j.ksteps, j.kblk) * cdiv(g->M, MC), pack_a_task, &j);
    }
    if (!j.own_b) { /* phase 1: all of B, packed once; 4 bytes per packed f32, or per int16 pair */
        void *raw = scratch(BUF_BP, j.ksteps * j.npad * 4 + 64);
        if (!raw) return -1;
        j.bp = (void *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
        cm_parallel_for(cdiv(j.ksteps, j.kblk) * j.chunks_n, pack_task, &j);
    }
    if (!j.failed) cm_parallel_for(j.tiles_m * j.tiles_n, gemm_task, &j);
    return j.failed ? -1 : 0;
}

int cm_sgemm(const CmGemm *g) { return gemm_run(g, 0); }

int cm_igemm(const CmGemm *g) { return gemm_run(g, 1); }
