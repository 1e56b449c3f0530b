/* Dense compute kernels (conv, matmul, eltwise, activation, pool, LUT, requant, cast, reduce, softmax,
 * layernorm). The definition they implement is torch_tpu/cmodel/kernels_ref.py; see common.h for
 * the numeric convention. Every kernel converts its operands once, computes in f32 (int32/int64 for
 * integers) and rounds once into the output. */
#include <math.h>
#include <stdlib.h>
#include "common.h"
#include "kernels.h"

#define NOMEM "out of memory"

static float act_f(float v, int act, float lo, float hi) {
    switch (act) {
    case ACT_RELU: return v > 0.f ? v : 0.f;
    case ACT_RELU6: return v < 0.f ? 0.f : v > 6.f ? 6.f : v;
    case ACT_CLIP: return v < lo ? lo : v > hi ? hi : v;
    default: return v;
    }
}

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

/* ---- depthwise (one input channel per group): direct loops, the same k = (ki, kj) order as the GEMM --- */

static void conv_depthwise(void *acc, const void *xs, const void *ws, int is_int, i64 N, i64 Cin, i64 H, i64 W,
                           i64 Cout, i64 kh, i64 kw, i64 Ho, i64 Wo, i64 sh, i64 sw, i64 pt, i64 pl, i64 dh,
                           i64 dw) {
    i64 cog = Cout / Cin, P = Ho * Wo;
    for (i64 n = 0; n < N; n++)
        for (i64 o = 0; o < Cout; o++) {
            i64 c = o / cog;
            for (i64 oh = 0; oh < Ho; oh++) {
                i64 row = (n * Cout + o) * P + oh * Wo;
                for (i64 ki = 0; ki < kh; ki++) {
                    i64 ih = oh * sh - pt + ki * dh;
                    if (ih < 0 || ih >= H) continue;
                    for (i64 kj = 0; kj < kw; kj++) {
                        i64 off = kj * dw - pl;
                        i64 lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
                        i64 hi = W - off <= 0 ? 0 : (W - off + sw - 1) / sw;
                        if (hi > Wo) hi = Wo;
                        i64 xbase = ((n * Cin + c) * H + ih) * W + off, widx = (o * kh + ki) * kw + kj;
                        if (is_int) {
                            int32_t wv = ((const int8_t *)ws)[widx], *a = (int32_t *)acc + row;
                            const int8_t *xr = (const int8_t *)xs;
                            for (i64 ow = lo; ow < hi; ow++) a[ow] += wv * (int32_t)xr[xbase + ow * sw];
                        } else {
                            float wv = ((const float *)ws)[widx], *a = (float *)acc + row;
                            const float *xr = (const float *)xs;
                            for (i64 ow = lo; ow < hi; ow++) a[ow] += wv * xr[xbase + ow * sw];
                        }
                    }
                }
            }
        }
}

/* ---- conv2d: im2col + GEMM per (n, group); 1x1 stride-1 reads x directly; depthwise runs direct loops -- */

