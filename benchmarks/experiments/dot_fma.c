/* The kernels' dot and axpy (omp simd, no FMA under -std=c11) against their two-accumulator AVX-512 FMA dot
 * (`dot_stream`, which the dense kernel and the GEMVs use) and an FMA axpy, in the dense kernel and
 * the rows kernel, 30 layers of SmolLM2 shapes, random weights, same process.
 *
 *     gcc -O3 -march=native -fopenmp -std=c11 benchmarks/dot_fma.c -o /tmp/dot_fma -lm
 *     OMP_NUM_THREADS=2 /tmp/dot_fma 56; OMP_NUM_THREADS=2 /tmp/dot_fma 24    # routed experts on, of 56 (+8 shared) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <time.h>
#include <immintrin.h>
#include "../src/ponder/kernels/sparse_ffn.c"
static inline void axpy2(float *restrict acc, float a, const float *restrict row, int64_t D) {
    const __m512 va = _mm512_set1_ps(a); int64_t d = 0;
    for (; d + 16 <= D; d += 16) _mm512_storeu_ps(acc + d, _mm512_fmadd_ps(va, _mm512_loadu_ps(row + d), _mm512_loadu_ps(acc + d)));
    for (; d < D; d++) acc[d] += a * row[d];
}
static void rows2(const float *x, const float *gate, const float *up, const float *down_t, const int64_t *idx, int64_t k, int64_t D, int act, float *y, float *scratch) {
#pragma omp parallel
    {
        const int nt = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t hi = k * (t + 1) / nt;
        float *acc = scratch + t * D;
        for (int64_t d = 0; d < D; d++) acc[d] = 0.f;
        for (int64_t j = k * t / nt; j < hi; j++) {
            if (j + PREFETCH_AHEAD < hi) { const int64_t ahead = idx[j + PREFETCH_AHEAD]; prefetch_start(gate + ahead * D); prefetch_start(up + ahead * D); prefetch_start(down_t + ahead * D); }
            const int64_t i = idx[j];
            const float a = activate(dot_stream(gate + i * D, x, D), act) * dot_stream(up + i * D, x, D);
            axpy2(acc, a, down_t + i * D, D);
        }
        sum_accumulators(scratch, D, t, nt, y);
    }
}
static void dense2(const float *x, const float *gate, const float *up, const float *down, int64_t D, int64_t F, int act, float *y, float *h) {
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < F; i++) h[i] = activate(dot_stream(gate + i * D, x, D), act) * dot_stream(up + i * D, x, D);
#pragma omp for schedule(static)
        for (int64_t d = 0; d < D; d++) y[d] = dot_stream(down + d * F, h, F);
    }
}
static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + 1e-9 * ts.tv_nsec; }
int cmp(const void *a, const void *b) { double x = *(double *)a, y = *(double *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
    const int L = 30; const int64_t D = 576, F = 1536, S = 24, E = 64, shared = 8;
    int routed_on = argc > 1 ? atoi(argv[1]) : 24; int warm = argc > 2;
    float *g[30], *u[30], *dn[30], *dd[30];
    for (int l = 0; l < L; l++) {
        g[l] = aligned_alloc(64, F * D * 4); u[l] = aligned_alloc(64, F * D * 4); dn[l] = aligned_alloc(64, F * D * 4); dd[l] = aligned_alloc(64, F * D * 4);
        for (int64_t i = 0; i < F * D; i++) { g[l][i] = (rand() / (float)RAND_MAX - .5f) * .1f; u[l][i] = g[l][i] * .5f; dn[l][i] = g[l][i] * .3f; dd[l][i] = dn[l][i]; }
    }
    int64_t *idx[30]; int64_t k = shared * S + routed_on * S;
    for (int l = 0; l < L; l++) {
        idx[l] = malloc(F * 8); char on[64] = {0}; int c = 0;
        while (c < routed_on) { int e = rand() % (E - shared); if (!on[e]) { on[e] = 1; c++; } }
        int64_t n = 0; for (int64_t i = 0; i < shared * S; i++) idx[l][n++] = i;
        for (int e = 0; e < E - shared; e++) if (on[e]) for (int i = 0; i < S; i++) idx[l][n++] = (shared + e) * S + i;
    }
    float x[576], y[576], y2[576], scratch[4 * 576], h[1536]; for (int i = 0; i < D; i++) x[i] = rand() / (float)RAND_MAX - .5f;
    enum { R = 41 }; double t[4][R];
    for (int r = 0; r < R; r++) {
        double t0 = now(); for (int l = 0; l < L; l++) glu_dense(x, g[l], u[l], dd[l], NULL, NULL, D, F, 0, y, h); t[0][r] = now() - t0;
        t0 = now(); for (int l = 0; l < L; l++) dense2(x, g[l], u[l], dd[l], D, F, 0, y2, h); t[1][r] = now() - t0;
        t0 = now(); for (int l = 0; l < L; l++) rows_ffn(x, g[l], u[l], dn[l], NULL, NULL, idx[l], k, D, 0, y, scratch); t[2][r] = now() - t0;
        t0 = now(); for (int l = 0; l < L; l++) rows2(x, g[l], u[l], dn[l], idx[l], k, D, 0, y2, scratch); t[3][r] = now() - t0;
    }
    double md = 0; for (int i = 0; i < D; i++) { double e = y[i] - y2[i]; md = e > md ? e : (-e > md ? -e : md); }
    double ratio[2][R]; for (int r = 0; r < R; r++) { ratio[0][r] = t[0][r] / t[1][r]; ratio[1][r] = t[2][r] / t[3][r]; }
    for (int c = 0; c < 4; c++) qsort(t[c], R, 8, cmp); qsort(ratio[0], R, 8, cmp); qsort(ratio[1], R, 8, cmp);
    printf("frac %.3f  dense %.2f dense2 %.2f (x%.3f)  rows %.2f rows2 %.2f (x%.3f)  dense/rows %.2f dense2/rows2 %.2f  maxdiff %.2g\n", (double)k / F,
           t[0][R/2]*1e3, t[1][R/2]*1e3, ratio[0][R/2], t[2][R/2]*1e3, t[3][R/2]*1e3, ratio[1][R/2], t[0][R/2]/t[2][R/2], t[1][R/2]/t[3][R/2], md);
}
