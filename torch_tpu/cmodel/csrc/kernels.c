/* Dense compute kernels (conv, matmul, eltwise, activation, pool, LUT, requant, cast, reduce, softmax,
 * layernorm). The definition they implement is torch_tpu/cmodel/kernels_ref.py; see common.h for
 * the numeric convention. Every kernel converts its operands once, computes in f32 (int32/int64 for
 * integers) and rounds once into the output. */
#include <math.h>
#include <stdlib.h>
#include "common.h"
#include "kernels.h"
#include "threads.h"

#define NOMEM "out of memory"

static int64_t act_i(int64_t v, int act, float lo, float hi) {
    switch (act) {
    case ACT_RELU: return v > 0 ? v : 0;
    case ACT_CLIP: return v < (int64_t)lo ? (int64_t)lo : v > (int64_t)hi ? (int64_t)hi : v;
    default: return v;
    }
}

static float *f32_copy(const void *src, int dt, size_t n) {
    float *p = (float *)malloc(n * sizeof(float) + 4);
    if (p) cm_to_f32(src, dt, n, p);
    return p;
}

static int64_t *i64_copy(const void *src, int dt, size_t n) {
    int64_t *p = (int64_t *)malloc(n * sizeof(int64_t) + 8);
    if (p) cm_to_i64(src, dt, n, p);
    return p;
}

/* ---- depthwise (one input channel per group): direct loops over (ki, kj), threaded over output planes ---- */

typedef struct {
    void *out;
    int od, is_int, act;
    const void *x, *w, *bias; /* f32 / int8 operands, f32 / int32 bias */
    i64 N, Cin, H, W, Cout, kh, kw, Ho, Wo, sh, sw, pt, pl, dh, dw;
    float lo, hi;
    i64 ntasks;
    int failed;
    int pad_value;        /* int8: what a padded tap reads */
    const CmRequant *rq;  /* int8: fused requant per output channel, or NULL */
} DwJob;

/* one output plane (n, o) summed over k = (ki, kj) in order; the f32 body is compiled once per SIMD level */
#define DW_PLANE_BODY(T, ACC_T, acc, xs, ws)                                                                  \
    i64 cog = j->Cout / j->Cin, c = o / cog, P = j->Ho * j->Wo;                                                \
    for (i64 p = 0; p < P; p++) acc[p] = 0;                                                                    \
    for (i64 oh = 0; oh < j->Ho; oh++) {                                                                      \
        ACC_T *a = acc + oh * j->Wo;                                                                           \
        for (i64 ki = 0; ki < j->kh; ki++) {                                                                   \
            i64 ih = oh * j->sh - j->pt + ki * j->dh;                                                          \
            if (ih < 0 || ih >= j->H) continue;                                                                \
            for (i64 kj = 0; kj < j->kw; kj++) {                                                               \
                i64 off = kj * j->dw - j->pl, sw = j->sw;                                                      \
                i64 lo = off >= 0 ? 0 : (-off + sw - 1) / sw;                                                  \
                i64 hi = j->W - off <= 0 ? 0 : (j->W - off + sw - 1) / sw;                                     \
                if (hi > j->Wo) hi = j->Wo;                                                                    \
                const T *restrict xr = xs + ((n * j->Cin + c) * j->H + ih) * j->W + off;                      \
                ACC_T wv = ws[(o * j->kh + ki) * j->kw + kj], *restrict ar = a;                                \
                int l0 = (int)lo, l1 = (int)hi, st = (int)sw;                                                  \
                if (st == 1) for (int ow = l0; ow < l1; ow++) ar[ow] += wv * (ACC_T)xr[ow];                    \
                else if (st == 2) for (int ow = l0; ow < l1; ow++) ar[ow] += wv * (ACC_T)xr[2 * ow];           \
                else for (int ow = l0; ow < l1; ow++) ar[ow] += wv * (ACC_T)xr[ow * st];                       \
            }                                                                                                  \
        }                                                                                                      \
    }

