/* Python bindings of the cmodel C extension (torch_tpu.cmodel._cmodel).
 *
 * Buffers are anything with the buffer protocol (numpy arrays, bytearrays), C-contiguous. Every
 * function checks each buffer's length against the bytes it will touch before touching memory, and
 * raises ValueError (the simulator turns it into ProgramError naming the instruction) instead of
 * reading or writing out of range.
 *
 * copy(dst, dst_desc, src, src_desc, shape, esize) moves an N,C,H,W tensor between two memories:
 *   flat desc  (0, base_byte, sN, sC, sH, sW): element (n,c,h,w) at base + (n sN + c sC + h sH + w sW) esize
 *   lane desc  (1, lane, addr, lanes, lane_bytes, align): the per-lane local memory, a buffer of
 *     lanes x lane_bytes; channel c lives on lane (lane + c) % lanes, channel group g = (lane + c) / lanes;
 *     cstride = align_up(H W esize, align), nstride = ceil((lane + C) / lanes) cstride;
 *     element (n,c,h,w) at byte addr + n nstride + g cstride + (h W + w) esize of its lane, and
 *     addr + N nstride must not exceed lane_bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "common.h"
#include "kernels.h"
#include "threads.h"

int cm_set_simd(int level);

/* run a kernel with the GIL released: it touches only the buffers held above (and may start threads) */
#define RUN_NOGIL(err, call) do { Py_BEGIN_ALLOW_THREADS err = (call); Py_END_ALLOW_THREADS } while (0)

typedef struct { Py_buffer v; int held; } Buf;

static int buf_get(PyObject *o, Buf *b, int writable, const char *name) {
    b->held = 0;
    if (o == Py_None) return 0;
    if (PyObject_GetBuffer(o, &b->v, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "operand '%s' is not a %scontiguous buffer", name, writable ? "writable " : "");
        return -1;
    }
    b->held = 1;
    return 0;
}

static void buf_release(Buf *b) { if (b->held) PyBuffer_Release(&b->v); b->held = 0; }

static int buf_need(Buf *b, i64 count, int dt, const char *name) {
    if (!dt_valid(dt)) { PyErr_Format(PyExc_ValueError, "operand '%s': unknown dtype code %d", name, dt); return -1; }
    if (count < 0 || count > ((i64)1 << 48) || !b->held || (i64)b->v.len < count * DT_SIZE[dt]) {
        PyErr_Format(PyExc_ValueError, "operand '%s': buffer of %zd bytes, need %lld elements of %d bytes", name,
                     b->held ? b->v.len : (Py_ssize_t)0, (long long)count, DT_SIZE[dt]);
        return -1;
    }
    return 0;
}

/* tensor dims are >= 1 (no empty tiles, so no loop runs over a huge outer range with nothing inside),
 * and every count a kernel computes is a product of some of its dims: bounding the product of all of
 * them keeps every count and byte size far from overflow */
static int dims_ok(const i64 *d, int n) {
    i64 prod = 1;
    for (int i = 0; i < n; i++) {
        if (d[i] < 1 || d[i] > ((i64)1 << 31)) {
            PyErr_SetString(PyExc_ValueError, "bad dimension (tensor dims must be in [1, 2^31])");
            return -1;
        }
        i64 f = d[i];
        if (f > (((i64)1 << 48) / prod)) { PyErr_SetString(PyExc_ValueError, "dimensions too large"); return -1; }
        prod *= f;
    }
    return 0;
}

/* each value in [0, 2^31] (strides, pads, ...) */
static int vals_ok(const i64 *d, int n) {
    for (int i = 0; i < n; i++)
        if (d[i] < 0 || d[i] > ((i64)1 << 31)) { PyErr_SetString(PyExc_ValueError, "bad parameter"); return -1; }
    return 0;
}

/* the output dtype must be of the same class (float / integer) as the input the kernel computes in */
static int same_class(int in_dt, int out_dt, const char *kernel) {
    if (!dt_valid(in_dt) || !dt_valid(out_dt) || dt_is_float(in_dt) != dt_is_float(out_dt)) {
        PyErr_Format(PyExc_ValueError, "%s: input dtype %d and output dtype %d are not both float or both integer",
                     kernel, in_dt, out_dt);
        return -1;
    }
    return 0;
}

static PyObject *finish(const char *err, Buf *bufs, int nbufs) {
    for (int i = 0; i < nbufs; i++) buf_release(&bufs[i]);
    if (PyErr_Occurred()) return NULL;
    if (err) { PyErr_SetString(PyExc_ValueError, err); return NULL; }
    Py_RETURN_NONE;
}

/* ---- copy (the DMA engine and the local-memory gather/scatter) ---------------------------------- */

typedef struct { i64 kind, a[5]; i64 cstride, nstride; } Desc;

