/* Blocked GEMM micro-kernels: f32 (FMA) and int8 x int8 -> int32.
 *
 * C[M,N] += A[M,K] . B[K,N], row-major (tiles: f32 4x16 AVX2 / 6x32 AVX-512, int8 4x16 / 4x32). The K loop of every output element runs in order
 * k = 0..K-1 (the accumulator is loaded from C and stored back after each K block), so blocking
 * does not reorder the sum. The SIMD level is chosen once at run time with __builtin_cpu_supports
 * (AVX-512F, AVX2+FMA, or portable C) and can be forced with cm_set_simd (tests run every level
 * the CPU has).
 */
#include <stdlib.h>
#include "common.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CM_X86 1
#include <immintrin.h>
#endif

enum { SIMD_GENERIC = 0, SIMD_AVX2 = 1, SIMD_AVX512 = 2 };
static int g_simd = -1;

static int simd_detect(void) {
#ifdef CM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return SIMD_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SIMD_AVX2;
#endif
    return SIMD_GENERIC;
}

static int simd_level(void) {
    if (g_simd < 0) g_simd = simd_detect();
    return g_simd;
}

/* Force a SIMD level (0 generic, 1 avx2, 2 avx512); returns -1 when the CPU lacks it. */
int cm_set_simd(int level) {
    if (level < 0 || level > simd_detect()) return -1;
    g_simd = level;
    return 0;
}

const char *cm_simd_name(void) {
    static const char *names[] = {"generic", "avx2", "avx512"};
    return names[simd_level()];
}

#define KC 256
#define NC 256

/* ---- portable ------------------------------------------------------------------------------ */

static void sgemm_generic(const float *A, const float *B, float *C, size_t M, size_t N, size_t K) {
    for (size_t i = 0; i < M; i++)
        for (size_t k = 0; k < K; k++) {
            float a = A[i * K + k];
            const float *b = B + k * N;
            float *c = C + i * N;
            for (size_t j = 0; j < N; j++) c[j] += a * b[j];
        }
}

static void igemm_generic(const int8_t *A, const int8_t *B, int32_t *C, size_t M, size_t N, size_t K) {
    for (size_t i = 0; i < M; i++)
        for (size_t k = 0; k < K; k++) {
            int32_t a = A[i * K + k];
            const int8_t *b = B + k * N;
            int32_t *c = C + i * N;
            for (size_t j = 0; j < N; j++) c[j] += a * (int32_t)b[j];
        }
}

/* edge tile of any size, same k order as the vector tiles */
static void sgemm_edge(const float *A, const float *B, float *C, size_t N, size_t K, size_t i0, size_t i1,
                       size_t j0, size_t j1, size_t k0, size_t k1) {
    for (size_t i = i0; i < i1; i++)
        for (size_t j = j0; j < j1; j++) {
            float acc = C[i * N + j];
            for (size_t k = k0; k < k1; k++) acc += A[i * K + k] * B[k * N + j];
            C[i * N + j] = acc;
        }
}

#ifdef CM_X86
/* ---- AVX2 + FMA: 6x16 f32 tile, 4x16 int8 tile (int16 pairs through vpmaddwd) ---------------- */