static void dw_plane_f32(const DwJob *j, i64 n, i64 o, float *acc) {
    const float *xs = (const float *)j->x, *ws = (const float *)j->w;
    DW_PLANE_BODY(float, float, acc, xs, ws)
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CM_DW_AVX2 1
/* the same loops, vectorised 8-wide (mul then add, as above: no FMA contraction under -std=c99) */
__attribute__((target("avx2")))
static void dw_plane_f32_avx2(const DwJob *j, i64 n, i64 o, float *acc) {
    const float *xs = (const float *)j->x, *ws = (const float *)j->w;
    DW_PLANE_BODY(float, float, acc, xs, ws)
}
#endif

static void dw_plane_i8(const DwJob *j, i64 n, i64 o, int32_t *acc) {
    const int8_t *xs = (const int8_t *)j->x, *ws = (const int8_t *)j->w;
    DW_PLANE_BODY(int8_t, int32_t, acc, xs, ws)
}

/* the padded taps of one int8 plane: acc += pad_value * w for every tap outside the input (the loops above
 * skip them, so this is the whole difference to a conv over the input padded with pad_value) */
static void dw_pad_i8(const DwJob *j, i64 o, int32_t *acc) {
    const int8_t *ws = (const int8_t *)j->w;
    for (i64 oh = 0; oh < j->Ho; oh++) {
        int32_t *a = acc + oh * j->Wo;
        for (i64 ki = 0; ki < j->kh; ki++) {
            i64 ih = oh * j->sh - j->pt + ki * j->dh;
            int row_in = ih >= 0 && ih < j->H;
            for (i64 kj = 0; kj < j->kw; kj++) {
                int32_t pw = (int32_t)j->pad_value * ws[(o * j->kh + ki) * j->kw + kj];
                i64 off = kj * j->dw - j->pl, sw = j->sw, lo = 0, hi = 0; /* valid ow: [lo, hi) */
                if (row_in) {
                    lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
                    hi = j->W - off <= 0 ? 0 : (j->W - off + sw - 1) / sw;
                    if (hi > j->Wo) hi = j->Wo;
                    if (lo > hi) lo = hi;
                }
                for (i64 ow = 0; ow < lo; ow++) a[ow] = (int32_t)((uint32_t)a[ow] + (uint32_t)pw);
                for (i64 ow = hi; ow < j->Wo; ow++) a[ow] = (int32_t)((uint32_t)a[ow] + (uint32_t)pw);
            }
        }
    }
}

/* kernels_ref.requant_epilogue of int64 values r (already act(acc + bias)) into int8, parameters of channel o */
static void rq_plane(const CmRequant *rq, i64 o, const int64_t *r, i64 n, int8_t *dst) {
    i64 p = rq->n == 1 ? 0 : o;
    int64_t m = rq->mult[p];
    int s = rq->shift[p];
    for (i64 i = 0; i < n; i++) {
        int64_t v = r[i] < INT32_MIN ? INT32_MIN : r[i] > INT32_MAX ? INT32_MAX : r[i];
        v = rshift_rhaz(v * m, s) + rq->zp;
        dst[i] = (int8_t)(v < rq->lo ? rq->lo : v > rq->hi ? rq->hi : v);
    }
}

static void dw_task(void *ctx, size_t t) {
    DwJob *j = (DwJob *)ctx;
    i64 planes = j->N * j->Cout, p0 = planes * (i64)t / j->ntasks, p1 = planes * ((i64)t + 1) / j->ntasks;
    i64 P = j->Ho * j->Wo;
    void *acc = malloc((size_t)P * 8 + 8);
    if (!acc) { j->failed = 1; return; }
    for (i64 pl = p0; pl < p1; pl++) {
        i64 n = pl / j->Cout, o = pl % j->Cout;
        char *dst = (char *)j->out + (size_t)(pl * P) * DT_SIZE[j->od];
        if (j->is_int) {
            int32_t *a = (int32_t *)acc;
            int64_t *r = (int64_t *)acc;
            dw_plane_i8(j, n, o, a);
            if (j->pad_value) dw_pad_i8(j, o, a);
            int64_t bv = j->bias ? ((const int32_t *)j->bias)[o] : 0;
            for (i64 p = P - 1; p >= 0; p--) r[p] = act_i((int64_t)a[p] + bv, j->act, j->lo, j->hi); /* in place, widening */
            if (j->rq) rq_plane(j->rq, o, r, P, (int8_t *)dst);
            else cm_from_i64_sat(r, (size_t)P, j->od, dst);
        } else {
            float *a = (float *)acc;
#ifdef CM_DW_AVX2
            if (cm_simd_level() > 0) dw_plane_f32_avx2(j, n, o, a);
            else
#endif
                dw_plane_f32(j, n, o, a);
            if (j->bias) {
                float bv = ((const float *)j->bias)[o];
                for (i64 p = 0; p < P; p++) a[p] += bv;
            }
            float lo = j->lo, hi = j->hi; /* one plain loop per activation, so each vectorises */
            switch (j->act) {
            case ACT_RELU: for (i64 p = 0; p < P; p++) a[p] = a[p] > 0.f ? a[p] : 0.f; break;
            case ACT_RELU6: for (i64 p = 0; p < P; p++) a[p] = a[p] < 0.f ? 0.f : a[p] > 6.f ? 6.f : a[p]; break;
            case ACT_CLIP: for (i64 p = 0; p < P; p++) a[p] = a[p] < lo ? lo : a[p] > hi ? hi : a[p]; break;
            default: break;
            }
            cm_from_f32(a, (size_t)P, j->od, dst);
        }
    }
    free(acc);
}

/* ---- conv2d: packed GEMM per (n, group) over the implicit im2col (1x1 stride-1 reads x as B directly);
 * depthwise runs direct loops. Bias, activation, an int8 requant and the output rounding are fused into the
 * GEMM; padded taps read pad_value (int8; float convs pad with 0). ------------------------------------- */

const char *cm_conv2d(void *out, int od, const void *x, int xd, const void *w, int wd, const void *bias, int bd,
                      i64 N, i64 Cin, i64 H, i64 W, i64 Cout, i64 kh, i64 kw, i64 Ho, i64 Wo, i64 sh, i64 sw,
                      i64 pt, i64 pl, i64 dh, i64 dw, i64 groups, int act, float lo, float hi, int pad_value,
                      const CmRequant *rq) {
    i64 cig = Cin / groups, cog = Cout / groups, Kc = cig * kh * kw, P = Ho * Wo;
    int is_int = !dt_is_float(xd);
    int depthwise = cig == 1 && groups > 1;
    int direct = kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && Ho == H && Wo == W;
    size_t esz = is_int ? 1 : 4;
    /* float operands are computed in f32: f32 ones are used as they are, bf16/f16 converted once */
    const void *xs = is_int || xd == DT_F32 ? x : (const void *)f32_copy(x, xd, (size_t)(N * Cin * H * W));
    const void *ws = is_int || wd == DT_F32 ? w : (const void *)f32_copy(w, wd, (size_t)(Cout * Kc));
    const void *bs = is_int || !bias ? bias : (const void *)f32_copy(bias, bd, (size_t)Cout);
    const char *err = NULL;
    if (!xs || !ws || (bias && !bs)) { err = NOMEM; goto done; }
    if (depthwise) {
        DwJob j = {out, od, is_int, act, xs, ws, bs, N, Cin, H, W, Cout, kh, kw, Ho, Wo, sh, sw, pt, pl, dh, dw,
                   lo, hi, 0, 0, is_int ? pad_value : 0, rq && rq->n > 0 ? rq : NULL};
        i64 planes = N * Cout, work = planes * P * kh * kw;
        j.ntasks = work < 100000 ? 1 : planes < 256 ? planes : 256;
        cm_parallel_for((size_t)j.ntasks, dw_task, &j);
        if (j.failed) err = NOMEM;
        goto done;
    }
    CmConvGeom geom = {H, W, kh, kw, sh, sw, pt, pl, dh, dw, Wo, is_int ? pad_value : 0};
    for (i64 n = 0; n < N && !err; n++)
        for (i64 g = 0; g < groups && !err; g++) {
            /* a group's requant parameters start at its first output channel (per-tensor: the one pair) */
            CmRequant rg = {0};
            if (rq && rq->n > 0) {
                rg = *rq;
                if (rq->n > 1) { rg.mult += g * cog; rg.shift += g * cog; }
                rg.per_col = 0;
            }
            CmGemm G = {(const char *)ws + (size_t)(g * cog * Kc) * esz,
                        (const char *)xs + (size_t)((n * Cin + g * cig) * H * W) * esz, (size_t)P,
                        direct ? NULL : &geom, (size_t)cog, (size_t)P, (size_t)Kc,
                        bs ? (const char *)bs + (size_t)(g * cog) * 4 : NULL, 1, act, lo, hi,
                        (char *)out + (size_t)((n * Cout + g * cog) * P) * DT_SIZE[od], od, (size_t)P,
                        rg.n > 0 ? &rg : NULL};
            if (is_int ? cm_igemm(&G) : cm_sgemm(&G)) err = NOMEM;
        }
done:
    if (xs != x) free((void *)xs);
    if (ws != w) free((void *)ws);
    if (bs != bias) free((void *)bs);
    return err;
}

/* ---- (batched) matmul: out[b] = a[b] . b[b or 0] + bias (per column), through the packed GEMM -------- */

const char *cm_matmul(void *out, int od, const void *a, int ad, const void *b, int bd, const void *bias, int biasd,
                      i64 B, i64 Bb, i64 M, i64 K, i64 N, int act, float lo, float hi, const CmRequant *rq) {
    int is_int = !dt_is_float(ad);
    CmRequant rc = {0}; /* per output column */
    if (rq && rq->n > 0) { rc = *rq; rc.per_col = 1; }
    size_t esz = is_int ? 1 : 4;
    const void *as = is_int || ad == DT_F32 ? a : (const void *)f32_copy(a, ad, (size_t)(B * M * K));
    const void *bs = is_int || bd == DT_F32 ? b : (const void *)f32_copy(b, bd, (size_t)(Bb * K * N));
    const void *cs = is_int || !bias ? bias : (const void *)f32_copy(bias, biasd, (size_t)N);
    const char *err = NULL;
    if (!as || !bs || (bias && !cs)) err = NOMEM;
    for (i64 i = 0; i < B && !err; i++) {
        CmGemm G = {(const char *)as + (size_t)(i * M * K) * esz, (const char *)bs + (size_t)((Bb == 1 ? 0 : i) * K * N) * esz,
                    (size_t)N, NULL, (size_t)M, (size_t)N, (size_t)K, cs, 0, act, lo, hi,
                    (char *)out + (size_t)(i * M * N) * DT_SIZE[od], od, (size_t)N, rc.n > 0 ? &rc : NULL};
        if (is_int ? cm_igemm(&G) : cm_sgemm(&G)) err = NOMEM;
    }
    if (as != a) free((void *)as);
    if (bs != b) free((void *)bs);
    if (cs != bias) free((void *)cs);
    return err;
}

/* ---- binary eltwise with broadcast (a dim of size 1 repeats) ------------------------------------ */

enum { EW_ADD = 0, EW_SUB, EW_MUL, EW_DIV, EW_MAX, EW_MIN };

static void bstrides(const i64 *s, i64 *st) {
    i64 acc = 1;
    for (int d = 3; d >= 0; d--) { st[d] = s[d] == 1 ? 0 : acc; acc *= s[d]; }
}

/* f32 fast path: a has the output's shape, b too (or is the scalar); chunks of the flat range in parallel */
typedef struct { float *o; const float *a, *b; float sc; int op; size_t n, chunk; } EwJob;

static void ew_f32_task(void *ctx, size_t t) {
    const EwJob *j = (const EwJob *)ctx;
    size_t i0 = t * j->chunk, i1 = i0 + j->chunk < j->n ? i0 + j->chunk : j->n;
    float *o = j->o;
    const float *x = j->a, *y = j->b, sc = j->sc;
#define EW_LOOP(EXPR) do {                                                                                      \
        if (y) for (size_t i = i0; i < i1; i++) { float p = x[i], q = y[i]; o[i] = (EXPR); }                   \
        else for (size_t i = i0; i < i1; i++) { float p = x[i], q = sc; o[i] = (EXPR); }                       \
    } while (0)
    switch (j->op) {
    case EW_ADD: EW_LOOP(p + q); break;
    case EW_SUB: EW_LOOP(p - q); break;
    case EW_MUL: EW_LOOP(p * q); break;
    case EW_DIV: EW_LOOP(p / q); break;
    case EW_MAX: EW_LOOP((p != p || p > q) ? p : q); break;
    default: EW_LOOP((p != p || p < q) ? p : q); break;
    }
#undef EW_LOOP
}