const char *cm_conv2d(void *out, int od, const void *x, int xd, const void *w, int wd, const void *bias, int bd,
                      i64 N, i64 Cin, i64 H, i64 W, i64 Cout, i64 kh, i64 kw, i64 Ho, i64 Wo, i64 sh, i64 sw,
                      i64 pt, i64 pl, i64 dh, i64 dw, i64 groups, int act, float lo, float hi) {
    i64 cig = Cin / groups, cog = Cout / groups, Kc = cig * kh * kw, P = Ho * Wo;
    int is_int = !dt_is_float(xd);
    int depthwise = cig == 1 && groups > 1;
    int direct = depthwise || (kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && Ho == H && Wo == W);
    size_t esz = is_int ? 1 : 4;
    void *xs = is_int ? (void *)x : (void *)f32_copy(x, xd, (size_t)(N * Cin * H * W));
    void *ws = is_int ? (void *)w : (void *)f32_copy(w, wd, (size_t)(Cout * Kc));
    void *col = direct ? NULL : malloc((size_t)(Kc * P) * esz + 4);
    void *acc = calloc((size_t)(N * Cout * P) + 1, 4);
    const char *err = NULL;
    if (!xs || !ws || !acc || (!direct && !col)) { err = NOMEM; goto done; }
    if (depthwise)
        conv_depthwise(acc, xs, ws, is_int, N, Cin, H, W, Cout, kh, kw, Ho, Wo, sh, sw, pt, pl, dh, dw);
    else for (i64 n = 0; n < N; n++)
        for (i64 g = 0; g < groups; g++) {
            const char *xg = (const char *)xs + (size_t)((n * Cin + g * cig) * H * W) * esz;
            const void *B = xg;
            if (!direct) {
                for (i64 c = 0; c < cig; c++)
                    for (i64 ki = 0; ki < kh; ki++)
                        for (i64 kj = 0; kj < kw; kj++) {
                            i64 r = (c * kh + ki) * kw + kj, off = kj * dw - pl;
                            /* valid ow: 0 <= ow*sw + off < W */
                            i64 lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
                            i64 hi = W - off <= 0 ? 0 : (W - off + sw - 1) / sw;
                            if (hi > Wo) hi = Wo;
                            if (lo > hi) lo = hi;
                            for (i64 oh = 0; oh < Ho; oh++) {
                                i64 ih = oh * sh - pt + ki * dh, dst = r * P + oh * Wo;
                                int row_ok = ih >= 0 && ih < H;
                                i64 l = row_ok ? lo : Wo, h2 = row_ok ? hi : Wo;
                                const char *srow = row_ok ? (const char *)xg + (size_t)((c * H + ih) * W + off) * esz : (const char *)xg;
                                char *drow = (char *)col + (size_t)dst * esz;
                                memset(drow, 0, (size_t)l * esz);
                                if (sw == 1) {
                                    if (h2 > l) memcpy(drow + l * esz, srow + l * esz, (size_t)(h2 - l) * esz);
                                } else if (is_int) {
                                    for (i64 ow = l; ow < h2; ow++) ((int8_t *)drow)[ow] = ((const int8_t *)srow)[ow * sw];
                                } else {
                                    for (i64 ow = l; ow < h2; ow++) ((float *)drow)[ow] = ((const float *)srow)[ow * sw];
                                }
                                memset(drow + h2 * esz, 0, (size_t)(Wo - h2) * esz);
                            }
                        }
                B = col;
            }
            size_t a_off = (size_t)(g * cog * Kc), c_off = (size_t)((n * Cout + g * cog) * P);
            if (is_int) {
                if (cm_igemm_s8((const int8_t *)ws + a_off, (const int8_t *)B, (int32_t *)acc + c_off,
                                (size_t)cog, (size_t)P, (size_t)Kc)) { err = NOMEM; goto done; }
            } else {
                cm_sgemm((const float *)ws + a_off, (const float *)B, (float *)acc + c_off, (size_t)cog, (size_t)P,
                         (size_t)Kc);
            }
        }
    if (is_int) {
        int64_t *row = (int64_t *)malloc((size_t)P * 8 + 8);
        if (!row) { err = NOMEM; goto done; }
        for (i64 n = 0; n < N; n++)
            for (i64 co = 0; co < Cout; co++) {
                int64_t bv = bias ? (bd == DT_I32 ? ((const int32_t *)bias)[co] : 0) : 0;
                const int32_t *a = (const int32_t *)acc + (n * Cout + co) * P;
                for (i64 p = 0; p < P; p++) row[p] = act_i((int64_t)a[p] + bv, act, lo, hi);
                cm_from_i64_sat(row, (size_t)P, od, (char *)out + (size_t)((n * Cout + co) * P) * DT_SIZE[od]);
            }
        free(row);
    } else {
        float *bf = bias ? f32_copy(bias, bd, (size_t)Cout) : NULL;
        if (bias && !bf) { err = NOMEM; goto done; }
        float *a = (float *)acc;
        for (i64 n = 0; n < N; n++)
            for (i64 co = 0; co < Cout; co++) {
                float bv = bf ? bf[co] : 0.f;
                float *r = a + (n * Cout + co) * P;
                for (i64 p = 0; p < P; p++) r[p] = act_f(r[p] + bv, act, lo, hi);
            }
        cm_from_f32(a, (size_t)(N * Cout * P), od, out);
        free(bf);
    }
done:
    if (!is_int) { free(xs); free(ws); }
    free(col);
    free(acc);
    return err;
}

