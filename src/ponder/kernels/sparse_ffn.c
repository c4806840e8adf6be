/* Gather-GEMV kernels for sparse FFNs on CPU: only the weight rows of active neurons are read.
 *
 * Weights are neuron-major: row i of gate/up is neuron i's input weights, row i of down_t is its output weights,
 * each D floats, contiguous. Active neurons come as a list of indices. fp32 only. Built once per machine by
 * ponder.kernels.native with `cc -O3 -march=native -fopenmp`; PyTorch's eager path is the specification.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
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

/* out[j] = W[idx[j]] . x  for j < k  (gate or up pre-activations of the active neurons) */
void rows_dot(const float *x, const float *W, const int64_t *idx, int64_t k, int64_t D, float *out) {
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < k; j++) out[j] = dot(W + idx[j] * D, x, D);
}

/* y[D] = sum_j coef[j] * W[idx[j]]  (down projection of the active neurons); scratch holds threads x D floats */
void rows_axpy(const float *coef, const float *W, const int64_t *idx, int64_t k, int64_t D, float *y,
               float *scratch) {
    int threads = omp_get_max_threads();
    memset(scratch, 0, sizeof(float) * threads * D);
#pragma omp parallel
    {
        float *acc = scratch + omp_get_thread_num() * D;
#pragma omp for schedule(static)
        for (int64_t j = 0; j < k; j++) {
            const float *row = W + idx[j] * D;
            const float c = coef[j];
#pragma omp simd
            for (int64_t d = 0; d < D; d++) acc[d] += c * row[d];
        }
    }
    for (int64_t d = 0; d < D; d++) {
        float s = 0.f;
        for (int t = 0; t < threads; t++) s += scratch[t * D + d];
        y[d] = s;
    }
}

/* Whole GLU FFN over active neurons: y = sum_j act(g_j) * u_j * down_t[idx[j]], g_j/u_j from gate/up rows.
 * gate == NULL gives the plain FFN y = sum_j act(u_j) * down_t[idx[j]]. Biases may be NULL. */
void glu_rows(const float *x, const float *gate, const float *up, const float *down_t, const float *gate_bias,
              const float *up_bias, const int64_t *idx, int64_t k, int64_t D, int act, float *y, float *scratch) {
    int threads = omp_get_max_threads();
    memset(scratch, 0, sizeof(float) * threads * D);
#pragma omp parallel
    {
        float *acc = scratch + omp_get_thread_num() * D;
#pragma omp for schedule(static)
        for (int64_t j = 0; j < k; j++) {
            const int64_t i = idx[j];
            float u = dot(up + i * D, x, D) + (up_bias ? up_bias[i] : 0.f);
            float a;
            if (gate) {
                float g = dot(gate + i * D, x, D) + (gate_bias ? gate_bias[i] : 0.f);
                a = activate(g, act) * u;
            } else {
                a = activate(u, act);
            }
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