#define EW_CHUNK ((size_t)1 << 16)
#define EWI_CHUNK ((size_t)4096)

typedef struct {
    void *out;
    const void *a, *b;
    int od, ad, bd, op;
    int64_t sc;
    size_t n;
} EwIntJob;

/* add / sub into int32 of int32 + int32 or int8 / int32 + scalar (the int8 models' residual adds and zero-point
 * subtractions): typed loops the compiler vectorises, the same int64 sum and saturation as the general path */
#define EW_ADD32_BODY                                                                                          \
    size_t i0 = t * EWI_CHUNK, i1 = j->n - i0 < EWI_CHUNK ? j->n : i0 + EWI_CHUNK;                            \
    int64_t sg = j->op == EW_SUB ? -1 : 1, sc = sg * j->sc;                                                   \
    int32_t *o = (int32_t *)j->out;                                                                           \
    if (j->b) {                                                                                               \
        const int32_t *x = (const int32_t *)j->a, *y = (const int32_t *)j->b;                                 \
        for (size_t i = i0; i < i1; i++) {                                                                    \
            int64_t v = (int64_t)x[i] + sg * (int64_t)y[i];                                                   \
            o[i] = (int32_t)(v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : v);                      \
        }                                                                                                     \
    } else if (j->ad == DT_I8) {                                                                              \
        const int8_t *x = (const int8_t *)j->a;                                                               \
        for (size_t i = i0; i < i1; i++) {                                                                    \
            int64_t v = (int64_t)x[i] + sc;                                                                   \
            o[i] = (int32_t)(v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : v);                      \
        }                                                                                                     \
    } else {                                                                                                  \
        const int32_t *x = (const int32_t *)j->a;                                                             \
        for (size_t i = i0; i < i1; i++) {                                                                    \
            int64_t v = (int64_t)x[i] + sc;                                                                   \
            o[i] = (int32_t)(v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : v);                      \
        }                                                                                                     \
    }

static int ew_add32_case(const EwIntJob *j) {
    return (j->op == EW_ADD || j->op == EW_SUB) && j->od == DT_I32 && j->sc > INT32_MIN && j->sc <= INT32_MAX &&
           (j->b ? j->ad == DT_I32 && j->bd == DT_I32 : (j->ad == DT_I32 || j->ad == DT_I8));
}

static void ew_add32_task(void *ctx, size_t t) {
    const EwIntJob *j = (const EwIntJob *)ctx;
    EW_ADD32_BODY
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target("avx2"))) static void ew_add32_task_avx2(void *ctx, size_t t) {
    const EwIntJob *j = (const EwIntJob *)ctx;
    EW_ADD32_BODY
}
#endif

static void ew_int_task(void *ctx, size_t t) {
    EwIntJob *j = (EwIntJob *)ctx;
    size_t i0 = t * EWI_CHUNK, len = j->n - i0 < EWI_CHUNK ? j->n - i0 : EWI_CHUNK;
    int64_t x[EWI_CHUNK], y[EWI_CHUNK];
    cm_to_i64((const char *)j->a + i0 * DT_SIZE[j->ad], j->ad, len, x);
    if (j->b) cm_to_i64((const char *)j->b + i0 * DT_SIZE[j->bd], j->bd, len, y);
    else for (size_t i = 0; i < len; i++) y[i] = j->sc;
    switch (j->op) {
    case EW_ADD: for (size_t i = 0; i < len; i++) x[i] += y[i]; break;
    case EW_SUB: for (size_t i = 0; i < len; i++) x[i] -= y[i]; break;
    case EW_MUL: for (size_t i = 0; i < len; i++) x[i] *= y[i]; break;
    case EW_MAX: for (size_t i = 0; i < len; i++) x[i] = x[i] > y[i] ? x[i] : y[i]; break;
    default: for (size_t i = 0; i < len; i++) x[i] = x[i] < y[i] ? x[i] : y[i]; break;
    }
    cm_from_i64_sat(x, len, j->od, (char *)j->out + i0 * DT_SIZE[j->od]);
}

