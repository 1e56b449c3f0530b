/* Shared definitions of the cmodel C kernels: dtype codes, element conversions, integer rounding.
 *
 * Numeric convention (the same as torch_tpu/cmodel/kernels_ref.py): operands are stored in their
 * dtype, converted to f32 (or to int32/int64 for integer operands), computed, and rounded ONCE to the
 * output dtype; f32 -> bf16/f16 rounds to nearest even, float -> int rounds as the instruction says
 * and saturates.
 */
#ifndef TORCH_TPU_CMODEL_COMMON_H
#define TORCH_TPU_CMODEL_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* dtype codes, identical to torch_tpu.cmodel.isa.DType */
enum { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2, DT_I8 = 3, DT_I32 = 4, DT_U8 = 5, DT_COUNT = 6 };

static const int DT_SIZE[DT_COUNT] = {4, 2, 2, 1, 4, 1};

static inline int dt_is_float(int dt) { return dt == DT_F32 || dt == DT_F16 || dt == DT_BF16; }
static inline int dt_valid(int dt) { return dt >= 0 && dt < DT_COUNT; }

/* ---- float formats ---------------------------------------------------------------------- */

static inline float bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float bf16_to_f32(uint16_t h) { return bits_to_f32((uint32_t)h << 16); }

/* round to nearest even; NaN stays a (quiet) NaN */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400u));
            man &= 0x3ffu;
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 112u) << 23) | (man << 13);
    }
    return bits_to_f32(u);
}

/* round to nearest even, overflow to inf, NaN to quiet NaN */
static inline uint16_t f32_to_f16(float f) {
    uint32_t u = f32_to_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* result is an f16 subnormal (or zero) */
        if (a < 0x33000000u) return (uint16_t)sign;
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u, shift = 126u - e;
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = (a + 0xfffu + ((a >> 13) & 1u)) >> 13;
    return (uint16_t)(sign | (r - (112u << 10)));
}

/* ---- integers ----------------------------------------------------------------------------- */

static inline int64_t dt_min(int dt) { return dt == DT_I8 ? -128 : dt == DT_U8 ? 0 : (int64_t)INT32_MIN; }
static inline int64_t dt_max(int dt) { return dt == DT_I8 ? 127 : dt == DT_U8 ? 255 : (int64_t)INT32_MAX; }

static inline int64_t sat(int64_t v, int dt) {
    int64_t lo = dt_min(dt), hi = dt_max(dt);
    return v < lo ? lo : v > hi ? hi : v;
}

/* v / 2^s rounded half away from zero, s in [0, 63] (torch_tpu/fixed_point.py's spec) */
static inline int64_t rshift_rhaz(int64_t v, int s) {
    if (s <= 0) return v;
    int64_t half = (int64_t)1 << (s - 1);
    return v >= 0 ? (v + half) >> s : -((-v + half) >> s);
}

/* ---- bulk conversions (defined in convert.c) ------------------------------------------------ */

void cm_to_f32(const void *src, int dt, size_t n, float *dst);
void cm_from_f32(const float *src, size_t n, int dt, void *dst);
void cm_to_i64(const void *src, int dt, size_t n, int64_t *dst);
void cm_from_i64_sat(const int64_t *src, size_t n, int dt, void *dst);

/* ---- GEMM (gemm.c) --------------------------------------------------------------------------------
 * out[i, j] = act(sum_k A[i, k] B[k, j] + bias) rounded once to od; A row-major M x K (f32, or int8 for
 * cm_igemm); B row-major K x N with row stride ldb, or, with conv set, the implicit im2col of one conv input
 * group (cig x H x W): row k = (c, ki, kj), column p = (oh, ow). Output rows have stride ldo elements.
 * Bias (f32 / int32) per row (bias_rows) or per column; act is an ACT_* code of kernels.h; an int8 GEMM may
 * requantize its output in the epilogue (rq, int8 output). A conv's padded taps read conv->pad_value. Both return 0,
 * or -1 when out of memory. Threaded over M/N tiles (threads.h); results do not depend on the split. */

typedef struct { int64_t H, W, kh, kw, sh, sw, pt, pl, dh, dw, Wo; int pad_value; } CmConvGeom;

/* The fused requantization of an int8 GEMM (kernels_ref.requant_epilogue): with n > 0, the int8 output is
 * clamp(rshift_rhaz(sat_int32(act(acc + bias)) * mult[p], shift[p]) + zp, lo, hi), p = 0 when n == 1, else the
 * output row (per_col 0: a conv's output channel) or column (per_col 1: a matmul's N); n == 0: no requant. */
typedef struct {
    const int32_t *mult, *shift;
    int64_t n, zp;
    int per_col, lo, hi;
} CmRequant;

typedef struct {
    const void *a;
    const void *b;
    size_t ldb;
    const CmConvGeom *conv;
    size_t M, N, K;
    const void *bias;
    int bias_rows;
    int act;
    float lo, hi;
    void *out;
    int od;
    size_t ldo;
    const CmRequant *rq; /* NULL or n == 0: no fused requant; rows / columns counted from the GEMM's origin */
} CmGemm;

int cm_sgemm(const CmGemm *g);
int cm_igemm(const CmGemm *g);
int cm_simd_level(void); /* 0 generic, 1 avx2, 2 avx512 */
const char *cm_simd_name(void);

#endif