static int desc_prepare(Desc *d, Buf *b, const i64 *shape, i64 esize, const char *side) {
    i64 N = shape[0], C = shape[1], H = shape[2], W = shape[3];
    if (N == 0 || C == 0 || H == 0 || W == 0) return 0;
    if (d->kind == 0) {
        i64 last = d->a[0];
        for (int k = 0; k < 4; k++) {
            if (d->a[k + 1] < 0) { PyErr_Format(PyExc_ValueError, "%s: negative stride", side); return -1; }
            if (d->a[k + 1] > 0 && (shape[k] - 1) > ((i64)1 << 50) / d->a[k + 1]) {
                PyErr_Format(PyExc_ValueError, "%s: stride %lld too large", side, (long long)d->a[k + 1]);
                return -1;
            }
            last += (shape[k] - 1) * d->a[k + 1] * esize;
        }
        if (d->a[0] < 0 || last + esize > (i64)b->v.len) {
            PyErr_Format(PyExc_ValueError, "%s: bytes [%lld, %lld) outside the memory of %zd bytes", side,
                         (long long)d->a[0], (long long)(last + esize), b->v.len);
            return -1;
        }
        return 0;
    }
    i64 lane = d->a[0], addr = d->a[1], lanes = d->a[2], lane_bytes = d->a[3], align = d->a[4];
    if (lanes <= 0 || lane_bytes <= 0 || align <= 0 || lanes * lane_bytes != (i64)b->v.len) {
        PyErr_Format(PyExc_ValueError, "%s: local memory buffer does not match %lld lanes x %lld bytes", side,
                     (long long)lanes, (long long)lane_bytes);
        return -1;
    }
    if (lane < 0 || lane >= lanes) { PyErr_Format(PyExc_ValueError, "%s: lane %lld out of range", side, (long long)lane); return -1; }
    if (addr < 0 || addr % align) {
        PyErr_Format(PyExc_ValueError, "%s: local address %lld not aligned to %lld", side, (long long)addr, (long long)align);
        return -1;
    }
    d->cstride = (H * W * esize + align - 1) / align * align;
    d->nstride = (lane + C + lanes - 1) / lanes * d->cstride;
    if (addr + N * d->nstride > lane_bytes) {
        PyErr_Format(PyExc_ValueError, "%s: local bytes [%lld, %lld) exceed the lane size %lld", side,
                     (long long)addr, (long long)(addr + N * d->nstride), (long long)lane_bytes);
        return -1;
    }
    return 0;
}

static inline i64 desc_off(const Desc *d, i64 n, i64 c, i64 h, i64 w, i64 W, i64 esize) {
    if (d->kind == 0) return d->a[0] + (n * d->a[1] + c * d->a[2] + h * d->a[3] + w * d->a[4]) * esize;
    i64 L = d->a[0] + c;
    return (L % d->a[2]) * d->a[3] + d->a[1] + n * d->nstride + (L / d->a[2]) * d->cstride + (h * W + w) * esize;
}

static int parse_desc(PyObject *t, Desc *d) {
    if (!PyArg_ParseTuple(t, "LLLLLL", &d->kind, &d->a[0], &d->a[1], &d->a[2], &d->a[3], &d->a[4])) return -1;
    if (d->kind != 0 && d->kind != 1) { PyErr_SetString(PyExc_ValueError, "descriptor kind must be 0 or 1"); return -1; }
    return 0;
}

/* how much of one (n, c) plane is contiguous on a side: 2 the whole H x W plane, 1 each row, 0 single elements */
static int copy_mode(const Desc *d, const i64 *s) {
    if (d->kind == 1) return 2;
    int rows = s[3] == 1 || d->a[4] == 1;
    return rows && (s[2] == 1 || d->a[3] == s[3]) ? 2 : rows ? 1 : 0;
}

#define COPY_PARALLEL_BYTES ((i64)1 << 18) /* 256 KiB: below it, waking the workers costs about what they save */

typedef struct {
    char *dp;
    const char *sp;
    const Desc *D, *S;
    const i64 *s;
    i64 esize;
    int mode;   /* the smaller copy_mode of the two sides */
    i64 ntasks; /* the (n, c) planes are split into this many contiguous ranges */
} CopyJob;

static void copy_plane(const CopyJob *j, i64 n, i64 c) {
    i64 H = j->s[2], W = j->s[3], es = j->esize;
    char *d = j->dp + desc_off(j->D, n, c, 0, 0, W, es);
    const char *s = j->sp + desc_off(j->S, n, c, 0, 0, W, es);
    if (j->mode == 2) { memmove(d, s, (size_t)(H * W * es)); return; }
    /* per-row / per-element steps in bytes (a lane plane is dense) */
    i64 dh = j->D->kind == 1 ? W * es : j->D->a[3] * es, dw = j->D->kind == 1 ? es : j->D->a[4] * es;
    i64 sh = j->S->kind == 1 ? W * es : j->S->a[3] * es, sw = j->S->kind == 1 ? es : j->S->a[4] * es;
    for (i64 h = 0; h < H; h++, d += dh, s += sh) {
        if (j->mode == 1) { memmove(d, s, (size_t)(W * es)); continue; }
        char *dd = d;
        const char *ss = s;
        switch (es) {
        case 4: for (i64 w = 0; w < W; w++, dd += dw, ss += sw) memmove(dd, ss, 4); break;
        case 2: for (i64 w = 0; w < W; w++, dd += dw, ss += sw) memmove(dd, ss, 2); break;
        default: for (i64 w = 0; w < W; w++, dd += dw, ss += sw) *dd = *ss; break;
        }
    }
}

static void copy_task(void *ctx, size_t t) {
    const CopyJob *j = (const CopyJob *)ctx;
    i64 planes = j->s[0] * j->s[1], p0 = planes * (i64)t / j->ntasks, p1 = planes * ((i64)t + 1) / j->ntasks;
    for (i64 p = p0; p < p1; p++) copy_plane(j, p / j->s[1], p % j->s[1]);
}