/* ---- (batched) matmul: out[b] = a[b] . b[b or 0] + bias -------------------------------------- */

const char *cm_matmul(void *out, int od, const void *a, int ad, const void *b, int bd, const void *bias, int biasd,
                      i64 B, i64 Bb, i64 M, i64 K, i64 N, int act, float lo, float hi) {
    int is_int = !dt_is_float(ad);
    size_t mn = (size_t)(M * N);
    void *acc = calloc((size_t)B * mn + 1, 4);
    if (!acc) return NOMEM;
    const char *err = NULL;
    if (is_int) {
        for (i64 i = 0; i < B; i++)
            if (cm_igemm_s8((const int8_t *)a + i * M * K, (const int8_t *)b + (Bb == 1 ? 0 : i) * K * N,
                            (int32_t *)acc + i * mn, (size_t)M, (size_t)N, (size_t)K)) { err = NOMEM; goto done; }
        int64_t *row = (int64_t *)malloc((size_t)N * 8 + 8);
        if (!row) { err = NOMEM; goto done; }
        for (i64 r = 0; r < B * M; r++) {
            const int32_t *s = (const int32_t *)acc + r * N;
            for (i64 j = 0; j < N; j++)
                row[j] = act_i((int64_t)s[j] + (bias ? ((const int32_t *)bias)[j] : 0), act, lo, hi);
            cm_from_i64_sat(row, (size_t)N, od, (char *)out + (size_t)(r * N) * DT_SIZE[od]);
        }
        free(row);
    } else {
        float *af = f32_copy(a, ad, (size_t)(B * M * K)), *bf = f32_copy(b, bd, (size_t)(Bb * K * N));
        float *biasf = bias ? f32_copy(bias, biasd, (size_t)N) : NULL;
        if (!af || !bf || (bias && !biasf)) { err = NOMEM; }
        else {
            float *c = (float *)acc;
            for (i64 i = 0; i < B; i++)
                cm_sgemm(af + i * M * K, bf + (Bb == 1 ? 0 : i) * K * N, c + i * mn, (size_t)M, (size_t)N,
                         (size_t)K);
            for (i64 r = 0; r < B * M; r++)
                for (i64 j = 0; j < N; j++) c[r * N + j] = act_f(c[r * N + j] + (biasf ? biasf[j] : 0.f), act, lo, hi);
            cm_from_f32(c, (size_t)B * mn, od, out);
        }
        free(af); free(bf); free(biasf);
    }
done:
    free(acc);
    return err;
}

/* ---- binary eltwise with broadcast (a dim of size 1 repeats) ------------------------------------ */

enum { EW_ADD = 0, EW_SUB, EW_MUL, EW_DIV, EW_MAX, EW_MIN };

static void bstrides(const i64 *s, i64 *st) {
    i64 acc = 1;
    for (int d = 3; d >= 0; d--) { st[d] = s[d] == 1 ? 0 : acc; acc *= s[d]; }
}

