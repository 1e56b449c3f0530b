/* A small fixed pool of worker threads for the cmodel kernels (pthreads; serial where there are none).
 *
 * cm_parallel_for(n, fn, ctx) runs fn(ctx, i) for i in [0, n) on the calling thread and the workers, and
 * returns when every call has returned. Tasks are handed out in order from one shared counter, so which
 * thread runs a task varies from run to run: a kernel must give every task a disjoint part of the output
 * and never let a result depend on the split (the GEMM splits over M and N blocks only, never over K, so
 * threaded and serial results are bit-identical). A call made while the pool is busy (another Python
 * thread, or a task calling cm_parallel_for) runs serially on its caller.
 */
#ifndef TORCH_TPU_CMODEL_THREADS_H
#define TORCH_TPU_CMODEL_THREADS_H
#include <stddef.h>

typedef void (*cm_task_fn)(void *ctx, size_t task);

/* number of threads the kernels use (>= 1): the CPUs this process may run on unless set */
int cm_get_threads(void);
/* n >= 1 sets the count (capped at CM_MAX_THREADS); n == 0 restores the default; returns -1 if n < 0 */
int cm_set_threads(int n);
void cm_parallel_for(size_t ntasks, cm_task_fn fn, void *ctx);

#define CM_MAX_THREADS 64

#endif