__attribute__((target("avx2,fma")))
static void sgemm_avx2(const float *A, const float *B, float *C, size_t M, size_t N, size_t K) {
    for (size_t k0 = 0; k0 < K; k0 += KC) {
        size_t k1 = k0 + KC < K ? k0 + KC : K;
        for (size_t j0 = 0; j0 < N; j0 += NC) {
            size_t j1 = j0 + NC < N ? j0 + NC : N, jv = j0 + (j1 - j0) / 16 * 16;
            size_t i = 0;
            for (; i + 4 <= M; i += 4) {
                for (size_t j = j0; j < jv; j += 16) {
                    __m256 c[4][2];
                    for (int r = 0; r < 4; r++) {
                        c[r][0] = _mm256_loadu_ps(C + (i + r) * N + j);
                        c[r][1] = _mm256_loadu_ps(C + (i + r) * N + j + 8);
                    }
                    for (size_t k = k0; k < k1; k++) {
                        __m256 b0 = _mm256_loadu_ps(B + k * N + j), b1 = _mm256_loadu_ps(B + k * N + j + 8);
                        for (int r = 0; r < 4; r++) {
                            __m256 a = _mm256_broadcast_ss(A + (i + r) * K + k);
                            c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
                            c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
                        }
                    }
                    for (int r = 0; r < 4; r++) {
                        _mm256_storeu_ps(C + (i + r) * N + j, c[r][0]);
                        _mm256_storeu_ps(C + (i + r) * N + j + 8, c[r][1]);
                    }
                }
                sgemm_edge(A, B, C, N, K, i, i + 4, jv, j1, k0, k1);
            }
            for (; i < M; i++) {
                for (size_t j = j0; j < jv; j += 16) {
                    __m256 c0 = _mm256_loadu_ps(C + i * N + j), c1 = _mm256_loadu_ps(C + i * N + j + 8);
                    for (size_t k = k0; k < k1; k++) {
                        __m256 a = _mm256_broadcast_ss(A + i * K + k);
                        c0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(B + k * N + j), c0);
                        c1 = _mm256_fmadd_ps(a, _mm256_loadu_ps(B + k * N + j + 8), c1);
                    }
                    _mm256_storeu_ps(C + i * N + j, c0);
                    _mm256_storeu_ps(C + i * N + j + 8, c1);
                }
                sgemm_edge(A, B, C, N, K, i, i + 1, jv, j1, k0, k1);
            }
        }
    }
}

/* Ap: M x K2 int32 words holding (a[2p], a[2p+1]); Bp: K2 x N x 2 int16 (b[2p][j], b[2p+1][j]).
 * Columns in blocks of NCI so a block of Bp stays in L2 while 4-row x 16-column tiles run over it. */
#define NCI 128

static void igemm_edge(const int32_t *Ap, const int16_t *Bp, int32_t *C, size_t N, size_t K2, size_t i0, size_t i1,
                       size_t j0, size_t j1) {
    for (size_t i = i0; i < i1; i++)
        for (size_t j = j0; j < j1; j++) {
            int32_t acc = C[i * N + j];
            for (size_t p = 0; p < K2; p++) {
                int32_t a = Ap[i * K2 + p];
                acc += (int16_t)(a & 0xffff) * Bp[(p * N + j) * 2] + (int16_t)(a >> 16) * Bp[(p * N + j) * 2 + 1];
            }
            C[i * N + j] = acc;
        }
}

__attribute__((target("avx2")))
static void igemm_avx2(const int32_t *Ap, const int16_t *Bp, int32_t *C, size_t M, size_t N, size_t K2) {
    for (size_t j0 = 0; j0 < N; j0 += NCI) {
        size_t j1 = j0 + NCI < N ? j0 + NCI : N, jv = j0 + (j1 - j0) / 16 * 16;
        size_t i = 0;
        for (; i + 4 <= M; i += 4) {
            for (size_t j = j0; j < jv; j += 16) {
                __m256i c[4][2];
                for (int r = 0; r < 4; r++) {
                    c[r][0] = _mm256_loadu_si256((const __m256i *)(C + (i + r) * N + j));
                    c[r][1] = _mm256_loadu_si256((const __m256i *)(C + (i + r) * N + j + 8));
                }
                for (size_t p = 0; p < K2; p++) {
                    __m256i b0 = _mm256_loadu_si256((const __m256i *)(Bp + (p * N + j) * 2));
                    __m256i b1 = _mm256_loadu_si256((const __m256i *)(Bp + (p * N + j) * 2 + 16));
                    for (int r = 0; r < 4; r++) {
                        __m256i a = _mm256_set1_epi32(Ap[(i + r) * K2 + p]);
                        c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(b0, a));
                        c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(b1, a));
                    }
                }
                for (int r = 0; r < 4; r++) {
                    _mm256_storeu_si256((__m256i *)(C + (i + r) * N + j), c[r][0]);
                    _mm256_storeu_si256((__m256i *)(C + (i + r) * N + j + 8), c[r][1]);
                }
            }
            igemm_edge(Ap, Bp, C, N, K2, i, i + 4, jv, j1);
        }
        for (; i < M; i++) {
            for (size_t j = j0; j < jv; j += 16) {
                __m256i c0 = _mm256_loadu_si256((const __m256i *)(C + i * N + j));
                __m256i c1 = _mm256_loadu_si256((const __m256i *)(C + i * N + j + 8));
                for (size_t p = 0; p < K2; p++) {
                    __m256i a = _mm256_set1_epi32(Ap[i * K2 + p]);
                    c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(Bp + (p * N + j) * 2)), a));
                    c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(Bp + (p * N + j) * 2 + 16)), a));
                }
                _mm256_storeu_si256((__m256i *)(C + i * N + j), c0);
                _mm256_storeu_si256((__m256i *)(C + i * N + j + 8), c1);
            }
            igemm_edge(Ap, Bp, C, N, K2, i, i + 1, jv, j1);
        }
    }
}