static PyObject *py_copy(PyObject *self, PyObject *args) {
    PyObject *dst, *src, *dd, *sd;
    i64 s[4], esize;
    Buf b[2] = {{.held = 0}, {.held = 0}};
    Desc D, S;
    if (!PyArg_ParseTuple(args, "OOOO(LLLL)L", &dst, &dd, &src, &sd, &s[0], &s[1], &s[2], &s[3], &esize)) return NULL;
    if (dims_ok(s, 4) || parse_desc(dd, &D) || parse_desc(sd, &S)) return NULL;
    if (esize != 1 && esize != 2 && esize != 4) { PyErr_SetString(PyExc_ValueError, "esize must be 1, 2 or 4"); return NULL; }
    if (buf_get(dst, &b[0], 1, "dst") || buf_get(src, &b[1], 0, "src")) return finish(NULL, b, 2);
    if (desc_prepare(&D, &b[0], s, esize, "destination") || desc_prepare(&S, &b[1], s, esize, "source"))
        return finish(NULL, b, 2);
    CopyJob job = {(char *)b[0].v.buf, (const char *)b[1].v.buf, &D, &S, s, esize, copy_mode(&D, s) < copy_mode(&S, s)
                   ? copy_mode(&D, s) : copy_mode(&S, s), 0};
    i64 planes = s[0] * s[1], bytes = planes * s[2] * s[3] * esize;
    /* DDR -> DDR copies stay serial: should the two views overlap, the result must not depend on the split */
    job.ntasks = (b[0].v.buf == b[1].v.buf || bytes < COPY_PARALLEL_BYTES) ? 1 : (planes < 64 ? planes : 64);
    Py_BEGIN_ALLOW_THREADS
    cm_parallel_for((size_t)job.ntasks, copy_task, &job);
    Py_END_ALLOW_THREADS
    return finish(NULL, b, 2);
}

/* ---- compute kernels --------------------------------------------------------------------------- */

/* the fused requant of an int8 conv / matmul: (multiplier, shift, zero_point, qmin, qmax), multiplier and shift
 * int32 buffers of 1 or `channels` values or both None (no requant, rq->n = 0); checks every value the kernels
 * rely on (m in [0, 2^31), s in [0, 63], -128 <= qmin <= qmax <= 127, an int8 output of int8 operands) */
static int rq_get(PyObject *m, PyObject *s, i64 zp, int qlo, int qhi, i64 channels, int is_int, int od, Buf *bm,
                  Buf *bs, CmRequant *rq, const char *kernel) {
    memset(rq, 0, sizeof(*rq));
    if (m == Py_None && s == Py_None) return 0;
    if (buf_get(m, bm, 0, "multiplier") || buf_get(s, bs, 0, "shift")) return -1;
    i64 n = bm->held ? (i64)bm->v.len / 4 : 0;
    if (!is_int || od != DT_I8) {
        PyErr_Format(PyExc_ValueError, "%s: a fused requant needs int8 operands and an int8 output", kernel);
        return -1;
    }
    if ((n != 1 && n != channels) || !bs->held || (i64)bm->v.len != n * 4 || (i64)bs->v.len != n * 4) {
        PyErr_Format(PyExc_ValueError, "%s: requant multiplier and shift need 1 or %lld int32 values", kernel,
                     (long long)channels);
        return -1;
    }
    const int32_t *mv = (const int32_t *)bm->v.buf, *sv = (const int32_t *)bs->v.buf;
    for (i64 i = 0; i < n; i++)
        if (mv[i] < 0 || sv[i] < 0 || sv[i] > 63) {
            PyErr_Format(PyExc_ValueError, "%s: requant multiplier outside [0, 2^31) or shift outside [0, 63]", kernel);
            return -1;
        }
    if (qlo < -128 || qhi > 127 || qlo > qhi || zp <= INT32_MIN || zp > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: requant bounds [%d, %d] or zero point %lld out of range", kernel, qlo, qhi,
                     (long long)zp);
        return -1;
    }
    rq->mult = mv;
    rq->shift = sv;
    rq->n = n;
    rq->zp = zp;
    rq->lo = qlo;
    rq->hi = qhi;
    return 0;
}

static PyObject *py_conv2d(PyObject *self, PyObject *args) {
    PyObject *o, *x, *w, *bias, *rm, *rs;
    int od, xd, wd, bd, act, pad_value, qlo, qhi;
    i64 N, Cin, H, W, Cout, cig, kh, kw, Ho, Wo, sh, sw, pt, pl, dh, dw, g, zp;
    float lo, hi;
    Buf b[6] = {{.held = 0}, {.held = 0}, {.held = 0}, {.held = 0}, {.held = 0}, {.held = 0}};
    CmRequant rq;
    if (!PyArg_ParseTuple(args, "OiOiOiOi(LLLL)(LLLL)(LL)(LL)(LL)(LL)Liffi(OOLii)", &o, &od, &x, &xd, &w, &wd, &bias,
                          &bd, &N, &Cin, &H, &W, &Cout, &cig, &kh, &kw, &Ho, &Wo, &sh, &sw, &pt, &pl, &dh, &dw, &g,
                          &act, &lo, &hi, &pad_value, &rm, &rs, &zp, &qlo, &qhi))
        return NULL;
    i64 dx[] = {N, Cin, H, W}, dw_[] = {Cout, cig, kh, kw}, dout[] = {N, Cout, Ho, Wo}, dcol[] = {cig, kh, kw, Ho, Wo};
    i64 par[] = {sh, sw, pt, pl, dh, dw, g};
    if (dims_ok(dx, 4) || dims_ok(dw_, 4) || dims_ok(dout, 4) || dims_ok(dcol, 5) || vals_ok(par, 7)) return NULL;
    if (g < 1 || Cin % g || Cout % g || cig * g != Cin || sh < 1 || sw < 1 || dh < 1 || dw < 1) {
        PyErr_SetString(PyExc_ValueError, "conv2d: bad groups/stride/dilation");
        return NULL;
    }
    if (same_class(xd, od, "conv2d") || same_class(xd, wd, "conv2d")) return NULL;
    if (!dt_is_float(xd) && (xd != DT_I8 || wd != DT_I8 || (bias != Py_None && bd != DT_I32))) {
        PyErr_SetString(PyExc_ValueError, "conv2d: integer conv needs int8 input and weight, int32 bias");
        return NULL;
    }
    if (pad_value < -128 || pad_value > 127 || (pad_value && xd != DT_I8)) {
        PyErr_SetString(PyExc_ValueError, "conv2d: a pad value is an int8 value of an int8 conv");
        return NULL;
    }
    if (rq_get(rm, rs, zp, qlo, qhi, Cout, !dt_is_float(xd), od, &b[4], &b[5], &rq, "conv2d"))
        return finish(NULL, b, 6);
    if (buf_get(o, &b[0], 1, "out") || buf_get(x, &b[1], 0, "x") || buf_get(w, &b[2], 0, "w") ||
        buf_get(bias, &b[3], 0, "bias"))
        return finish(NULL, b, 6);
    if (buf_need(&b[0], N * Cout * Ho * Wo, od, "out") || buf_need(&b[1], N * Cin * H * W, xd, "x") ||
        buf_need(&b[2], Cout * (Cin / g) * kh * kw, wd, "w") || (b[3].held && buf_need(&b[3], Cout, bd, "bias")))
        return finish(NULL, b, 6);
    const char *err;
    RUN_NOGIL(err, cm_conv2d(b[0].v.buf, od, b[1].v.buf, xd, b[2].v.buf, wd, b[3].held ? b[3].v.buf : NULL, bd,
                                N, Cin, H, W, Cout, kh, kw, Ho, Wo, sh, sw, pt, pl, dh, dw, g, act, lo, hi, pad_value,
                                &rq));
    return finish(err, b, 6);
}