const char *cm_eltwise(void *out, int od, const void *a, int ad, const i64 *as, const void *b, int bd,
                       const i64 *bs, const i64 *os, int op, double scalar) {
    int same_a = as[0] == os[0] && as[1] == os[1] && as[2] == os[2] && as[3] == os[3];
    int same_b = !b || (bs[0] == os[0] && bs[1] == os[1] && bs[2] == os[2] && bs[3] == os[3]);
    if (od == DT_F32 && ad == DT_F32 && (!b || bd == DT_F32) && same_a && same_b) {
        size_t n = (size_t)(os[0] * os[1] * os[2] * os[3]);
        EwJob j = {(float *)out, (const float *)a, (const float *)b, (float)scalar, op, n, EW_CHUNK};
        cm_parallel_for((n + EW_CHUNK - 1) / EW_CHUNK, ew_f32_task, &j);
        return NULL;
    }
    i64 sa[4], sb[4], na = as[0] * as[1] * as[2] * as[3], nb = b ? bs[0] * bs[1] * bs[2] * bs[3] : 1;
    size_t no = (size_t)(os[0] * os[1] * os[2] * os[3]);
    bstrides(as, sa);
    if (b) bstrides(bs, sb); else sb[0] = sb[1] = sb[2] = sb[3] = 0;
    if (dt_is_float(ad)) {
        float *fa = f32_copy(a, ad, (size_t)na), *fb = b ? f32_copy(b, bd, (size_t)nb) : NULL;
        float *fo = (float *)malloc(no * 4 + 4), sc = (float)scalar;
        const char *err = NULL;
        if (!fa || !fo || (b && !fb)) err = NOMEM;
        else {
            size_t o = 0;
            for (i64 n = 0; n < os[0]; n++) for (i64 c = 0; c < os[1]; c++) for (i64 h = 0; h < os[2]; h++)
                for (i64 w = 0; w < os[3]; w++, o++) {
                    float x = fa[n * sa[0] + c * sa[1] + h * sa[2] + w * sa[3]];
                    float y = fb ? fb[n * sb[0] + c * sb[1] + h * sb[2] + w * sb[3]] : sc, r;
                    switch (op) {
                    case EW_ADD: r = x + y; break;
                    case EW_SUB: r = x - y; break;
                    case EW_MUL: r = x * y; break;
                    case EW_DIV: r = x / y; break;
                    case EW_MAX: r = (x != x || x > y) ? x : y; break;
                    default: r = (x != x || x < y) ? x : y; break;
                    }
                    fo[o] = r;
                }
            cm_from_f32(fo, no, od, out);
        }
        free(fa); free(fb); free(fo);
        return err;
    }
    if (op == EW_DIV) return "integer division is not an eltwise op";
    if (same_a && same_b) { /* no broadcast: chunks through small int64 buffers, in parallel */
        EwIntJob j = {out, a, b, od, ad, bd, op, (int64_t)scalar, no};
        cm_task_fn fn = ew_int_task;
        if (ew_add32_case(&j)) {
            fn = ew_add32_task;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
            if (cm_simd_level() > 0) fn = ew_add32_task_avx2;
#endif
        }
        cm_parallel_for((no + EWI_CHUNK - 1) / EWI_CHUNK, fn, &j);
        return NULL;
    }
    int64_t *ia = i64_copy(a, ad, (size_t)na), *ib = b ? i64_copy(b, bd, (size_t)nb) : NULL;
    int64_t *io = (int64_t *)malloc(no * 8 + 8), isc = (int64_t)scalar;
    const char *err = NULL;
    if (!ia || !io || (b && !ib)) err = NOMEM;
    else {
        size_t o = 0;
        for (i64 n = 0; n < os[0]; n++) for (i64 c = 0; c < os[1]; c++) for (i64 h = 0; h < os[2]; h++)
            for (i64 w = 0; w < os[3]; w++, o++) {
                int64_t x = ia[n * sa[0] + c * sa[1] + h * sa[2] + w * sa[3]];
                int64_t y = ib ? ib[n * sb[0] + c * sb[1] + h * sb[2] + w * sb[3]] : isc, r;
                switch (op) {
                case EW_ADD: r = x + y; break;
                case EW_SUB: r = x - y; break;
                case EW_MUL: r = x * y; break;
                case EW_MAX: r = x > y ? x : y; break;
                default: r = x < y ? x : y; break;
                }
                io[o] = r;
            }
        cm_from_i64_sat(io, no, od, out);
    }
    free(ia); free(ib); free(io);
    return err;
}

/* ---- unary activations ---------------------------------------------------------------------- */

enum { A_RELU = 0, A_RELU6, A_CLIP, A_LEAKY, A_SIGMOID, A_TANH, A_GELU, A_GELU_TANH, A_SILU, A_EXP, A_LOG, A_SQRT,
       A_RSQRT, A_ABS, A_NEG, A_HSIGMOID, A_HSWISH, A_ELU, A_RECIP, A_SQUARE, A_ERF, A_SOFTPLUS, A_MISH, A_COUNT };

