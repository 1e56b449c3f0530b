/* Dense compute kernels of the cmodel; each returns NULL on success or a static error message.
 * Shapes are N, C, H, W (row-major, contiguous); dtype codes as in common.h. */
#ifndef TORCH_TPU_CMODEL_KERNELS_H
#define TORCH_TPU_CMODEL_KERNELS_H
#include <stdint.h>
#include "common.h"

typedef int64_t i64;

enum { ACT_NONE = 0, ACT_RELU = 1, ACT_RELU6 = 2, ACT_CLIP = 3 };

const char *cm_conv2d(void *out, int od, const void *x, int xd, const void *w, int wd, const void *bias, int bd,
                      i64 N, i64 Cin, i64 H, i64 W, i64 Cout, i64 kh, i64 kw, i64 Ho, i64 Wo, i64 sh, i64 sw,
                      i64 pt, i64 pl, i64 dh, i64 dw, i64 groups, int act, float lo, float hi, int pad_value,
                      const CmRequant *rq);
const char *cm_matmul(void *out, int od, const void *a, int ad, const void *b, int bd, const void *bias, int biasd,
                      i64 B, i64 Bb, i64 M, i64 K, i64 N, int act, float lo, float hi, const CmRequant *rq);
const char *cm_eltwise(void *out, int od, const void *a, int ad, const i64 *ashape, const void *b, int bd,
                       const i64 *bshape, const i64 *oshape, int op, double scalar);
const char *cm_activation(void *out, int od, const void *x, int xd, i64 n, int op, float alpha, float lo, float hi);
const char *cm_pool2d(void *out, int od, const void *x, int xd, i64 N, i64 C, i64 H, i64 W, i64 Ho, i64 Wo,
                      i64 kh, i64 kw, i64 sh, i64 sw, i64 pt, i64 pb, i64 pl, i64 pr, int mode, int count_pad,
                      i64 mult, int shift);
const char *cm_lut(void *out, int od, const void *x, int xd, i64 n, const void *table);
const char *cm_requant(void *out, int od, const void *x, int xd, i64 N, i64 C, i64 inner, const int32_t *mult,
                       const int32_t *shift, i64 nparams, i64 zp);
const char *cm_qadd(void *out, int od, const void *a, int ad, const void *b, int bd, i64 n, int sign, i64 az,
                    i64 am, int as, i64 bz, i64 bm, int bs, i64 m, int s, i64 zp, i64 lo, i64 hi);
const char *cm_cast(void *out, int od, const void *x, int xd, i64 n, float scale, i64 zp, int round_mode);
const char *cm_reduce(void *out, int od, const void *x, int xd, const i64 *shape, int axes_mask, int op);
const char *cm_softmax(void *out, int od, const void *x, int xd, const i64 *shape, int axis, int log);
const char *cm_layernorm(void *out, int od, const void *x, int xd, const i64 *shape, int axis, const void *w, int wd,
                         const void *b, int bd, float eps);

/* kernels_misc.c: exact selection kernels (compare codes = index in isa.COMPARE_OPS) */
enum { CMP_EQ = 0, CMP_NE = 1, CMP_LT = 2, CMP_LE = 3, CMP_GT = 4, CMP_GE = 5 };
const char *cm_compare(uint8_t *out, const void *a, int ad, const i64 *as, const void *b, int bd, const i64 *bs,
                       const i64 *os, int op, double scalar);
const char *cm_select(void *out, const uint8_t *cond, const i64 *cs, const void *a, const i64 *as, const void *b,
                      const i64 *bs, const i64 *os, int esize);
const char *cm_gather(void *out, const void *table, i64 rows, const int32_t *index, const void *prev, i64 count,
                      i64 d, i64 base, int esize);
#endif