static PyObject *py_matmul(PyObject *self, PyObject *args) {
    PyObject *o, *a, *bm, *bias, *rm, *rs;
    int od, ad, bd, biasd, act, qlo, qhi;
    i64 B, Bb, M, K, N, zp;
    float lo, hi;
    Buf b[6] = {{.held = 0}, {.held = 0}, {.held = 0}, {.held = 0}, {.held = 0}, {.held = 0}};
    CmRequant rq;
    if (!PyArg_ParseTuple(args, "OiOiOiOi(LLLLL)iff(OOLii)", &o, &od, &a, &ad, &bm, &bd, &bias, &biasd, &B, &Bb, &M,
                          &K, &N, &act, &lo, &hi, &rm, &rs, &zp, &qlo, &qhi))
        return NULL;
    i64 da[] = {B, M, K}, db[] = {Bb, K, N}, dout[] = {B, M, N};
    if (dims_ok(da, 3) || dims_ok(db, 3) || dims_ok(dout, 3)) return NULL;
    if (same_class(ad, od, "matmul") || same_class(ad, bd, "matmul")) return NULL;
    if (!dt_is_float(ad) && (ad != DT_I8 || bd != DT_I8 || (bias != Py_None && biasd != DT_I32))) {
        PyErr_SetString(PyExc_ValueError, "matmul: integer matmul needs int8 operands, int32 bias");
        return NULL;
    }
    if (rq_get(rm, rs, zp, qlo, qhi, N, !dt_is_float(ad), od, &b[4], &b[5], &rq, "matmul")) return finish(NULL, b, 6);
    if (buf_get(o, &b[0], 1, "out") || buf_get(a, &b[1], 0, "a") || buf_get(bm, &b[2], 0, "b") ||
        buf_get(bias, &b[3], 0, "bias"))
        return finish(NULL, b, 6);
    if (buf_need(&b[0], B * M * N, od, "out") || buf_need(&b[1], B * M * K, ad, "a") ||
        buf_need(&b[2], Bb * K * N, bd, "b") || (b[3].held && buf_need(&b[3], N, biasd, "bias")))
        return finish(NULL, b, 6);
    const char *err;
    RUN_NOGIL(err, cm_matmul(b[0].v.buf, od, b[1].v.buf, ad, b[2].v.buf, bd, b[3].held ? b[3].v.buf : NULL,
                                biasd, B, Bb, M, K, N, act, lo, hi, &rq));
    return finish(err, b, 6);
}

static PyObject *py_eltwise(PyObject *self, PyObject *args) {
    PyObject *o, *a, *bb;
    int od, ad, bd, op;
    i64 as[4], bs[4], os[4];
    double scalar;
    Buf b[3] = {{.held = 0}, {.held = 0}, {.held = 0}};
    if (!PyArg_ParseTuple(args, "OiOi(LLLL)Oi(LLLL)(LLLL)id", &o, &od, &a, &ad, &as[0], &as[1], &as[2], &as[3], &bb,
                          &bd, &bs[0], &bs[1], &bs[2], &bs[3], &os[0], &os[1], &os[2], &os[3], &op, &scalar))
        return NULL;
    if (dims_ok(as, 4) || dims_ok(bs, 4) || dims_ok(os, 4)) return NULL;
    for (int k = 0; k < 4; k++)
        if ((as[k] != os[k] && as[k] != 1) || (bb != Py_None && bs[k] != os[k] && bs[k] != 1)) {
            PyErr_SetString(PyExc_ValueError, "eltwise: operand shapes do not broadcast to the output");
            return NULL;
        }
    if (op < 0 || op > 5) { PyErr_SetString(PyExc_ValueError, "eltwise: unknown op"); return NULL; }
    if (same_class(ad, od, "eltwise") || (bb != Py_None && same_class(bd, od, "eltwise"))) return NULL;
    if (buf_get(o, &b[0], 1, "out") || buf_get(a, &b[1], 0, "a") || buf_get(bb, &b[2], 0, "b")) return finish(NULL, b, 3);
    if (buf_need(&b[0], os[0] * os[1] * os[2] * os[3], od, "out") ||
        buf_need(&b[1], as[0] * as[1] * as[2] * as[3], ad, "a") ||
        (b[2].held && buf_need(&b[2], bs[0] * bs[1] * bs[2] * bs[3], bd, "b")))
        return finish(NULL, b, 3);
    const char *err;
    RUN_NOGIL(err, cm_eltwise(b[0].v.buf, od, b[1].v.buf, ad, as, b[2].held ? b[2].v.buf : NULL, bd, bs, os, op,
                                 scalar));
    return finish(err, b, 3);
}

