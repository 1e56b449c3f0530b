/* Bulk dtype conversions used by every kernel (see common.h for the rounding rules). */
#include "common.h"

void cm_to_f32(const void *src, int dt, size_t n, float *dst) {
    size_t i;
    switch (dt) {
    case DT_F32: memcpy(dst, src, n * 4); break;
    case DT_F16: for (i = 0; i < n; i++) dst[i] = f16_to_f32(((const uint16_t *)src)[i]); break;
    case DT_BF16: for (i = 0; i < n; i++) dst[i] = bf16_to_f32(((const uint16_t *)src)[i]); break;
    case DT_I8: for (i = 0; i < n; i++) dst[i] = (float)((const int8_t *)src)[i]; break;
    case DT_I32: for (i = 0; i < n; i++) dst[i] = (float)((const int32_t *)src)[i]; break;
    default: for (i = 0; i < n; i++) dst[i] = (float)((const uint8_t *)src)[i]; break;
    }
}

void cm_from_f32(const float *src, size_t n, int dt, void *dst) {
    size_t i;
    switch (dt) {
    case DT_F32: memcpy(dst, src, n * 4); break;
    case DT_F16: for (i = 0; i < n; i++) ((uint16_t *)dst)[i] = f32_to_f16(src[i]); break;
    default: for (i = 0; i < n; i++) ((uint16_t *)dst)[i] = f32_to_bf16(src[i]); break;
    }
}

void cm_to_i64(const void *src, int dt, size_t n, int64_t *dst) {
    size_t i;
    switch (dt) {
    case DT_I8: for (i = 0; i < n; i++) dst[i] = ((const int8_t *)src)[i]; break;
    case DT_I32: for (i = 0; i < n; i++) dst[i] = ((const int32_t *)src)[i]; break;
    default: for (i = 0; i < n; i++) dst[i] = ((const uint8_t *)src)[i]; break;
    }
}

void cm_from_i64_sat(const int64_t *src, size_t n, int dt, void *dst) {
    size_t i;
    switch (dt) {
    case DT_I8: for (i = 0; i < n; i++) ((int8_t *)dst)[i] = (int8_t)sat(src[i], dt); break;
    case DT_I32: for (i = 0; i < n; i++) ((int32_t *)dst)[i] = (int32_t)sat(src[i], dt); break;
    default: for (i = 0; i < n; i++) ((uint8_t *)dst)[i] = (uint8_t)sat(src[i], dt); break;
    }
}