/* ---- AVX-512: 6x32 f32 tile, 16-column int8 tile --------------------------------------------- */

__attribute__((target("avx512f")))
static void sgemm_avx512(const float *A, const float *B, float *C, size_t M, size_t N, size_t K) {
    for (size_t k0 = 0; k0 < K; k0 += KC) {
        size_t k1 = k0 + KC < K ? k0 + KC : K;
        for (size_t j0 = 0; j0 < N; j0 += NC) {
            size_t j1 = j0 + NC < N ? j0 + NC : N, jv = j0 + (j1 - j0) / 32 * 32;
            size_t i = 0;
            for (; i + 6 <= M; i += 6) {
                for (size_t j = j0; j < jv; j += 32) {
                    __m512 c[6][2];
                    for (int r = 0; r < 6; r++) {
                        c[r][0] = _mm512_loadu_ps(C + (i + r) * N + j);
                        c[r][1] = _mm512_loadu_ps(C + (i + r) * N + j + 16);
                    }
                    for (size_t k = k0; k < k1; k++) {
                        __m512 b0 = _mm512_loadu_ps(B + k * N + j), b1 = _mm512_loadu_ps(B + k * N + j + 16);
                        for (int r = 0; r < 6; r++) {
                            __m512 a = _mm512_set1_ps(A[(i + r) * K + k]);
                            c[r][0] = _mm512_fmadd_ps(a, b0, c[r][0]);
                            c[r][1] = _mm512_fmadd_ps(a, b1, c[r][1]);
                        }
                    }
                    for (int r = 0; r < 6; r++) {
                        _mm512_storeu_ps(C + (i + r) * N + j, c[r][0]);
                        _mm512_storeu_ps(C + (i + r) * N + j + 16, c[r][1]);
                    }
                }
                sgemm_edge(A, B, C, N, K, i, i + 6, jv, j1, k0, k1);
            }
            for (; i < M; i++) {
                for (size_t j = j0; j < jv; j += 32) {
                    __m512 c0 = _mm512_loadu_ps(C + i * N + j), c1 = _mm512_loadu_ps(C + i * N + j + 16);
                    for (size_t k = k0; k < k1; k++) {
                        __m512 a = _mm512_set1_ps(A[i * K + k]);
                        c0 = _mm512_fmadd_ps(a, _mm512_loadu_ps(B + k * N + j), c0);
                        c1 = _mm512_fmadd_ps(a, _mm512_loadu_ps(B + k * N + j + 16), c1);
                    }
                    _mm512_storeu_ps(C + i * N + j, c0);
                    _mm512_storeu_ps(C + i * N + j + 16, c1);
                }
                sgemm_edge(A, B, C, N, K, i, i + 1, jv, j1, k0, k1);
            }
        }
    }
}

