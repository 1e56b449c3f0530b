/* Worker pool behind cm_parallel_for (see threads.h).
 *
 * Workers start on the first parallel call and then sleep on a condition variable between jobs. A job is
 * (fn, ctx, ntasks) plus a shared task counter; the caller works on it too and waits until every worker
 * that joined has left. After fork() the child has none of the parent's threads: the pool notices the
 * new process id and starts afresh. Without pthreads (Windows builds) everything runs serially.
 */
#define _GNU_SOURCE
#include "threads.h"

#if defined(__unix__) || defined(__APPLE__)
#define CM_PTHREADS 1
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#endif

static int g_threads = 0; /* 0: not chosen yet, use the default */

static int default_threads(void) {
#ifdef CM_PTHREADS
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n > 0) return (int)n;
#endif
    return 1;
}

int cm_get_threads(void) {
    if (g_threads <= 0) {
        int n = default_threads();
        g_threads = n < 1 ? 1 : n > CM_MAX_THREADS ? CM_MAX_THREADS : n;
    }
    return g_threads;
}

int cm_set_threads(int n) {
    if (n < 0) return -1;
    g_threads = n == 0 ? 0 : n > CM_MAX_THREADS ? CM_MAX_THREADS : n;
    cm_get_threads();
    return 0;
}

#ifdef CM_PTHREADS

typedef struct {
    pthread_mutex_t lock;      /* guards everything below but next */
    pthread_cond_t start, done;
    pthread_mutex_t busy;      /* held by the thread running a job; trylock fails -> run serially */
    int started;               /* workers alive */
    unsigned long generation;  /* bumped per job */
    int wanted;                /* workers asked to take part in the current job */
    int left;                  /* of those, how many have finished it */
    cm_task_fn fn;
    void *ctx;
    size_t ntasks;
    size_t next;               /* next task index (atomic) */
} Pool;

static Pool g_pool;
static pthread_once_t g_pool_once = PTHREAD_ONCE_INIT;

static void pool_reset(void) {
    Pool *p = &g_pool;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->busy, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    p->started = 0;
    p->generation = 0;
    p->wanted = p->left = 0;
}

/* in a forked child only the forking thread exists: forget the parent's workers and locks */
static void pool_init(void) {
    pool_reset();
    pthread_atfork(NULL, NULL, pool_reset);
}

static void run_tasks(Pool *p, cm_task_fn fn, void *ctx, size_t n) {
    for (;;) {
        size_t i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        if (i >= n) break;
        fn(ctx, i);
    }
}

static void *worker(void *arg) {
    Pool *p = (Pool *)arg;
    pthread_mutex_lock(&p->lock);
    int index = p->started++;
    unsigned long seen = p->generation;
    for (;;) {
        while (p->generation == seen) pthread_cond_wait(&p->start, &p->lock);
        seen = p->generation;
        if (index >= p->wanted) continue; /* this job uses fewer threads */
        cm_task_fn fn = p->fn;
        void *ctx = p->ctx;
        size_t n = p->ntasks;
        pthread_mutex_unlock(&p->lock);
        run_tasks(p, fn, ctx, n);
        pthread_mutex_lock(&p->lock);
        if (++p->left == p->wanted) pthread_cond_signal(&p->done);
    }
    return NULL;
}

/* start workers until `workers` run (called with busy held); returns how many run */
static int pool_grow(Pool *p, int workers) {
    pthread_mutex_lock(&p->lock);
    int have = p->started;
    pthread_mutex_unlock(&p->lock);
    while (have < workers) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker, p);
        pthread_attr_destroy(&attr);
        if (rc) break;
        for (;;) { /* wait until it has taken its index, so indices stay dense */
            pthread_mutex_lock(&p->lock);
            int s = p->started;
            pthread_mutex_unlock(&p->lock);
            if (s > have) break;
            sched_yield();
        }
        have++;
    }
    return have < workers ? have : workers;
}

void cm_parallel_for(size_t ntasks, cm_task_fn fn, void *ctx) {
    int threads = cm_get_threads();
    if (threads <= 1 || ntasks <= 1) {
        for (size_t i = 0; i < ntasks; i++) fn(ctx, i);
        return;
    }
    pthread_once(&g_pool_once, pool_init);
    Pool *p = &g_pool;
    if (pthread_mutex_trylock(&p->busy) != 0) { /* pool in use: a nested or concurrent call */
        for (size_t i = 0; i < ntasks; i++) fn(ctx, i);
        return;
    }
    int workers = (size_t)(threads - 1) < ntasks - 1 ? threads - 1 : (int)(ntasks - 1);
    workers = pool_grow(p, workers);
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    __atomic_store_n(&p->next, 0, __ATOMIC_RELAXED);
    p->wanted = workers;
    p->left = 0;
    p->generation++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->lock);
    run_tasks(p, fn, ctx, ntasks);
    pthread_mutex_lock(&p->lock);
    while (p->left < p->wanted) pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->busy);
}

#else

void cm_parallel_for(size_t ntasks, cm_task_fn fn, void *ctx) {
    for (size_t i = 0; i < ntasks; i++) fn(ctx, i);
}

#endif