const char *cm_eltwise(void *out, int od, const void *a, int ad, const i64 *as, const void *b, int bd,
                       const i64 *bs, const i64 *os, int op, double scalar) {
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

const char *cm_activation(void *out, int od, const void *x, int xd, i64 n, int op, float alpha, float lo, float hi) {
    if (op < 0 || op >= A_COUNT) return "unknown activation";
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

/* ---- pool2d: max / avg; window clipped to the padded extent [-pt, H+pb) x [-pl, W+pr) ------------ */

const char *cm_pool2d(void *out, int od, const void *x, int xd, i64 N, i64 C, i64 H, i64 W, i64 Ho, i64 Wo,
                      i64 kh, i64 kw, i64 sh, i64 sw, i64 pt, i64 pb, i64 pl, i64 pr, int mode, int count_pad,
                      i64 mult, int shift) {
    size_t no = (size_t)(N * C * Ho * Wo), nx = (size_t)(N * C * H * W);
    int is_f = dt_is_float(xd);
    float *fx = is_f ? f32_copy(x, xd, nx) : NULL, *fo = is_f ? (float *)malloc(no * 4 + 4) : NULL;
    int64_t *ix = is_f ? NULL : i64_copy(x, xd, nx), *io = is_f ? NULL : (int64_t *)malloc(no * 8 + 8);
    const char *err = NULL;
    if (is_f ? (!fx || !fo) : (!ix || !io)) { err = NOMEM; goto done; }
    size_t o = 0;
    for (i64 nc = 0; nc < N * C; nc++)
        for (i64 oh = 0; oh < Ho; oh++)
            for (i64 ow = 0; ow < Wo; ow++, o++) {
                i64 h0 = oh * sh - pt, w0 = ow * sw - pl;
                i64 h1 = h0 + kh < H + pb ? h0 + kh : H + pb, w1 = w0 + kw < W + pr ? w0 + kw : W + pr;
                i64 pad_count = (h1 - h0) * (w1 - w0);
                i64 hs = h0 > 0 ? h0 : 0, ws = w0 > 0 ? w0 : 0, he = h1 < H ? h1 : H, we = w1 < W ? w1 : W;
                i64 count = count_pad ? pad_count : (he - hs) * (we - ws);
                if (is_f) {
                    float acc = mode == 0 ? -INFINITY : 0.f;
                    for (i64 h = hs; h < he; h++)
                        for (i64 w = ws; w < we; w++) {
                            float v = fx[(nc * H + h) * W + w];
                            if (mode == 0) acc = (v > acc || v != v) ? v : acc;
                            else acc += v;
                        }
                    fo[o] = mode == 0 ? acc : acc / (float)(count > 0 ? count : 1);
                } else {
                    int64_t acc = mode == 0 ? INT64_MIN : 0;
                    for (i64 h = hs; h < he; h++)
                        for (i64 w = ws; w < we; w++) {
                            int64_t v = ix[(nc * H + h) * W + w];
                            if (mode == 0) acc = v > acc ? v : acc;
                            else acc += v;
                        }
                    io[o] = mode == 0 ? acc : rshift_rhaz(acc * mult, shift);
                }
            }
    if (is_f) cm_from_f32(fo, no, od, out);
    else cm_from_i64_sat(io, no, od, out);
done:
    free(fx); free(fo); free(ix); free(io);
    return err;
}

/* ---- LUT: out[i] = table[x[i] & 0xff] (the byte of x as an unsigned index) -------------------- */

const char *cm_lut(void *out, int od, const void *x, int xd, i64 n, const void *table) {
    (void)xd;
    size_t es = (size_t)DT_SIZE[od];
    for (i64 i = 0; i < n; i++) {
        uint8_t idx = ((const uint8_t *)x)[i];
        memcpy((char *)out + (size_t)i * es, (const char *)table + idx * es, es);
    }
    return NULL;
}

/* ---- requant: out = sat(rshift_rhaz(x * mult[c], shift[c]) + zp) --------------------------------- */

const char *cm_requant(void *out, int od, const void *x, int xd, i64 N, i64 C, i64 inner, const int32_t *mult,
                       const int32_t *shift, i64 nparams, i64 zp) {
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
