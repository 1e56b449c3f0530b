/* Selection kernels: compare (uint8 mask), select (cond ? a : b) and gather (rows by run-time index).
 * The definition they implement is torch_tpu/cmodel/kernels_ref.py (compare, select, gather); they move or
 * compare values exactly, nothing is rounded. */
#include <stdlib.h>
#include "common.h"
#include "kernels.h"

#define NOMEM "out of memory"

/* element strides of a dense N,C,H,W tensor broadcast to the output (0 where a dim is 1) */
static void bcast_strides(const i64 *s, i64 *st) {
    st[3] = s[3] == 1 ? 0 : 1;
    st[2] = s[2] == 1 ? 0 : s[3];
    st[1] = s[1] == 1 ? 0 : s[2] * s[3];
    st[0] = s[0] == 1 ? 0 : s[1] * s[2] * s[3];
}

static int cmp_f(double x, double y, int op) {
    switch (op) {
    case CMP_EQ: return x == y;
    case CMP_NE: return x != y;
    case CMP_LT: return x < y;
    case CMP_LE: return x <= y;
    case CMP_GT: return x > y;
    default: return x >= y;
    }
}

static int cmp_i(int64_t x, int64_t y, int op) {
    switch (op) {
    case CMP_EQ: return x == y;
    case CMP_NE: return x != y;
    case CMP_LT: return x < y;
    case CMP_LE: return x <= y;
    case CMP_GT: return x > y;
    default: return x >= y;
    }
}

const char *cm_compare(uint8_t *out, const void *a, int ad, const i64 *as, const void *b, int bd, const i64 *bs,
                       const i64 *os, int op, double scalar) {
    i64 sa[4], sb[4], na = as[0] * as[1] * as[2] * as[3], nb = b ? bs[0] * bs[1] * bs[2] * bs[3] : 1;
    bcast_strides(as, sa);
    if (b) bcast_strides(bs, sb); else sb[0] = sb[1] = sb[2] = sb[3] = 0;
    int is_float = dt_is_float(ad);
    float *fa = NULL, *fb = NULL;
    int64_t *ia = NULL, *ib = NULL;
    const char *err = NULL;
    if (is_float) {
        fa = (float *)malloc((size_t)na * 4 + 4);
        fb = b ? (float *)malloc((size_t)nb * 4 + 4) : NULL;
        if (!fa || (b && !fb)) { err = NOMEM; goto done; }
        cm_to_f32(a, ad, (size_t)na, fa);
        if (b) cm_to_f32(b, bd, (size_t)nb, fb);
    } else {
        ia = (int64_t *)malloc((size_t)na * 8 + 8);
        ib = b ? (int64_t *)malloc((size_t)nb * 8 + 8) : NULL;
        if (!ia || (b && !ib)) { err = NOMEM; goto done; }
        cm_to_i64(a, ad, (size_t)na, ia);
        if (b) cm_to_i64(b, bd, (size_t)nb, ib);
    }
    float fsc = (float)scalar; /* float operands meet the scalar in f32, as the reference does */
    size_t o = 0;
    for (i64 n = 0; n < os[0]; n++) for (i64 c = 0; c < os[1]; c++) for (i64 h = 0; h < os[2]; h++)
        for (i64 w = 0; w < os[3]; w++, o++) {
            i64 ka = n * sa[0] + c * sa[1] + h * sa[2] + w * sa[3], kb = n * sb[0] + c * sb[1] + h * sb[2] + w * sb[3];
            int r;
            if (is_float) r = cmp_f(fa[ka], b ? fb[kb] : fsc, op);
            else if (b) r = cmp_i(ia[ka], ib[kb], op);
            else r = cmp_f((double)ia[ka], scalar, op);
            out[o] = (uint8_t)r;
        }
done:
    free(fa); free(fb); free(ia); free(ib);
    return err;
}

const char *cm_select(void *out, const uint8_t *cond, const i64 *cs, const void *a, const i64 *as, const void *b,
                      const i64 *bs, const i64 *os, int esize) {
    i64 sc[4], sa[4], sb[4];
    bcast_strides(cs, sc);
    bcast_strides(as, sa);
    bcast_strides(bs, sb);
    size_t o = 0;
    for (i64 n = 0; n < os[0]; n++) for (i64 c = 0; c < os[1]; c++) for (i64 h = 0; h < os[2]; h++)
        for (i64 w = 0; w < os[3]; w++, o++) {
            i64 kc = n * sc[0] + c * sc[1] + h * sc[2] + w * sc[3];
            const char *src = cond[kc] ? (const char *)a + (n * sa[0] + c * sa[1] + h * sa[2] + w * sa[3]) * esize
                                       : (const char *)b + (n * sb[0] + c * sb[1] + h * sb[2] + w * sb[3]) * esize;
            memcpy((char *)out + o * esize, src, (size_t)esize);
        }
    return NULL;
}

const char *cm_gather(void *out, const void *table, i64 rows, const int32_t *index, const void *prev, i64 count,
                      i64 d, i64 base, int esize) {
    size_t row_bytes = (size_t)(d * esize);
    for (i64 i = 0; i < count; i++) {
        i64 r = (i64)index[i] - base;
        char *dst = (char *)out + i * (i64)row_bytes;
        if (r >= 0 && r < rows) memcpy(dst, (const char *)table + r * (i64)row_bytes, row_bytes);
        else if (prev) memmove(dst, (const char *)prev + i * (i64)row_bytes, row_bytes);
        else memset(dst, 0, row_bytes);
    }
    return NULL;
}