__attribute__((target("avx512f,avx512bw")))
static void igemm_avx512(const int32_t *Ap, const int16_t *Bp, int32_t *C, size_t M, size_t N, size_t K2) {
    for (size_t j0 = 0; j0 < N; j0 += NCI) {
        size_t j1 = j0 + NCI < N ? j0 + NCI : N, jv = j0 + (j1 - j0) / 32 * 32;
        size_t i = 0;
        for (; i + 4 <= M; i += 4) {
            for (size_t j = j0; j < jv; j += 32) {
                __m512i c[4][2];
                for (int r = 0; r < 4; r++) {
                    c[r][0] = _mm512_loadu_si512((const void *)(C + (i + r) * N + j));
                    c[r][1] = _mm512_loadu_si512((const void *)(C + (i + r) * N + j + 16));
                }
                for (size_t p = 0; p < K2; p++) {
                    __m512i b0 = _mm512_loadu_si512((const void *)(Bp + (p * N + j) * 2));
                    __m512i b1 = _mm512_loadu_si512((const void *)(Bp + (p * N + j) * 2 + 32));
                    for (int r = 0; r < 4; r++) {
                        __m512i a = _mm512_set1_epi32(Ap[(i + r) * K2 + p]);
                        c[r][0] = _mm512_add_epi32(c[r][0], _mm512_madd_epi16(b0, a));
                        c[r][1] = _mm512_add_epi32(c[r][1], _mm512_madd_epi16(b1, a));
                    }
                }
                for (int r = 0; r < 4; r++) {
                    _mm512_storeu_si512((void *)(C + (i + r) * N + j), c[r][0]);
                    _mm512_storeu_si512((void *)(C + (i + r) * N + j + 16), c[r][1]);
                }
            }
            igemm_edge(Ap, Bp, C, N, K2, i, i + 4, jv, j1);
        }
        igemm_edge(Ap, Bp, C, N, K2, i, M, j0, j1);
    }
}
#endif

void cm_sgemm(const float *A, const float *B, float *C, size_t M, size_t N, size_t K) {
#ifdef CM_X86
    int level = simd_level();
    if (level == SIMD_AVX512) { sgemm_avx512(A, B, C, M, N, K); return; }
    if (level == SIMD_AVX2) { sgemm_avx2(A, B, C, M, N, K); return; }
#endif
    sgemm_generic(A, B, C, M, N, K);
}

int cm_igemm_s8(const int8_t *A, const int8_t *B, int32_t *C, size_t M, size_t N, size_t K) {
#ifdef CM_X86
    int level = simd_level();
    if (level != SIMD_GENERIC) {
        size_t K2 = (K + 1) / 2;
        int32_t *Ap = (int32_t *)malloc(M * K2 * sizeof(int32_t) + 1);
        int16_t *Bp = (int16_t *)malloc(K2 * N * 2 * sizeof(int16_t) + 1);
        if (!Ap || !Bp) { free(Ap); free(Bp); return -1; }
        for (size_t i = 0; i < M; i++)
            for (size_t p = 0; p < K2; p++) {
                int32_t lo = A[i * K + 2 * p], hi = 2 * p + 1 < K ? A[i * K + 2 * p + 1] : 0;
                Ap[i * K2 + p] = (int32_t)(((uint32_t)(uint16_t)(int16_t)lo) | ((uint32_t)(uint16_t)(int16_t)hi << 16));
            }
        for (size_t p = 0; p < K2; p++)
            for (size_t j = 0; j < N; j++) {
                Bp[(p * N + j) * 2] = B[2 * p * N + j];
                Bp[(p * N + j) * 2 + 1] = 2 * p + 1 < K ? B[(2 * p + 1) * N + j] : 0;
            }
        if (level == SIMD_AVX512) igemm_avx512(Ap, Bp, C, M, N, K2);
        else igemm_avx2(Ap, Bp, C, M, N, K2);
        free(Ap);
        free(Bp);
        return 0;
    }
#endif
    igemm_generic(A, B, C, M, N, K);
    return 0;
}