static float unary_f(float x, int op, float alpha, float lo, float hi) {
    switch (op) {
    case A_RELU: return x > 0.f ? x : 0.f;
    case A_RELU6: return x < 0.f ? 0.f : x > 6.f ? 6.f : x;
    case A_CLIP: return x < lo ? lo : x > hi ? hi : x;
    case A_LEAKY: return x > 0.f ? x : x * alpha;
    case A_SIGMOID: return 1.f / (1.f + expf(-x));
    case A_TANH: return tanhf(x);
    case A_GELU: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case A_GELU_TANH: return 0.5f * x * (1.f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case A_SILU: return x / (1.f + expf(-x));
    case A_EXP: return expf(x);
    case A_LOG: return logf(x);
    case A_SQRT: return sqrtf(x);
    case A_RSQRT: return 1.f / sqrtf(x);
    case A_ABS: return fabsf(x);
    case A_NEG: return -x;
    case A_HSIGMOID: { float t = x + 3.f; t = t < 0.f ? 0.f : t > 6.f ? 6.f : t; return t / 6.f; }
    case A_HSWISH: { float t = x + 3.f; t = t < 0.f ? 0.f : t > 6.f ? 6.f : t; return x * t / 6.f; }
    case A_ELU: return x > 0.f ? x : alpha * expm1f(x);
    case A_RECIP: return 1.f / x;
    case A_SQUARE: return x * x;
    case A_ERF: return erff(x);
    case A_SOFTPLUS: return x > 20.f ? x : log1pf(expf(x));
    default: { float sp = x > 20.f ? x : log1pf(expf(x)); return x * tanhf(sp); }
    }
}

/* f32 in and out: chunks of the range in parallel, straight from the input (clamps get plain loops) */
typedef struct { float *o; const float *x; int op; float alpha, lo, hi; size_t n, chunk; } ActJob;

static void act_f32_task(void *ctx, size_t t) {
    const ActJob *j = (const ActJob *)ctx;
    size_t i0 = t * j->chunk, i1 = i0 + j->chunk < j->n ? i0 + j->chunk : j->n;
    float *o = j->o, lo = j->lo, hi = j->hi;
    const float *x = j->x;
    switch (j->op) {
    case A_RELU: for (size_t i = i0; i < i1; i++) o[i] = x[i] > 0.f ? x[i] : 0.f; break;
    case A_RELU6: for (size_t i = i0; i < i1; i++) o[i] = x[i] < 0.f ? 0.f : x[i] > 6.f ? 6.f : x[i]; break;
    case A_CLIP: for (size_t i = i0; i < i1; i++) o[i] = x[i] < lo ? lo : x[i] > hi ? hi : x[i]; break;
    default: for (size_t i = i0; i < i1; i++) o[i] = unary_f(x[i], j->op, j->alpha, lo, hi); break;
    }
}

const char *cm_activation(void *out, int od, const void *x, int xd, i64 n, int op, float alpha, float lo, float hi) {
    if (op < 0 || op >= A_COUNT) return "unknown activation";
    if (xd == DT_F32 && od == DT_F32) {
        ActJob j = {(float *)out, (const float *)x, op, alpha, lo, hi, (size_t)n, EW_CHUNK};
        cm_parallel_for(((size_t)n + EW_CHUNK - 1) / EW_CHUNK, act_f32_task, &j);
        return NULL;
    }
    if (dt_is_float(xd)) {
        float *f = f32_copy(x, xd, (size_t)n);
        if (!f) return NOMEM;
        for (i64 i = 0; i < n; i++) f[i] = unary_f(f[i], op, alpha, lo, hi);
        cm_from_f32(f, (size_t)n, od, out);
        free(f);
        return NULL;
    }
    if (op != A_RELU && op != A_CLIP && op != A_ABS && op != A_NEG) return "activation has no integer form";
    int64_t *v = i64_copy(x, xd, (size_t)n);
    if (!v) return NOMEM;
    for (i64 i = 0; i < n; i++) {
        int64_t t = v[i];
        v[i] = op == A_RELU ? (t > 0 ? t : 0) : op == A_ABS ? (t < 0 ? -t : t) : op == A_NEG ? -t
             : (t < (int64_t)lo ? (int64_t)lo : t > (int64_t)hi ? (int64_t)hi : t);
    }
    cm_from_i64_sat(v, (size_t)n, od, out);
    free(v);
    return NULL;
}

typedef struct {
    void *out;
    const void *x;
    int od, xd, mode, count_pad, shift;
    i64 H, W, Ho, Wo, kh, kw, sh, sw, pt, pb, pl, pr, mult, planes, ntasks;
    int failed;
} PoolJob;

/* planes [p0, p1) of N x C: each converted once into a per-task buffer, pooled, rounded into out */
static void pool_task(void *ctx, size_t t) {
    PoolJob *j = (PoolJob *)ctx;
    i64 p0 = j->planes * (i64)t / j->ntasks, p1 = j->planes * ((i64)t + 1) / j->ntasks;
    i64 H = j->H, W = j->W, Ho = j->Ho, Wo = j->Wo, kh = j->kh, kw = j->kw, sh = j->sh, sw = j->sw;
    i64 pt = j->pt, pb = j->pb, pl = j->pl, pr = j->pr, mode = j->mode;
    int is_f = dt_is_float(j->xd);
    size_t xs = (size_t)(H * W), os = (size_t)(Ho * Wo), xe = (size_t)DT_SIZE[j->xd], oe = (size_t)DT_SIZE[j->od];
    void *bx = malloc(xs * 8 + 8), *bo = malloc(os * 8 + 8);
    if (!bx || !bo) { free(bx); free(bo); j->failed = 1; return; }
    float *fx = (float *)bx, *fo = (float *)bo;
    int64_t *ix = (int64_t *)bx, *io = (int64_t *)bo;
    for (i64 nc = p0; nc < p1; nc++) {
        const char *src = (const char *)j->x + (size_t)nc * xs * xe;
        if (is_f) cm_to_f32(src, j->xd, xs, fx);
        else cm_to_i64(src, j->xd, xs, ix);
        size_t o = 0;
        for (i64 oh = 0; oh < Ho; oh++)
            for (i64 ow = 0; ow < Wo; ow++, o++) {
                i64 h0 = oh * sh - pt, w0 = ow * sw - pl;
                i64 h1 = h0 + kh < H + pb ? h0 + kh : H + pb, w1 = w0 + kw < W + pr ? w0 + kw : W + pr;
                i64 pad_count = (h1 - h0) * (w1 - w0);
                i64 hs = h0 > 0 ? h0 : 0, ws = w0 > 0 ? w0 : 0, he = h1 < H ? h1 : H, we = w1 < W ? w1 : W;
                i64 count = j->count_pad ? pad_count : (he - hs) * (we - ws);
                if (is_f) {
                    float acc = mode == 0 ? -INFINITY : 0.f;
                    for (i64 h = hs; h < he; h++)
                        for (i64 w = ws; w < we; w++) {
                            float v = fx[h * W + w];
                            if (mode == 0) acc = (v > acc || v != v) ? v : acc;
                            else acc += v;
                        }
                    fo[o] = mode == 0 ? acc : acc / (float)(count > 0 ? count : 1);
                } else {
                    int64_t acc = mode == 0 ? INT64_MIN : 0;
                    for (i64 h = hs; h < he; h++)
                        for (i64 w = ws; w < we; w++) {
                            int64_t v = ix[h * W + w];
                            if (mode == 0) acc = v > acc ? v : acc;
                            else acc += v;
                        }
                    io[o] = mode == 0 ? acc : rshift_rhaz(acc * j->mult, j->shift);
                }
            }
        char *dst = (char *)j->out + (size_t)nc * os * oe;
        if (is_f) cm_from_f32(fo, os, j->od, dst);
        else cm_from_i64_sat(io, os, j->od, dst);
    }
    free(bx);
    free(bo);
}

/* ---- pool2d: max / avg; window clipped to the padded extent [-pt, H+pb) x [-pl, W+pr); threaded over planes */

const char *cm_pool2d(void *out, int od, const void *x, int xd, i64 N, i64 C, i64 H, i64 W, i64 Ho, i64 Wo,
                      i64 kh, i64 kw, i64 sh, i64 sw, i64 pt, i64 pb, i64 pl, i64 pr, int mode, int count_pad,
                      i64 mult, int shift) {
    PoolJob j = {out, x, od, xd, mode, count_pad, shift, H, W, Ho, Wo, kh, kw, sh, sw, pt, pb, pl, pr, mult,
                 N * C, 1, 0};
    i64 work = N * C * Ho * Wo * kh * kw;
    j.ntasks = work < 100000 ? 1 : (N * C < 64 ? N * C : 64);
    cm_parallel_for((size_t)j.ntasks, pool_task, &j);
    return j.failed ? NOMEM : NULL;
}

/* ---- LUT: out[i] = table[x[i] & 0xff] (the byte of x as an unsigned index) -------------------- */

const char *cm_lut(void *out, int od, const void *x, int xd, i64 n, const void *table) {
    (void)xd;
    size_t es = (size_t)DT_SIZE[od];
    const uint8_t *xi = (const uint8_t *)x;
    if (es == 1) {
        for (i64 i = 0; i < n; i++) ((uint8_t *)out)[i] = ((const uint8_t *)table)[xi[i]];
        return NULL;
    }
    if (es == 2) {
        for (i64 i = 0; i < n; i++) ((uint16_t *)out)[i] = ((const uint16_t *)table)[xi[i]];
        return NULL;
    }
    for (i64 i = 0; i < n; i++) {
        uint8_t idx = ((const uint8_t *)x)[i];
        memcpy((char *)out + (size_t)i * es, (const char *)table + idx * es, es);
    }
    return NULL;
}

/* ---- requant: out = sat(rshift_rhaz(x * mult[c], shift[c]) + zp) --------------------------------- */

typedef struct {
    void *out;
    const void *x;
    int od, xd;
    i64 C, inner, planes, ntasks, nparams, zp;
    const int32_t *mult, *shift;
} RqJob;

/* one channel plane: typed loads and stores, the rounding shift of rshift_rhaz written out */
#define RQ_LOOP(TIN, TOUT)                                                                                   \
    do {                                                                                                     \
        const TIN *xi = (const TIN *)j->x + pl * inner;                                                      \
        TOUT *o = (TOUT *)j->out + pl * inner;                                                               \
        for (i64 i = 0; i < inner; i++) {                                                                    \
            int64_t v = (int64_t)xi[i] * m, sg = v < 0 ? -1 : 0; /* branch-free: sign * ((|v| + half) >> s) */ \
            v = ((((v ^ sg) - sg) + half) >> s ^ sg) - sg;                                                   \
            v += zp;                                                                                         \
            o[i] = (TOUT)(v < lo ? lo : v > hi ? hi : v);                                                    \
        }                                                                                                    \
    } while (0)

/* the loop over planes, compiled twice: portable and AVX2 (64-bit products vectorised 4-wide) */
#define RQ_TASK_BODY \
    const RqJob *j = (const RqJob *)ctx;                                                                         \
    i64 p0 = j->planes * (i64)t / j->ntasks, p1 = j->planes * ((i64)t + 1) / j->ntasks, inner = j->inner;        \
    int64_t lo = dt_min(j->od), hi = dt_max(j->od), zp = j->zp;                                                  \
    for (i64 pl = p0; pl < p1; pl++) {                                                                           \
        i64 p = j->nparams == 1 ? 0 : pl % j->C;                                                                 \
        int64_t m = j->mult[p];                                                                                  \
        int s = j->shift[p];                                                                                     \
        int64_t half = s > 0 ? (int64_t)1 << (s - 1) : 0; /* s = 0: (|v| + 0) >> 0 = |v|, v unchanged */         \
        if (j->xd == DT_I32 && j->od == DT_I8) RQ_LOOP(int32_t, int8_t);                                         \
        else if (j->xd == DT_I32 && j->od == DT_I32) RQ_LOOP(int32_t, int32_t);                                  \
        else if (j->xd == DT_I32 && j->od == DT_U8) RQ_LOOP(int32_t, uint8_t);                                   \
        else if (j->xd == DT_I8 && j->od == DT_I8) RQ_LOOP(int8_t, int8_t);                                      \
        else if (j->xd == DT_I8 && j->od == DT_I32) RQ_LOOP(int8_t, int32_t);                                    \
        else if (j->xd == DT_I8 && j->od == DT_U8) RQ_LOOP(int8_t, uint8_t);                                     \
        else if (j->xd == DT_U8 && j->od == DT_I8) RQ_LOOP(uint8_t, int8_t);                                     \
        else if (j->xd == DT_U8 && j->od == DT_I32) RQ_LOOP(uint8_t, int32_t);                                   \
        else RQ_LOOP(uint8_t, uint8_t);                                                                          \
    }                                                                                                            \

static void rq_task(void *ctx, size_t t) { RQ_TASK_BODY }

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>

/* 4 lanes of int64 (values that fit int32): the same formula (|x m| + half) >> s with the sign put back, + zp,
 * clamped to [lo, hi] */
/* rshift_rhaz(v m, s) on 4 lanes of int64 whose values fit int32 (m < 2^31, half = 2^(s-1) or 0) */
__attribute__((target("avx2")))
static inline __m256i rs4_avx2(__m256i v, __m256i vm, __m256i vh, __m128i cnt) {
    v = _mm256_mul_epi32(v, vm);                          /* signed 32 x 32 -> 64 */
    __m256i sg = _mm256_cmpgt_epi64(_mm256_setzero_si256(), v);
    v = _mm256_sub_epi64(_mm256_xor_si256(v, sg), sg);    /* |v| */
    v = _mm256_srl_epi64(_mm256_add_epi64(v, vh), cnt);
    return _mm256_sub_epi64(_mm256_xor_si256(v, sg), sg);
}

__attribute__((target("avx2")))
static inline __m256i rq4_avx2(__m256i v, __m256i vm, __m256i vh, __m128i cnt, __m256i vz, __m256i lo, __m256i hi) {
    v = _mm256_add_epi64(rs4_avx2(v, vm, vh, cnt), vz);
    v = _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
    return _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
}

/* one plane, 4 at a time, of int32 or int8 input into int8 or int32 output; returns how many it did */
__attribute__((target("avx2")))
static i64 rq_plane_avx2(const void *x, int xd, void *o, int od, i64 n, int64_t m, int s, int64_t half, int64_t zp) {
    __m256i vm = _mm256_set1_epi64x(m), vh = _mm256_set1_epi64x(half), vz = _mm256_set1_epi64x(zp);
    __m256i lo = _mm256_set1_epi64x(dt_min(od)), hi = _mm256_set1_epi64x(dt_max(od));
    const __m256i lo32 = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m128i cnt = _mm_cvtsi32_si128(s);
    i64 i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256i v;
        if (xd == DT_I32) v = _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)((const int32_t *)x + i)));
        else {
            int32_t w;
            memcpy(&w, (const int8_t *)x + i, 4);
            v = _mm256_cvtepi8_epi64(_mm_cvtsi32_si128(w));
        }
        v = _mm256_permutevar8x32_epi32(rq4_avx2(v, vm, vh, cnt, vz, lo, hi), lo32); /* low halves in front */
        __m128i r = _mm256_castsi256_si128(v);
        if (od == DT_I32) _mm_storeu_si128((__m128i *)((int32_t *)o + i), r);
        else {
            r = _mm_packs_epi32(r, r);
            int32_t w = _mm_cvtsi128_si32(_mm_packs_epi16(r, r));
            memcpy((int8_t *)o + i, &w, 4);
        }
    }
    return i;
}