static PyObject *py_activation(PyObject *self, PyObject *args) {
    PyObject *o, *x;
    int od, xd, op;
    i64 n;
    float alpha, lo, hi;
    Buf b[2] = {{.held = 0}, {.held = 0}};
    if (!PyArg_ParseTuple(args, "OiOiLifff", &o, &od, &x, &xd, &n, &op, &alpha, &lo, &hi)) return NULL;
    if (same_class(xd, od, "activation")) return NULL;
    if (buf_get(o, &b[0], 1, "out") || buf_get(x, &b[1], 0, "x")) return finish(NULL, b, 2);
    if (buf_need(&b[0], n, od, "out") || buf_need(&b[1], n, xd, "x")) return finish(NULL, b, 2);
    const char *err;
    RUN_NOGIL(err, cm_activation(b[0].v.buf, od, b[1].v.buf, xd, n, op, alpha, lo, hi));
    return finish(err, b, 2);
}

static PyObject *py_pool2d(PyObject *self, PyObject *args) {
    PyObject *o, *x;
    int od, xd, mode, count_pad, shift;
    i64 N, C, H, W, Ho, Wo, kh, kw, sh, sw, pt, pb, pl, pr, mult;
    Buf b[2] = {{.held = 0}, {.held = 0}};
    if (!PyArg_ParseTuple(args, "OiOi(LLLL)(LL)(LL)(LL)(LLLL)iiLi", &o, &od, &x, &xd, &N, &C, &H, &W, &Ho, &Wo, &kh,
                          &kw, &sh, &sw, &pt, &pb, &pl, &pr, &mode, &count_pad, &mult, &shift))
        return NULL;
    i64 dx[] = {N, C, H, W}, dout[] = {N, C, Ho, Wo}, par[] = {kh, kw, sh, sw, pt, pb, pl, pr};
    if (dims_ok(dx, 4) || dims_ok(dout, 4) || vals_ok(par, 8)) return NULL;
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || shift < 0 || shift > 63) {
        PyErr_SetString(PyExc_ValueError, "pool2d: bad kernel/stride/shift");
        return NULL;
    }
    if (same_class(xd, od, "pool2d")) return NULL;
    if (buf_get(o, &b[0], 1, "out") || buf_get(x, &b[1], 0, "x")) return finish(NULL, b, 2);
    if (buf_need(&b[0], N * C * Ho * Wo, od, "out") || buf_need(&b[1], N * C * H * W, xd, "x")) return finish(NULL, b, 2);
    const char *err;
    RUN_NOGIL(err, cm_pool2d(b[0].v.buf, od, b[1].v.buf, xd, N, C, H, W, Ho, Wo, kh, kw, sh, sw, pt, pb, pl, pr, mode,
                            count_pad, mult, shift));
    return finish(err, b, 2);
}

static PyObject *py_lut(PyObject *self, PyObject *args) {
    PyObject *o, *x, *t;
    int od, xd;
    i64 n;
    Buf b[3] = {{.held = 0}, {.held = 0}, {.held = 0}};
    if (!PyArg_ParseTuple(args, "OiOiLO", &o, &od, &x, &xd, &n, &t)) return NULL;
    if (xd != DT_I8 && xd != DT_U8) { PyErr_SetString(PyExc_ValueError, "lut: input must be int8 or uint8"); return NULL; }
    if (buf_get(o, &b[0], 1, "out") || buf_get(x, &b[1], 0, "x") || buf_get(t, &b[2], 0, "table")) return finish(NULL, b, 3);
    if (buf_need(&b[0], n, od, "out") || buf_need(&b[1], n, xd, "x") || buf_need(&b[2], 256, od, "table"))
        return finish(NULL, b, 3);
    const char *err;
    RUN_NOGIL(err, cm_lut(b[0].v.buf, od, b[1].v.buf, xd, n, b[2].v.buf));
    return finish(err, b, 3);
}

static PyObject *py_requant(PyObject *self, PyObject *args) {
    PyObject *o, *x, *m, *s;
    int od, xd;
    i64 N, C, inner, zp;
    Buf b[4] = {{.held = 0}, {.held = 0}, {.held = 0}, {.held = 0}};
    if (!PyArg_ParseTuple(args, "OiOi(LLL)OOL", &o, &od, &x, &xd, &N, &C, &inner, &m, &s, &zp)) return NULL;
    i64 d[] = {N, C, inner};
    if (dims_ok(d, 3)) return NULL;
    if (dt_is_float(xd) || dt_is_float(od)) { PyErr_SetString(PyExc_ValueError, "requant: integer dtypes only"); return NULL; }
    if (buf_get(o, &b[0], 1, "out") || buf_get(x, &b[1], 0, "x") || buf_get(m, &b[2], 0, "multiplier") ||
        buf_get(s, &b[3], 0, "shift"))
        return finish(NULL, b, 4);
    i64 np_ = b[2].held ? (i64)b[2].v.len / 4 : 0;
    if ((np_ != 1 && np_ != C) || !b[3].held || (i64)b[3].v.len != np_ * 4) {
        PyErr_SetString(PyExc_ValueError, "requant: multiplier and shift need 1 or C int32 values");
        return finish(NULL, b, 4);
    }
    const int32_t *sh = (const int32_t *)b[3].v.buf;
    for (i64 i = 0; i < np_; i++)
        if (sh[i] < 0 || sh[i] > 63) { PyErr_SetString(PyExc_ValueError, "requant: shift outside [0, 63]"); return finish(NULL, b, 4); }
    if (buf_need(&b[0], N * C * inner, od, "out") || buf_need(&b[1], N * C * inner, xd, "x")) return finish(NULL, b, 4);
    return finish(cm_requant(b[0].v.buf, od, b[1].v.buf, xd, N, C, inner, (const int32_t *)b[2].v.buf, sh, np_, zp),
                  b, 4);
}

