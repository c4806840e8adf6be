/* Gather-GEMV kernels for sparse FFNs on CPU: only the weight rows of active neurons are read.
 *
 * Weights are neuron-major: row i of gate/up is neuron i's input weights, row i of down_t is its output weights,
 * each D floats, contiguous. Active neurons come as a list of indices. fp32 only. Built once per machine by
 * ponder.kernels.native with `cc -O3 -march=native -fopenmp`; PyTorch's eager path is the specification.
 */
#include <math.h>
#include <stdint.h>
#include <omp.h>

static inline float dot(const float *restrict a, const float *restrict b, int64_t n) {
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; j++) s += a[j] * b[j];
    return s;
}

static inline float activate(float v, int act) {
    switch (act) {
    case 0: return v / (1.f + expf(-v));                                             /* silu */
    case 1: return 0.5f * v * (1.f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v))); /* gelu (tanh) */
    case 2: return 0.5f * v * (1.f + erff(v * 0.70710678118f));                      /* gelu (erf) */
    default: return v > 0.f ? v : 0.f;                                               /* relu */
    }
}

/* y[0:n) = sum over rows j in idx of coef[j] * W[idx[j]][0:n); rows have length `stride`. Threads split the columns,
 * so each reads its own contiguous part of every active row and no reduction is needed. */
static void axpy_columns(const float *coef, const float *W, const int64_t *idx, int64_t k, int64_t n,
                         int64_t stride, float *y) {
#pragma omp parallel
    {
        int threads = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t lo = n * t / threads, hi = n * (t + 1) / threads;
        for (int64_t d = lo; d < hi; d++) y[d] = 0.f;
        for (int64_t j = 0; j < k; j++) {
            const float *row = W + idx[j] * stride;
            const float c = coef[j];
#pragma omp simd
            for (int64_t d = lo; d < hi; d++) y[d] += c * row[d];
        }
    }
}

/* Whole GLU FFN over active neurons: y = sum_j act(g_j) * u_j * down_t[idx[j]], g_j/u_j from gate/up rows.
 * gate == NULL gives the plain FFN y = sum_j act(u_j) * down_t[idx[j]]. Biases may be NULL.
 * Each neuron is finished (gate, up, down rows) before the next, into per-thread accumulators: measured faster
 * than a coefficient pass followed by axpy_columns (benchmarks/ffn_kernels.py, blocks of 32 at half the neurons:
 * 1.61-1.76x over dense against 1.53-1.56x).
 * scratch: threads x D floats. */
void glu_rows(const float *x, const float *gate, const float *up, const float *down_t, const float *gate_bias,
              const float *up_bias, const int64_t *idx, int64_t k, int64_t D, int act, float *y, float *scratch) {
    int threads = omp_get_max_threads();
#pragma omp parallel
    {
        float *acc = scratch + omp_get_thread_num() * D;
        for (int64_t d = 0; d < D; d++) acc[d] = 0.f;
#pragma omp for schedule(static)
        for (int64_t j = 0; j < k; j++) {
            const int64_t i = idx[j];
            float u = dot(up + i * D, x, D) + (up_bias ? up_bias[i] : 0.f);
            float a = gate ? activate(dot(gate + i * D, x, D) + (gate_bias ? gate_bias[i] : 0.f), act) * u
                           : activate(u, act);
            const float *row = down_t + i * D;
#pragma omp simd
            for (int64_t d = 0; d < D; d++) acc[d] += a * row[d];
        }
    }
    for (int64_t d = 0; d < D; d++) {
        float s = 0.f;
        for (int t = 0; t < threads; t++) s += scratch[t * D + d];
        y[d] = s;
    }
}

/* TEAL in one call. x [D]; in_major [D, P*F] (gate columns then up columns, P = 2 for GLU, 1 otherwise);
 * down_t [F, D]. Inputs with |x_j| <= tau_in and intermediates with |h_i| <= tau_mid are skipped, weights unread.
 * work: 2*P*F + D floats + (D + F) int64 (as floats: caller sizes it). counts[0] = kept inputs, [1] = kept neurons. */
void teal_ffn(const float *x, const float *in_major, const float *down_t, int64_t D, int64_t F, int glu,
              float tau_in, float tau_mid, int act, float *y, float *work, int64_t *index, int64_t *counts) {
    const int64_t P = glu ? 2 : 1;
    float *pre = work, *coef = work + P * F, *h = coef + (D > F ? D : F);
    int64_t m = 0;
    for (int64_t j = 0; j < D; j++)
        if (fabsf(x[j]) > tau_in) { index[m] = j; coef[m] = x[j]; m++; }
    axpy_columns(coef, in_major, index, m, P * F, P * F, pre);
    int64_t k = 0;
    for (int64_t i = 0; i < F; i++) {
        float v = glu ? activate(pre[i], act) * pre[F + i] : activate(pre[i], act);
        if (fabsf(v) > tau_mid) { index[k] = i; h[k] = v; k++; }
    }
    axpy_columns(h, down_t, index, k, D, D, y);
    counts[0] = m;
    counts[1] = k;
}

/* CATS in one call: every gate row runs; up and down rows run only where |act(gate)| > tau.
 * work: 3*F floats; index: F int64. counts[0] = active neurons. */
void cats_ffn(const float *x, const float *gate, const float *up, const float *down_t, const float *gate_bias,
              const float *up_bias, int64_t D, int64_t F, float tau, int act, float *y, float *work, int64_t *index,
              int64_t *counts) {
    float *h = work, *coef = work + F, *on = work + 2 * F;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < F; i++) {
        float a = activate(dot(gate + i * D, x, D) + (gate_bias ? gate_bias[i] : 0.f), act);
        on[i] = fabsf(a) > tau ? 1.f : 0.f;
        h[i] = on[i] != 0.f ? a * (dot(up + i * D, x, D) + (up_bias ? up_bias[i] : 0.f)) : 0.f;
    }
    int64_t k = 0;
    for (int64_t i = 0; i < F; i++)
        if (on[i] != 0.f) { index[k] = i; coef[k] = h[i]; k++; }
    axpy_columns(coef, down_t, index, k, D, D, y);
    counts[0] = k;
}