__attribute__((target("avx2"))) static void rq_task_avx2_other(void *ctx, size_t t) { RQ_TASK_BODY }

__attribute__((target("avx2"))) static void rq_task_avx2(void *ctx, size_t t) {
    const RqJob *j = (const RqJob *)ctx;
    if ((j->xd == DT_I32 || j->xd == DT_I8) && (j->od == DT_I8 || j->od == DT_I32)) {
        i64 p0 = j->planes * (i64)t / j->ntasks, p1 = j->planes * ((i64)t + 1) / j->ntasks, inner = j->inner;
        size_t xs = (size_t)DT_SIZE[j->xd], os = (size_t)DT_SIZE[j->od];
        int64_t lo = dt_min(j->od), hi = dt_max(j->od), zp = j->zp;
        for (i64 pl = p0; pl < p1; pl++) {
            i64 p = j->nparams == 1 ? 0 : pl % j->C;
            int64_t m = j->mult[p];
            int s = j->shift[p];
            int64_t half = s > 0 ? (int64_t)1 << (s - 1) : 0;
            const char *xp = (const char *)j->x + (size_t)(pl * inner) * xs;
            char *op = (char *)j->out + (size_t)(pl * inner) * os;
            for (i64 i = rq_plane_avx2(xp, j->xd, op, j->od, inner, m, s, half, zp); i < inner; i++) {
                int64_t v = j->xd == DT_I32 ? (int64_t)((const int32_t *)xp)[i] : (int64_t)((const int8_t *)xp)[i];
                v *= m;
                int64_t sg = v < 0 ? -1 : 0;
                v = ((((v ^ sg) - sg) + half) >> s ^ sg) - sg;
                v += zp;
                v = v < lo ? lo : v > hi ? hi : v;
                if (j->od == DT_I32) ((int32_t *)op)[i] = (int32_t)v;
                else ((int8_t *)op)[i] = (int8_t)v;
            }
        }
        return;
    }
    rq_task_avx2_other(ctx, t);
}
#endif