/* the largest |q - zp| over the dtype's values */
static i64 qadd_span(int dt, i64 zp) {
    i64 lo = dt == DT_U8 ? 0 : -128, hi = dt == DT_U8 ? 255 : 127;
    return zp - lo > hi - zp ? zp - lo : hi - zp;
}

static PyObject *py_qadd(PyObject *self, PyObject *args) {
    PyObject *o, *x, *y;
    int od, ad, bd, sign, as, bs, s;
    i64 n, az, am, bz, bm, m, zp, lo, hi;
    Buf b[3] = {{.held = 0}, {.held = 0}, {.held = 0}};
    if (!PyArg_ParseTuple(args, "OiOiOiLi(LLi)(LLi)(LiLLL)", &o, &od, &x, &ad, &y, &bd, &n, &sign, &az, &am, &as,
                          &bz, &bm, &bs, &m, &s, &zp, &lo, &hi))
        return NULL;
    int ok = (od == DT_I8 || od == DT_U8) && (ad == DT_I8 || ad == DT_U8) && (bd == DT_I8 || bd == DT_U8) &&
             (sign == 1 || sign == -1) && n >= 0;
    /* the fields isa.QAdd.check_fields guarantees; refused here too so that no call can overflow int64 */
    ok = ok && as >= 0 && as <= 63 && bs >= 0 && bs <= 63 && s >= 0 && s <= 63 && am >= 0 && am < ((i64)1 << 31) &&
         bm >= 0 && bm < ((i64)1 << 31) && m >= 0 && m < ((i64)1 << 31) && az > -((i64)1 << 16) &&
         az < ((i64)1 << 16) && bz > -((i64)1 << 16) && bz < ((i64)1 << 16);
    if (ok) {
        ok = rshift_rhaz(qadd_span(ad, az) * am, as) + rshift_rhaz(qadd_span(bd, bz) * bm, bs) < ((i64)1 << 31);
    }
    if (!ok) { PyErr_SetString(PyExc_ValueError, "qadd: fields out of range (see isa.QAdd)"); return NULL; }
    if (buf_get(o, &b[0], 1, "out") || buf_get(x, &b[1], 0, "a") || buf_get(y, &b[2], 0, "b")) return finish(NULL, b, 3);
    if (buf_need(&b[0], n, od, "out") || buf_need(&b[1], n, ad, "a") || buf_need(&b[2], n, bd, "b"))
        return finish(NULL, b, 3);
    const char *err;
    RUN_NOGIL(err, cm_qadd(b[0].v.buf, od, b[1].v.buf, ad, b[2].v.buf, bd, n, sign, az, am, as, bz, bm, bs, m, s, zp,
                           lo, hi));
    return finish(err, b, 3);
}

static PyObject *py_cast(PyObject *self, PyObject *args) {
    PyObject *o, *x;
    int od, xd, mode;
    i64 n, zp;
    float scale;
    Buf b[2] = {{.held = 0}, {.held = 0}};
    if (!PyArg_ParseTuple(args, "OiOiLfLi", &o, &od, &x, &xd, &n, &scale, &zp, &mode)) return NULL;
    if (buf_get(o, &b[0], 1, "out") || buf_get(x, &b[1], 0, "x")) return finish(NULL, b, 2);
    if (buf_need(&b[0], n, od, "out") || buf_need(&b[1], n, xd, "x")) return finish(NULL, b, 2);
    const char *err;
    RUN_NOGIL(err, cm_cast(b[0].v.buf, od, b[1].v.buf, xd, n, scale, zp, mode));
    return finish(err, b, 2);
}

static PyObject *py_reduce(PyObject *self, PyObject *args) {
    PyObject *o, *x;
    int od, xd, mask, op;
    i64 s[4];
    Buf b[2] = {{.held = 0}, {.held = 0}};
    if (!PyArg_ParseTuple(args, "OiOi(LLLL)ii", &o, &od, &x, &xd, &s[0], &s[1], &s[2], &s[3], &mask, &op)) return NULL;
    if (dims_ok(s, 4)) return NULL;
    if (op < 0 || op > 3) { PyErr_SetString(PyExc_ValueError, "reduce: unknown op"); return NULL; }
    if (same_class(xd, od, "reduce")) return NULL;
    i64 no = 1;
    for (int d = 0; d < 4; d++) no *= (mask >> d) & 1 ? 1 : s[d];
    if (buf_get(o, &b[0], 1, "out") || buf_get(x, &b[1], 0, "x")) return finish(NULL, b, 2);
    if (buf_need(&b[0], no, od, "out") || buf_need(&b[1], s[0] * s[1] * s[2] * s[3], xd, "x")) return finish(NULL, b, 2);
    const char *err;
    RUN_NOGIL(err, cm_reduce(b[0].v.buf, od, b[1].v.buf, xd, s, mask, op));
    return finish(err, b, 2);
}

