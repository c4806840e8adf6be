/* moe decode rows: the current layout (gate, up and down_t as three arrays) against one packed [F][3][D] array
 * (a neuron's three rows adjacent, so an expert is one contiguous block), 30 layers of SmolLM2 shapes, cold caches.
 *
 *     gcc -O3 -march=native -fopenmp -std=gnu11 benchmarks/moe_packed_rows.c -o /tmp/packed -lm
 *     OMP_NUM_THREADS=2 /tmp/packed 24     # routed experts on, of 56 (plus 8 shared): 24 = half the neurons */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <time.h>
#include "../src/ponder/kernels/sparse_ffn.c"

static void packed_ffn(const float *x, const float *packed, const int64_t *idx, int64_t k, int64_t D, int act,
                       float *y, float *scratch) {
#pragma omp parallel
    {
        const int nt = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t hi = k * (t + 1) / nt;
        float *acc = scratch + t * D;
        for (int64_t d = 0; d < D; d++) acc[d] = 0.f;
        for (int64_t j = k * t / nt; j < hi; j++) {
            if (j + PREFETCH_AHEAD < hi) {
                const int64_t ahead = idx[j + PREFETCH_AHEAD];
                if (ahead != idx[j + PREFETCH_AHEAD - 1] + 1) for (int l = 0; l < 12; l++) __builtin_prefetch((const char *)(packed + ahead * 3 * D) + 64 * l);
            }
            const float *base = packed + idx[j] * 3 * D;
            const float a = activate(dot(base, x, D), act) * dot(base + D, x, D);
            const float *row = base + 2 * D;
#pragma omp simd
            for (int64_t d = 0; d < D; d++) acc[d] += a * row[d];
        }
        sum_accumulators(scratch, D, t, nt, y);
    }
}
static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + 1e-9 * ts.tv_nsec; }
int cmp(const void *a, const void *b) { double x = *(double *)a, y = *(double *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
    const int L = 30; const int64_t D = 576, F = 1536, S = 24, E = 64, shared = 8;
    int routed_on = argc > 1 ? atoi(argv[1]) : 24;
    float *g[30], *u[30], *dn[30], *pk[30];
    for (int l = 0; l < L; l++) {
        g[l] = aligned_alloc(64, F * D * 4); u[l] = aligned_alloc(64, F * D * 4); dn[l] = aligned_alloc(64, F * D * 4);
        pk[l] = aligned_alloc(64, 3 * F * D * 4);
        for (int64_t i = 0; i < F * D; i++) { g[l][i] = (rand() / (float)RAND_MAX - .5f) * .1f; u[l][i] = g[l][i] * .5f; dn[l][i] = g[l][i] * .3f; }
        for (int64_t i = 0; i < F; i++) { memcpy(pk[l] + i * 3 * D, g[l] + i * D, D * 4); memcpy(pk[l] + i * 3 * D + D, u[l] + i * D, D * 4); memcpy(pk[l] + i * 3 * D + 2 * D, dn[l] + i * D, D * 4); }
    }
    int64_t *idx[30]; int64_t k = shared * S + routed_on * S;
    for (int l = 0; l < L; l++) {
        idx[l] = malloc(F * 8); char on[64] = {0}; int c = 0;
        while (c < routed_on) { int e = rand() % (E - shared); if (!on[e]) { on[e] = 1; c++; } }
        int64_t n = 0; for (int64_t i = 0; i < shared * S; i++) idx[l][n++] = i;
        for (int e = 0; e < E - shared; e++) if (on[e]) for (int i = 0; i < S; i++) idx[l][n++] = (shared + e) * S + i;
    }
    float x[576], y[576], y2[576], scratch[4 * 576], h[1536]; for (int i = 0; i < D; i++) x[i] = rand() / (float)RAND_MAX - .5f;
    char *flush = malloc(64 << 20);
    enum { R = 41 }; double ta[R], tb[R], tc[R];
    for (int r = 0; r < R; r++) {
        memset(flush, r, 64 << 20);
        double t0 = now(); for (int l = 0; l < L; l++) rows_ffn(x, g[l], u[l], dn[l], NULL, NULL, idx[l], k, D, 0, y, scratch); ta[r] = now() - t0;
        memset(flush, r + 1, 64 << 20);
        t0 = now(); for (int l = 0; l < L; l++) packed_ffn(x, pk[l], idx[l], k, D, 0, y2, scratch); tb[r] = now() - t0;
        memset(flush, r + 2, 64 << 20);
        t0 = now(); for (int l = 0; l < L; l++) glu_dense(x, g[l], u[l], dn[l], NULL, NULL, D, F, 0, y, h); tc[r] = now() - t0;
    }
    rows_ffn(x, g[0], u[0], dn[0], NULL, NULL, idx[0], k, D, 0, y, scratch); packed_ffn(x, pk[0], idx[0], k, D, 0, y2, scratch);
    double md = 0; for (int i = 0; i < D; i++) { double e = y[i] - y2[i]; md = e > md ? e : (-e > md ? -e : md); }
    qsort(ta, R, 8, cmp); qsort(tb, R, 8, cmp); qsort(tc, R, 8, cmp);
    printf("frac %.3f  dense %.2f ms  rows %.2f ms  packed %.2f ms  rows/packed %.3f  dense/packed %.2f dense/rows %.2f maxdiff %.2g\n", (double)k / F, tc[R/2]*1e3, ta[R/2]*1e3, tb[R/2]*1e3, ta[R/2]/tb[R/2], tc[R/2]/tb[R/2], tc[R/2]/ta[R/2], md);
}