const char *cm_requant(void *out, int od, const void *x, int xd, i64 N, i64 C, i64 inner, const int32_t *mult,
                       const int32_t *shift, i64 nparams, i64 zp) {
    int known = (xd == DT_I32 || xd == DT_I8 || xd == DT_U8) && (od == DT_I32 || od == DT_I8 || od == DT_U8);
    if (known) { /* every integer dtype pair: straight from the input, threaded over channel planes */
        RqJob j = {out, x, od, xd, C, inner, N * C, 1, nparams, zp, mult, shift};
        j.ntasks = N * C * inner < 65536 ? 1 : (N * C < 64 ? N * C : 64);
        cm_task_fn fn = rq_task;
#ifdef CM_DW_AVX2
        if (cm_simd_level() > 0) fn = rq_task_avx2;
#endif
        cm_parallel_for((size_t)j.ntasks, fn, &j);
        return NULL;
    }
    size_t n = (size_t)(N * C * inner);
    int64_t *v = i64_copy(x, xd, n);
    if (!v) return NOMEM;
    for (i64 b = 0; b < N; b++)
        for (i64 c = 0; c < C; c++) {
            i64 p = nparams == 1 ? 0 : c;
            int64_t *r = v + (b * C + c) * inner;
            for (i64 i = 0; i < inner; i++) r[i] = rshift_rhaz(r[i] * (int64_t)mult[p], shift[p]) + zp;
        }
    cm_from_i64_sat(v, n, od, out);
    free(v);
    return NULL;
}

/* ---- qadd: a +- b of two int8 / uint8 tiles, each rescaled to a common scale, then requantized (isa.QAdd) --
 * ta = rshift_rhaz((a - a_zp) a_m, a_s), tb likewise, out = clamp(rshift_rhaz((ta +- tb) m, s) + zp, lo, hi).
 * isa.QAdd.check_fields guarantees |a - a_zp| < 2^31 and |ta| + |tb| < 2^31, so every product is exact in int64
 * and the AVX2 path's 32 x 32 -> 64 multiplies see int32 values. Threaded over contiguous element ranges. */

typedef struct {
    void *out;
    const void *a, *b;
    int od, ad, bd, sign, as, bs, s;
    i64 n, ntasks;
    int64_t az, am, bz, bm, m, zp, lo, hi;
} QaJob;

static inline int64_t qa_load(const void *p, int dt, i64 i) {
    return dt == DT_U8 ? (int64_t)((const uint8_t *)p)[i] : (int64_t)((const int8_t *)p)[i];
}

static void qa_range(const QaJob *j, i64 i, i64 end) {
    for (; i < end; i++) {
        int64_t ta = rshift_rhaz((qa_load(j->a, j->ad, i) - j->az) * j->am, j->as);
        int64_t tb = rshift_rhaz((qa_load(j->b, j->bd, i) - j->bz) * j->bm, j->bs);
        int64_t v = rshift_rhaz((ta + j->sign * tb) * j->m, j->s) + j->zp;
        v = v < j->lo ? j->lo : v > j->hi ? j->hi : v;
        if (j->od == DT_U8) ((uint8_t *)j->out)[i] = (uint8_t)v;
        else ((int8_t *)j->out)[i] = (int8_t)v;
    }
}

static void qa_task(void *ctx, size_t t) {
    const QaJob *j = (const QaJob *)ctx;
    qa_range(j, j->n * (i64)t / j->ntasks, j->n * ((i64)t + 1) / j->ntasks);
}

#ifdef CM_DW_AVX2
static inline int64_t half_of(int s) { return s > 0 ? (int64_t)1 << (s - 1) : 0; }

/* int8 a, b and out: 4 elements a step through the formula above in int64 lanes */
__attribute__((target("avx2"))) static void qa_task_avx2(void *ctx, size_t t) {
    const QaJob *j = (const QaJob *)ctx;
    i64 i = j->n * (i64)t / j->ntasks, end = j->n * ((i64)t + 1) / j->ntasks;
    if (j->ad == DT_I8 && j->bd == DT_I8 && j->od == DT_I8) {
        const int8_t *a = (const int8_t *)j->a, *b = (const int8_t *)j->b;
        int8_t *o = (int8_t *)j->out;
        __m256i az = _mm256_set1_epi64x(j->az), bz = _mm256_set1_epi64x(j->bz), zp = _mm256_set1_epi64x(j->zp);
        __m256i am = _mm256_set1_epi64x(j->am), bm = _mm256_set1_epi64x(j->bm), m = _mm256_set1_epi64x(j->m);
        __m256i ah = _mm256_set1_epi64x(half_of(j->as)), bh = _mm256_set1_epi64x(half_of(j->bs));
        __m256i h = _mm256_set1_epi64x(half_of(j->s)), lo = _mm256_set1_epi64x(j->lo), hi = _mm256_set1_epi64x(j->hi);
        __m128i ac = _mm_cvtsi32_si128(j->as), bc = _mm_cvtsi32_si128(j->bs), c = _mm_cvtsi32_si128(j->s);
        const __m256i lo32 = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        for (; i + 4 <= end; i += 4) {
            int32_t wa, wb;
            memcpy(&wa, a + i, 4);
            memcpy(&wb, b + i, 4);
            __m256i ta = rs4_avx2(_mm256_sub_epi64(_mm256_cvtepi8_epi64(_mm_cvtsi32_si128(wa)), az), am, ah, ac);
            __m256i tb = rs4_avx2(_mm256_sub_epi64(_mm256_cvtepi8_epi64(_mm_cvtsi32_si128(wb)), bz), bm, bh, bc);
            __m256i v = j->sign > 0 ? _mm256_add_epi64(ta, tb) : _mm256_sub_epi64(ta, tb);
            v = _mm256_permutevar8x32_epi32(rq4_avx2(v, m, h, c, zp, lo, hi), lo32); /* low halves in front */
            __m128i r = _mm256_castsi256_si128(v);
            r = _mm_packs_epi32(r, r);
            int32_t w = _mm_cvtsi128_si32(_mm_packs_epi16(r, r));
            memcpy(o + i, &w, 4);
        }
    }
    qa_range(j, i, end);
}
#endif

const char *cm_qadd(void *out, int od, const void *a, int ad, const void *b, int bd, i64 n, int sign, i64 az,
                    i64 am, int as, i64 bz, i64 bm, int bs, i64 m, int s, i64 zp, i64 lo, i64 hi) {
    QaJob j = {out, a, b, od, ad, bd, sign, as, bs, s, n, 1, az, am, bz, bm, m, zp, lo, hi};
    j.ntasks = n < 65536 ? 1 : (n / 16384 < 64 ? n / 16384 : 64);
    cm_task_fn fn = qa_task;
#ifdef CM_DW_AVX2
    if (cm_simd_level() > 0) fn = qa_task_avx2;
#endif
    cm_parallel_for((size_t)j.ntasks, fn, &j);
    return NULL;
}

/* ---- cast ---------------------------------------------------------------------------------------
 * float -> float: round once.  int -> float: (x - zp) * scale.  float -> int: sat(round(x / scale) + zp),
 * round_mode 0 = half to even, 1 = half away from zero (NaN -> zp).  int -> int: saturate. */