static PyObject *py_softmax(PyObject *self, PyObject *args) {
    PyObject *o, *x;
    int od, xd, axis, log;
    i64 s[4];
    Buf b[2] = {{.held = 0}, {.held = 0}};
    if (!PyArg_ParseTuple(args, "OiOi(LLLL)ii", &o, &od, &x, &xd, &s[0], &s[1], &s[2], &s[3], &axis, &log)) return NULL;
    if (dims_ok(s, 4)) return NULL;
    if (axis < 0 || axis > 3 || !dt_is_float(xd) || !dt_is_float(od)) {
        PyErr_SetString(PyExc_ValueError, "softmax: float dtypes and axis 0..3 only");
        return NULL;
    }
    i64 n = s[0] * s[1] * s[2] * s[3];
    if (buf_get(o, &b[0], 1, "out") || buf_get(x, &b[1], 0, "x")) return finish(NULL, b, 2);
    if (buf_need(&b[0], n, od, "out") || buf_need(&b[1], n, xd, "x")) return finish(NULL, b, 2);
    const char *err;
    RUN_NOGIL(err, cm_softmax(b[0].v.buf, od, b[1].v.buf, xd, s, axis, log));
    return finish(err, b, 2);
}

static PyObject *py_layernorm(PyObject *self, PyObject *args) {
    PyObject *o, *x, *w, *bb;
    int od, xd, axis, wd, bd;
    i64 s[4];
    float eps;
    Buf b[4] = {{.held = 0}, {.held = 0}, {.held = 0}, {.held = 0}};
    if (!PyArg_ParseTuple(args, "OiOi(LLLL)iOiOif", &o, &od, &x, &xd, &s[0], &s[1], &s[2], &s[3], &axis, &w, &wd, &bb,
                          &bd, &eps))
        return NULL;
    if (dims_ok(s, 4)) return NULL;
    if (axis < 0 || axis > 3 || !dt_is_float(xd) || !dt_is_float(od)) {
        PyErr_SetString(PyExc_ValueError, "layernorm: float dtypes and axis 0..3 only");
        return NULL;
    }
    i64 n = s[0] * s[1] * s[2] * s[3], inner = 1;
    for (int d = axis; d < 4; d++) inner *= s[d];
    if (buf_get(o, &b[0], 1, "out") || buf_get(x, &b[1], 0, "x") || buf_get(w, &b[2], 0, "weight") ||
        buf_get(bb, &b[3], 0, "bias"))
        return finish(NULL, b, 4);
    if (buf_need(&b[0], n, od, "out") || buf_need(&b[1], n, xd, "x") || (b[2].held && buf_need(&b[2], inner, wd, "weight")) ||
        (b[3].held && buf_need(&b[3], inner, bd, "bias")))
        return finish(NULL, b, 4);
    const char *err;
    RUN_NOGIL(err, cm_layernorm(b[0].v.buf, od, b[1].v.buf, xd, s, axis, b[2].held ? b[2].v.buf : NULL, wd,
                               b[3].held ? b[3].v.buf : NULL, bd, eps));
    return finish(err, b, 4);
}

/* ---- selection kernels (kernels_misc.c) ---------------------------------------------------------- */

static int bcast_ok(const i64 *s, const i64 *os, const char *kernel, const char *name) {
    for (int k = 0; k < 4; k++)
        if (s[k] != os[k] && s[k] != 1) {
            PyErr_Format(PyExc_ValueError, "%s: operand '%s' does not broadcast to the output", kernel, name);
            return -1;
        }
    return 0;
}

static PyObject *py_compare(PyObject *self, PyObject *args) {
    PyObject *o, *a, *bb;
    int ad, bd, op;
    i64 as[4], bs[4], os[4];
    double scalar;
    Buf b[3] = {{.held = 0}, {.held = 0}, {.held = 0}};
    if (!PyArg_ParseTuple(args, "OOi(LLLL)Oi(LLLL)(LLLL)id", &o, &a, &ad, &as[0], &as[1], &as[2], &as[3], &bb, &bd,
                          &bs[0], &bs[1], &bs[2], &bs[3], &os[0], &os[1], &os[2], &os[3], &op, &scalar))
        return NULL;
    if (dims_ok(as, 4) || dims_ok(bs, 4) || dims_ok(os, 4)) return NULL;
    if (bcast_ok(as, os, "compare", "a") || (bb != Py_None && bcast_ok(bs, os, "compare", "b"))) return NULL;
    if (op < 0 || op > 5) { PyErr_SetString(PyExc_ValueError, "compare: unknown op"); return NULL; }
    if (bb != Py_None && same_class(ad, bd, "compare")) return NULL;
    if (!dt_valid(ad)) { PyErr_SetString(PyExc_ValueError, "compare: unknown dtype"); return NULL; }
    if (buf_get(o, &b[0], 1, "out") || buf_get(a, &b[1], 0, "a") || buf_get(bb, &b[2], 0, "b"))
        return finish(NULL, b, 3);
    if (buf_need(&b[0], os[0] * os[1] * os[2] * os[3], DT_U8, "out") ||
        buf_need(&b[1], as[0] * as[1] * as[2] * as[3], ad, "a") ||
        (b[2].held && buf_need(&b[2], bs[0] * bs[1] * bs[2] * bs[3], bd, "b")))
        return finish(NULL, b, 3);
    return finish(cm_compare((uint8_t *)b[0].v.buf, b[1].v.buf, ad, as, b[2].held ? b[2].v.buf : NULL, bd, bs, os, op,
                             scalar), b, 3);
}

static PyObject *py_select(PyObject *self, PyObject *args) {
    PyObject *o, *c, *a, *bb;
    int dt;
    i64 cs[4], as[4], bs[4], os[4];
    Buf b[4] = {{.held = 0}, {.held = 0}, {.held = 0}, {.held = 0}};
    if (!PyArg_ParseTuple(args, "OiO(LLLL)O(LLLL)O(LLLL)(LLLL)", &o, &dt, &c, &cs[0], &cs[1], &cs[2], &cs[3], &a,
                          &as[0], &as[1], &as[2], &as[3], &bb, &bs[0], &bs[1], &bs[2], &bs[3], &os[0], &os[1], &os[2],
                          &os[3]))
        return NULL;
    if (dims_ok(cs, 4) || dims_ok(as, 4) || dims_ok(bs, 4) || dims_ok(os, 4)) return NULL;
    if (bcast_ok(cs, os, "select", "cond") || bcast_ok(as, os, "select", "a") || bcast_ok(bs, os, "select", "b"))
        return NULL;
    if (buf_get(o, &b[0], 1, "out") || buf_get(c, &b[1], 0, "cond") || buf_get(a, &b[2], 0, "a") ||
        buf_get(bb, &b[3], 0, "b"))
        return finish(NULL, b, 4);
    if (buf_need(&b[0], os[0] * os[1] * os[2] * os[3], dt, "out") ||
        buf_need(&b[1], cs[0] * cs[1] * cs[2] * cs[3], DT_U8, "cond") ||
        buf_need(&b[2], as[0] * as[1] * as[2] * as[3], dt, "a") ||
        buf_need(&b[3], bs[0] * bs[1] * bs[2] * bs[3], dt, "b"))
        return finish(NULL, b, 4);
    return finish(cm_select(b[0].v.buf, (const uint8_t *)b[1].v.buf, cs, b[2].v.buf, as, b[3].v.buf, bs, os,
                            DT_SIZE[dt]), b, 4);
}

static PyObject *py_gather(PyObject *self, PyObject *args) {
    PyObject *o, *t, *ix, *pv;
    int dt;
    i64 rows, count, d, base;
    Buf b[4] = {{.held = 0}, {.held = 0}, {.held = 0}, {.held = 0}};
    if (!PyArg_ParseTuple(args, "OiOLOOLLL", &o, &dt, &t, &rows, &ix, &pv, &count, &d, &base)) return NULL;
    i64 dims[3] = {rows, count, d};
    if (dims_ok(dims, 3) || vals_ok(&base, 1)) return NULL;
    if (buf_get(o, &b[0], 1, "out") || buf_get(t, &b[1], 0, "table") || buf_get(ix, &b[2], 0, "index") ||
        buf_get(pv, &b[3], 0, "prev"))
        return finish(NULL, b, 4);
    if (buf_need(&b[0], count * d, dt, "out") || buf_need(&b[1], rows * d, dt, "table") ||
        buf_need(&b[2], count, DT_I32, "index") || (b[3].held && buf_need(&b[3], count * d, dt, "prev")))
        return finish(NULL, b, 4);
    return finish(cm_gather(b[0].v.buf, b[1].v.buf, rows, (const int32_t *)b[2].v.buf, b[3].held ? b[3].v.buf : NULL,
                            count, d, base, DT_SIZE[dt]), b, 4);
}

static PyObject *py_simd(PyObject *self, PyObject *args) { return PyUnicode_FromString(cm_simd_name()); }

static PyObject *py_set_simd(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    int level = !strcmp(name, "generic") ? 0 : !strcmp(name, "avx2") ? 1 : !strcmp(name, "avx512") ? 2
              : !strcmp(name, "avx512vnni") ? 3 : -2;
    if (level == -2 || cm_set_simd(level)) {
        PyErr_Format(PyExc_ValueError, "SIMD level '%s' is not available on this CPU", name);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *py_threads(PyObject *self, PyObject *args) { return PyLong_FromLong(cm_get_threads()); }

static PyObject *py_set_threads(PyObject *self, PyObject *args) {
    int n;
    if (!PyArg_ParseTuple(args, "i", &n)) return NULL;
    if (cm_set_threads(n)) { PyErr_Format(PyExc_ValueError, "thread count must be >= 0 (0: default), got %d", n); return NULL; }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"copy", py_copy, METH_VARARGS, "copy(dst, dst_desc, src, src_desc, shape, esize): strided/lane tensor copy"},
    {"conv2d", py_conv2d, METH_VARARGS, "conv2d kernel"},
    {"matmul", py_matmul, METH_VARARGS, "batched matmul kernel"},
    {"eltwise", py_eltwise, METH_VARARGS, "binary eltwise kernel with broadcast"},
    {"activation", py_activation, METH_VARARGS, "unary activation kernel"},
    {"pool2d", py_pool2d, METH_VARARGS, "max/avg pool kernel"},
    {"lut", py_lut, METH_VARARGS, "256-entry lookup table kernel"},
    {"requant", py_requant, METH_VARARGS, "per-channel multiplier/shift requantization"},
    {"qadd", py_qadd, METH_VARARGS, "a +- b of two int8 tiles rescaled to a common scale, requantized"},
    {"cast", py_cast, METH_VARARGS, "dtype cast / quantize / dequantize"},
    {"reduce", py_reduce, METH_VARARGS, "sum/mean/max/min reduction"},
    {"softmax", py_softmax, METH_VARARGS, "softmax / log-softmax"},
    {"layernorm", py_layernorm, METH_VARARGS, "layer normalization"},
    {"compare", py_compare, METH_VARARGS, "comparison mask (uint8) with broadcast"},
    {"select", py_select, METH_VARARGS, "cond ? a : b with broadcast"},
    {"gather", py_gather, METH_VARARGS, "row gather by run-time int32 index"},
    {"simd", py_simd, METH_NOARGS, "the SIMD level the kernels use"},
    {"set_simd", py_set_simd, METH_VARARGS, "force a SIMD level: generic, avx2, avx512, avx512vnni"},
    {"threads", py_threads, METH_NOARGS, "how many threads the kernels use"},
    {"set_threads", py_set_threads, METH_VARARGS, "set the kernels' thread count (0: the CPUs this process may use)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_cmodel", "torch_tpu cmodel C kernels", -1, methods};

PyMODINIT_FUNC PyInit__cmodel(void) { return PyModule_Create(&moddef); }