const char *cm_cast(void *out, int od, const void *x, int xd, i64 n, float scale, i64 zp, int round_mode) {
    if (dt_is_float(xd)) {
        float *f = f32_copy(x, xd, (size_t)n);
        if (!f) return NOMEM;
        if (dt_is_float(od)) {
            cm_from_f32(f, (size_t)n, od, out);
        } else {
            int64_t *v = (int64_t *)malloc((size_t)n * 8 + 8);
            if (!v) { free(f); return NOMEM; }
            for (i64 i = 0; i < n; i++) {
                float q = f[i] / scale;
                double r = q != q ? 0.0 : round_mode == 0 ? nearbyint((double)q) : round((double)q);
                r += (double)zp;
                v[i] = r > 4e18 ? (int64_t)4e18 : r < -4e18 ? (int64_t)-4e18 : (int64_t)r;
            }
            cm_from_i64_sat(v, (size_t)n, od, out);
            free(v);
        }
        free(f);
        return NULL;
    }
    int64_t *v = i64_copy(x, xd, (size_t)n);
    if (!v) return NOMEM;
    if (dt_is_float(od)) {
        float *f = (float *)malloc((size_t)n * 4 + 4);
        if (!f) { free(v); return NOMEM; }
        for (i64 i = 0; i < n; i++) f[i] = (float)(v[i] - zp) * scale;
        cm_from_f32(f, (size_t)n, od, out);
        free(f);
    } else {
        cm_from_i64_sat(v, (size_t)n, od, out);
    }
    free(v);
    return NULL;
}

/* ---- reduce over the axes in axes_mask (bit d = dim d), in input index order -------------------- */

enum { R_SUM = 0, R_MEAN, R_MAX, R_MIN };

const char *cm_reduce(void *out, int od, const void *x, int xd, const i64 *s, int mask, int op) {
    i64 os[4], st[4], acc = 1;
    for (int d = 0; d < 4; d++) os[d] = (mask >> d) & 1 ? 1 : s[d];
    for (int d = 3; d >= 0; d--) { st[d] = os[d] == 1 ? 0 : acc; acc *= os[d]; }
    size_t no = (size_t)acc, nx = (size_t)(s[0] * s[1] * s[2] * s[3]);
    i64 count = (i64)(nx / (no ? no : 1));
    if (dt_is_float(xd)) {
        float *f = f32_copy(x, xd, nx), *r = (float *)malloc(no * 4 + 4);
        if (!f || !r) { free(f); free(r); return NOMEM; }
        for (size_t i = 0; i < no; i++) r[i] = op == R_MAX ? -INFINITY : op == R_MIN ? INFINITY : 0.f;
        size_t i = 0;
        for (i64 n = 0; n < s[0]; n++) for (i64 c = 0; c < s[1]; c++) for (i64 h = 0; h < s[2]; h++)
            for (i64 w = 0; w < s[3]; w++, i++) {
                float *t = r + n * st[0] + c * st[1] + h * st[2] + w * st[3], v = f[i];
                if (op == R_MAX) *t = (v > *t || v != v) ? v : *t;
                else if (op == R_MIN) *t = (v < *t || v != v) ? v : *t;
                else *t += v;
            }
        if (op == R_MEAN) for (size_t k = 0; k < no; k++) r[k] /= (float)count;
        cm_from_f32(r, no, od, out);
        free(f); free(r);
        return NULL;
    }
    if (op == R_MEAN) return "integer mean is not a reduce op (use sum and requant)";
    int64_t *v = i64_copy(x, xd, nx), *r = (int64_t *)malloc(no * 8 + 8);
    if (!v || !r) { free(v); free(r); return NOMEM; }
    for (size_t k = 0; k < no; k++) r[k] = op == R_MAX ? INT64_MIN : op == R_MIN ? INT64_MAX : 0;
    size_t i = 0;
    for (i64 n = 0; n < s[0]; n++) for (i64 c = 0; c < s[1]; c++) for (i64 h = 0; h < s[2]; h++)
        for (i64 w = 0; w < s[3]; w++, i++) {
            int64_t *t = r + n * st[0] + c * st[1] + h * st[2] + w * st[3];
            *t = op == R_MAX ? (v[i] > *t ? v[i] : *t) : op == R_MIN ? (v[i] < *t ? v[i] : *t) : *t + v[i];
        }
    cm_from_i64_sat(r, no, od, out);
    free(v); free(r);
    return NULL;
}

/* ---- softmax / log-softmax along one axis: y = exp(x - max) / sum, log: (x - max) - log(sum) ----- */

const char *cm_softmax(void *out, int od, const void *x, int xd, const i64 *s, int axis, int log) {
    i64 outer = 1, inner = 1, len = s[axis];
    for (int d = 0; d < axis; d++) outer *= s[d];
    for (int d = axis + 1; d < 4; d++) inner *= s[d];
    size_t n = (size_t)(outer * len * inner);
    float *f = f32_copy(x, xd, n);
    if (!f) return NOMEM;
    for (i64 o = 0; o < outer; o++)
        for (i64 i = 0; i < inner; i++) {
            float *p = f + o * len * inner + i, m = -INFINITY, sum = 0.f;
            for (i64 k = 0; k < len; k++) m = p[k * inner] > m ? p[k * inner] : m;
            for (i64 k = 0; k < len; k++) sum += expf(p[k * inner] - m);
            if (log) {
                float ls = logf(sum);
                for (i64 k = 0; k < len; k++) p[k * inner] = (p[k * inner] - m) - ls;
            } else {
                for (i64 k = 0; k < len; k++) p[k * inner] = expf(p[k * inner] - m) / sum;
            }
        }
    cm_from_f32(f, n, od, out);
    free(f);
    return NULL;
}

/* ---- layernorm over dims axis..3: y = (x - mean) / sqrt(var + eps) * w + b, var biased ---------- */

const char *cm_layernorm(void *out, int od, const void *x, int xd, const i64 *s, int axis, const void *w, int wd,
                         const void *b, int bd, float eps) {
    i64 outer = 1, inner = 1;
    for (int d = 0; d < axis; d++) outer *= s[d];
    for (int d = axis; d < 4; d++) inner *= s[d];
    size_t n = (size_t)(outer * inner);
    float *f = f32_copy(x, xd, n), *fw = w ? f32_copy(w, wd, (size_t)inner) : NULL;
    float *fb = b ? f32_copy(b, bd, (size_t)inner) : NULL;
    if (!f || (w && !fw) || (b && !fb)) { free(f); free(fw); free(fb); return NOMEM; }
    for (i64 o = 0; o < outer; o++) {
        float *p = f + o * inner, mean = 0.f, var = 0.f;
        for (i64 i = 0; i < inner; i++) mean += p[i];
        mean /= (float)inner;
        for (i64 i = 0; i < inner; i++) { float d = p[i] - mean; var += d * d; }
        var /= (float)inner;
        float rstd = 1.f / sqrtf(var + eps);
        for (i64 i = 0; i < inner; i++) {
            float y = (p[i] - mean) * rstd;
            if (fw) y *= fw[i];
            if (fb) y += fb[i];
            p[i] = y;
        }
    }
    cm_from_f32(f, n, od, out);
    free(f); free(fw); free(fb);
    return NULL;
}
