/* Gather-GEMV kernels for sparse FFNs on CPU: only the weight rows of active neurons are read.
 *
 * Weights are neuron-major: row i of gate/up is neuron i's input weights, row i of down_t is its output weights,
 * each D floats, contiguous. Active neurons come as a list of indices. fp32 only. Built once per machine by
 * ponder.kernels.native with `cc -O3 -march=native -fopenmp`; PyTorch's eager path is the specification.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <omp.h>
/* The dot product of gathered rows (rows_ffn, cats_ffn): `omp simd`. The FMA version below made moe's kernel 5 %
 * slower in process on SmolLM2 at b = 0.5 while it made the dense kernel 9 % faster
 * (benchmarks/results/moe-kernel-ab-dot-s20.txt). Probably because gathered rows wait on memory, and a faster
 * loop only reaches the lines the prefetcher has not fetched yet sooner. */
static inline float dot(const float *restrict a, const float *restrict b, int64_t n) {
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; j++) s += a[j] * b[j];
    return s;
}

#if defined(__AVX512F__)
#include <immintrin.h>

static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* The dot product of streamed rows (the dense kernel, GEMVs, the router): two 16-wide FMA accumulators in registers.
 * `dot`'s loop multiplies and adds separately (-std=c11 turns contraction off). */
static inline float dot_stream(const float *restrict a, const float *restrict b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j), _mm512_loadu_ps(b + j), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j + 16), _mm512_loadu_ps(b + j + 16), s1);
    }
    for (; j < n; j += 16) {
        const __mmask16 m = tail_mask(n - j);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + j), _mm512_maskz_loadu_ps(m, b + j), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
#else
#define dot_stream dot
#endif

static inline float activate(float v, int act) {
    switch (act) {
    case 0: return v / (1.f + expf(-v));                                             /* silu */
    case 1: return 0.5f * v * (1.f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v))); /* gelu (tanh) */
    case 2: return 0.5f * v * (1.f + erff(v * 0.70710678118f));                      /* gelu (erf) */
    default: return v > 0.f ? v : 0.f;                                               /* relu */
    }
}

/* A neuron's output coefficient from its dot products with x: act(gate·x + bg) * (up·x + bu), or act(up·x + bu). */
static inline float neuron(float up_dot, float gate_dot, int64_t i, const float *gate, const float *gate_bias,
                           const float *up_bias, int act) {
    const float u = up_dot + (up_bias ? up_bias[i] : 0.f);
    return gate ? activate(gate_dot + (gate_bias ? gate_bias[i] : 0.f), act) * u : activate(u, act);
}

/* Software prefetch for gathered rows: the hardware prefetcher follows a row once it has seen a few of its lines,
 * but cannot guess which row comes next. Measured on SmolLM2's FFNs (teal at half the inputs): 1.37x -> 1.55x of
 * the dense kernel (benchmarks/results/teal-kernel-s8.txt); prefetching whole rows instead of their first lines
 * was slower. */
enum { PREFETCH_AHEAD = 8, PREFETCH_LINES = 4 };

static inline void prefetch_start(const float *row) {
    for (int l = 0; l < PREFETCH_LINES; l++) __builtin_prefetch((const char *)row + 64 * l);
}

/* The closing step of a one-region kernel, called by every thread of the region: once all per-thread accumulators
 * (threads x D floats) are done, thread t sums its share of the D outputs over all of them. */
static inline void sum_accumulators(const float *acc, int64_t D, int t, int nt, float *y) {
#pragma omp barrier
    for (int64_t d = D * t / nt; d < D * (t + 1) / nt; d++) {
        float s = 0.f;
        for (int w = 0; w < nt; w++) s += acc[w * D + d];
        y[d] = s;
    }
}

static inline int64_t sum_counts(const int64_t *counts, int nt) {
    int64_t total = 0;
    for (int w = 0; w < nt; w++) total += counts[w];
    return total;
}

/* Whole GLU FFN over active neurons: y = sum_j act(g_j) * u_j * down_t[idx[j]], g_j/u_j from gate/up rows.
 * gate == NULL gives the plain FFN y = sum_j act(u_j) * down_t[idx[j]]. Biases may be NULL.
 * Each neuron is finished (gate, up, down rows) before the next, into per-thread accumulators: measured faster than
 * a coefficient pass followed by a column-split sum of down rows (benchmarks/experiments/ffn_kernels.py, blocks of 32 at half
 * the neurons: 1.61-1.76x over dense against 1.53-1.56x). One neuron a pass, one row at a time: moe's rows come in
 * runs of adjacent neurons, which the hardware prefetcher follows as one stream. Against two neurons a pass (four
 * dot products in one loop), same-process kernel A/Bs at b = 0.5 on an untuned moe conversion: +5% and +5%
 * (benchmarks/results/moe-kernel-ab-s14*.txt), +12-20% in three earlier runs that day; never slower. One neuron from
 * each of four stretches of idx (teal's down-phase trick) was 10-20% slower. Thread t takes the t-th contiguous part
 * of idx, prefetching the rows PREFETCH_AHEAD neurons ahead (a jump between experts or scattered groups is where the
 * hardware prefetcher loses the stream), and sums its share of the outputs: moe's kernel A/B 1.01-1.04x faster at
 * b = 0.5, never slower in three runs (benchmarks/results/moe-kernel-ab-s16.txt). scratch: threads x D floats. */
static void rows_ffn(const float *x, const float *gate, const float *up, const float *down_t, const float *gate_bias,
                     const float *up_bias, const int64_t *idx, int64_t k, int64_t D, int act, float *y,
                     float *scratch) {
#pragma omp parallel
    {
        const int nt = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t hi = k * (t + 1) / nt;
        float *acc = scratch + t * D;
        for (int64_t d = 0; d < D; d++) acc[d] = 0.f;
        for (int64_t j = k * t / nt; j < hi; j++) {
            if (j + PREFETCH_AHEAD < hi) {
                const int64_t ahead = idx[j + PREFETCH_AHEAD];
                if (gate) prefetch_start(gate + ahead * D);
                prefetch_start(up + ahead * D);
                prefetch_start(down_t + ahead * D);
            }
            const int64_t i = idx[j];
            const float a = neuron(dot(up + i * D, x, D), gate ? dot(gate + i * D, x, D) : 0.f, i, gate, gate_bias,
                                   up_bias, act);
            const float *row = down_t + i * D;
#pragma omp simd
            for (int64_t d = 0; d < D; d++) acc[d] += a * row[d];
        }
        sum_accumulators(scratch, D, t, nt, y);
    }
}

void glu_rows(const float *x, const float *gate, const float *up, const float *down_t, const float *gate_bias,
              const float *up_bias, const int64_t *idx, int64_t k, int64_t D, int act, float *y, float *scratch) {
    rows_ffn(x, gate, up, down_t, gate_bias, up_bias, idx, k, D, act, y, scratch);
}

/* The dense FFN of one token, every neuron: h = act(gate x) * (up x) (or act(up x)), then y = down h with `down`
 * in its stored [D, F] layout, so dense models need no transposed copy. The same loops and threads as the sparse
 * kernels, so a dense-vs-sparse ratio measures skipping, not the executor. h: F floats of scratch. */
void glu_dense(const float *x, const float *gate, const float *up, const float *down, const float *gate_bias,
               const float *up_bias, int64_t D, int64_t F, int act, float *y, float *h) {
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < F; i++) {
            float u = dot_stream(up + i * D, x, D) + (up_bias ? up_bias[i] : 0.f);
            h[i] = gate ? activate(dot_stream(gate + i * D, x, D) + (gate_bias ? gate_bias[i] : 0.f), act) * u
                        : activate(u, act);
        }
#pragma omp for schedule(static)
        for (int64_t d = 0; d < D; d++) y[d] = dot_stream(down + d * F, h, F);
    }
}

/* Routing policies over E scores (ponder.methods.moe.routing is the specification): 0 top-k, 1 top-p, 2 dynamic-k,
 * 3 threshold. Writes the chosen experts to `chosen` in ascending order and returns how many. */
static int64_t route(const float *s, int64_t E, int policy, float knob, int64_t *chosen, float *work) {
    int64_t n = 0;
    if (policy == 0) { /* top-k: k rounds of argmax */
        int64_t k = (int64_t)nearbyintf(knob < 0.f ? 0.f : (knob > (float)E ? (float)E : knob));
        char *taken = (char *)work;
        for (int64_t e = 0; e < E; e++) taken[e] = 0;
        for (int64_t j = 0; j < k; j++) {
            int64_t best = -1;
            for (int64_t e = 0; e < E; e++)
                if (!taken[e] && (best < 0 || s[e] > s[best])) best = e;
            taken[best] = 1;
        }
        for (int64_t e = 0; e < E; e++)
            if (taken[e]) chosen[n++] = e;
    } else if (policy == 1) { /* top-p over the positive scores' shares */
        if (knob <= 0.f) return 0;
        float total = 0.f, before = 0.f;
        for (int64_t e = 0; e < E; e++) total += s[e] > 0.f ? s[e] : 0.f;
        if (total < 1e-12f) total = 1e-12f;
        char *taken = (char *)work;
        for (int64_t e = 0; e < E; e++) taken[e] = 0;
        for (int64_t j = 0; j < E && before < knob; j++) {
            int64_t best = -1;
            for (int64_t e = 0; e < E; e++)
                if (!taken[e] && (best < 0 || s[e] > s[best])) best = e;
            taken[best] = 1;
            before += (s[best] > 0.f ? s[best] : 0.f) / total;
        }
        for (int64_t e = 0; e < E; e++)
            if (taken[e]) chosen[n++] = e;
    } else if (policy == 2) { /* dynamic-k: at least (1 - knob) of the best score */
        if (knob <= 0.f) return 0;
        float best = s[0];
        for (int64_t e = 1; e < E; e++) best = s[e] > best ? s[e] : best;
        for (int64_t e = 0; e < E; e++)
            if (s[e] >= (1.f - knob) * best) chosen[n++] = e;
    } else { /* threshold: one cut for every token */
        for (int64_t e = 0; e < E; e++)
            if (s[e] > -knob) chosen[n++] = e;
    }
    return n;
}

/* One token through a converted MoE FFN (ponder.methods.moe), in one call:
 * router scores = W2 silu(W1 x + b1) + b2 over E routed experts; the policy picks experts; the shared rows
 * [0, shared) and every chosen expert's rows [shared + e*S, shared + (e+1)*S) of the permuted weights run;
 * with a pseudo expert (comp_kind 1 = copy, 2 = constant; chooser != NULL picks among `pseudo` options by the
 * smallest predicted error), the skipped experts' stand-in is added: total - sum over chosen experts of `comp`.
 * work: 2*E + R + pseudo floats; idx: shared + E*S int64; out_counts: [0] experts chosen, [1] pseudo option;
 * chosen: E int64 (the experts). */
void moe_ffn(const float *x, int64_t D, const float *w1, const float *b1, int64_t R, const float *w2,
             const float *b2, int64_t E, int policy, float knob, const float *chooser, const float *chooser_bias,
             int64_t pseudo, const int *pseudo_kinds, const float *comp_copy, const float *comp_const,
             const float *gate, const float *up, const float *down_t, const float *gate_bias, const float *up_bias,
             int64_t shared, int64_t S, int act, float *y, float *scratch, float *work, int64_t *idx,
             int64_t *chosen, int64_t *out_counts) {
    float *hidden = work, *scores = work + R, *predicted = scores + E, *route_work = predicted + pseudo;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; r++) { /* the router's first layer: both threads (0.3 MB a layer at R = 128) */
        float v = dot_stream(w1 + r * D, x, D) + b1[r];
        hidden[r] = v / (1.f + expf(-v));
    }
    for (int64_t e = 0; e < E; e++) scores[e] = dot_stream(w2 + e * R, hidden, R) + b2[e];
    int64_t n = route(scores, E, policy, knob, chosen, route_work);
    int64_t option = 0;
    if (chooser) {
        for (int64_t p = 0; p < pseudo; p++) {
            predicted[p] = dot_stream(chooser + p * D, x, D) + chooser_bias[p];
            if (predicted[p] < predicted[option]) option = p;
        }
    }
    int kind = pseudo ? pseudo_kinds[option] : 0;
    int64_t k = 0;
    for (int64_t i = 0; i < shared; i++) idx[k++] = i;
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < S; i++) idx[k++] = shared + chosen[j] * S + i;
    rows_ffn(x, gate, up, down_t, gate_bias, up_bias, idx, k, D, act, y, scratch);
    if (kind) { /* comp rows: E per-expert vectors, then their total (row E); scratch is free again */
        const float *comp = kind == 1 ? comp_copy : comp_const;
        float *v = scratch;
        for (int64_t d = 0; d < D; d++) v[d] = comp[E * D + d];
        /* Row by row, each a contiguous vectorised stream; it was d outer, a serial gather of n rows per output: moe's
         * kernel at b = 0.5 went 6.25 -> 5.46 ms a token (benchmarks/results/moe-kernel-ab-comp-s19.txt). */
        for (int64_t j = 0; j < n; j++) {
            const float *row = comp + chosen[j] * D;
#pragma omp simd
            for (int64_t d = 0; d < D; d++) v[d] -= row[d];
        }
        for (int64_t d = 0; d < D; d++) y[d] += kind == 1 ? v[d] * x[d] : v[d];
    }
    out_counts[0] = n;
    out_counts[1] = option;
}

/* TEAL in one call. x [D]; in_major [D, P*Fp] (see TEAL_BLOCK); down_t [F, D]. Inputs with |x_j| <= tau_in and
 * intermediates with |h_i| <= tau_mid are skipped, their weights unread.
 * Layout: each row of in_major holds Fp / TEAL_BLOCK blocks, each TEAL_BLOCK gate weights then (GLU) TEAL_BLOCK up
 * weights of the same neurons, Fp = F rounded up to TEAL_BLOCK (zero padding), so a thread's range of neurons is
 * one contiguous stretch of a row.
 * One parallel region: thread t accumulates the whole rows of its share of the kept inputs; then it owns a range of
 * neurons: sums their pre-activations over the threads' shares, activates them, keeps its own large ones and adds
 * their down rows into its own accumulator; one reduction.
 * work: D + Fp + threads*(D + P*Fp) floats; index: D + Fp + threads int64. counts[0] = kept inputs, [1] = neurons. */
#define TEAL_BLOCK 16
/* Rows a pass in both phases: the accumulators are loaded and stored once for TEAL_ROWS rows. Measured against four
 * (benchmarks/experiments/teal_kernel_ab.py, same process): 1.78x -> 1.87x of the dense kernel at b = 0.5, 3.38x -> 3.51x at
 * 0.25; 12 or 16 were no better. */
#define TEAL_ROWS 8
void teal_ffn(const float *x, const float *in_major, const float *down_t, int64_t D, int64_t F, int glu,
              float tau_in, float tau_mid, int act, float *y, float *work, int64_t *index, int64_t *counts) {
    const int64_t B = TEAL_BLOCK, P = glu ? 2 : 1, blocks = (F + B - 1) / B, Fp = blocks * B, W = P * Fp;
    float *coef = work, *h = coef + D, *acc = h + Fp; /* acc: threads x D, then each thread's W pre-activations */
    int64_t *in_idx = index, *mid_idx = index + D, *kept = index + D + Fp;
    int64_t m = 0;
#pragma omp parallel
    {
        const int threads = omp_get_num_threads(), t = omp_get_thread_num();
        float *parts = acc + threads * D, *part = parts + t * W; /* part: over this thread's share of the inputs */
#pragma omp single
        for (int64_t j = 0; j < D; j++)
            if (fabsf(x[j]) > tau_in) { in_idx[m] = j; coef[m] = x[j]; m++; }
        for (int64_t i = 0; i < W; i++) part[i] = 0.f;
        /* Thread t takes the t-th part of the kept inputs and reads their whole rows: adjacent kept inputs are
         * adjacent rows, one stream through memory, where splitting each row between the threads left gaps. On an
         * AMD EPYC: 1.29-1.31x -> 1.40-1.43x of the dense kernel at b = 0.5, 2.25x -> 2.35x at 0.25 (fast state;
         * +2.5 % / 0 in the slow one), the gate/up phase 3.73 -> 3.23 ms a token
         * (benchmarks/results/teal-kernel-rowsplit-s16.txt). */
        const int64_t jlo = m * t / threads, jhi = m * (t + 1) / threads;
        int64_t j = jlo;
        for (; j + TEAL_ROWS <= jhi; j += TEAL_ROWS) { /* TEAL_ROWS input rows per pass */
            const float *r[TEAL_ROWS];
            float c[TEAL_ROWS];
            for (int q = 0; q < TEAL_ROWS; q++) r[q] = in_major + in_idx[j + q] * W, c[q] = coef[j + q];
            if (j + TEAL_ROWS + PREFETCH_AHEAD <= jhi)
                for (int q = PREFETCH_AHEAD; q < PREFETCH_AHEAD + TEAL_ROWS; q++)
                    prefetch_start(in_major + in_idx[j + q] * W);
#pragma omp simd
            for (int64_t e = 0; e < W; e++) {
                float v = part[e];
                for (int q = 0; q < TEAL_ROWS; q++) v += c[q] * r[q][e];
                part[e] = v;
            }
        }
        for (; j < jhi; j++) {
            const float *r = in_major + in_idx[j] * W;
            const float c = coef[j];
#pragma omp simd
            for (int64_t e = 0; e < W; e++) part[e] += c * r[e];
        }
#pragma omp barrier
        /* Thread t owns a range of neurons: their pre-activations summed over the threads' parts. */
        const int64_t lo = blocks * t / threads * B, n = blocks * (t + 1) / threads * B - lo;
        float *gu = part + P * lo; /* as in a row: per block of B neurons, B gate (or up) then (GLU) B up values */
        for (int64_t e = 0; e < P * n; e++) {
            float v = 0.f;
            for (int w = 0; w < threads; w++) v += parts[w * W + P * lo + e];
            gu[e] = v; /* the summed value overwrites this thread's own part, which nobody reads past the barrier */
        }
        const int64_t real = lo >= F ? 0 : (lo + n > F ? F - lo : n); /* padding neurons never run */
        float *hv = h + lo;
        int64_t *ix = mid_idx + lo, k = 0;
        for (int64_t i = 0; i < real; i++) {
            const float *block = gu + P * (i - i % B);
            const float a = glu ? activate(block[i % B], act) * block[B + i % B] : activate(block[i % B], act);
            if (fabsf(a) > tau_mid) { ix[k] = lo + i; hv[k] = a; k++; }
        }
        kept[t] = k;
        float *mine = acc + t * D;
        for (int64_t d = 0; d < D; d++) mine[d] = 0.f;
        /* The kept list cut into TEAL_ROWS stretches, one row of each a pass: TEAL_ROWS streams through memory at
         * once instead of one. Kept rows are sorted and often adjacent, so consecutive ones mostly share one stream.
         * Measured against consecutive rows (benchmarks/experiments/teal_kernel_ab.py): 1.84x -> 1.96x of the dense
         * kernel at b = 0.5, 3.68x -> 3.76x at 0.25 (benchmarks/results/teal-kernel-s13.txt). */
        const int64_t L = k / TEAL_ROWS;
        for (int64_t p = 0; p < L; p++) {
            const float *r[TEAL_ROWS];
            float c[TEAL_ROWS];
            for (int z = 0; z < TEAL_ROWS; z++) r[z] = down_t + ix[z * L + p] * D, c[z] = hv[z * L + p];
            if (p + PREFETCH_AHEAD < L)
                for (int z = 0; z < TEAL_ROWS; z++) prefetch_start(down_t + ix[z * L + p + PREFETCH_AHEAD] * D);
#pragma omp simd
            for (int64_t d = 0; d < D; d++) {
                float sd = mine[d];
                for (int z = 0; z < TEAL_ROWS; z++) sd += c[z] * r[z][d];
                mine[d] = sd;
            }
        }
        for (int64_t q = L * TEAL_ROWS; q < k; q++) {
            const float *r = down_t + ix[q] * D;
            const float c = hv[q];
#pragma omp simd
            for (int64_t d = 0; d < D; d++) mine[d] += c * r[d];
        }
        sum_accumulators(acc, D, t, threads, y);
#pragma omp single nowait
        {
            counts[0] = m;
            counts[1] = sum_counts(kept, threads);
        }
    }
}

/* CATS in one call: every gate row runs; up and down rows run only where |act(gate)| > tau. One parallel region:
 * thread t owns the t-th part of the neurons; it runs their gate rows (one sequential stream) and lists its active
 * ones, then runs the listed up rows and adds the down rows into its own accumulator, prefetching the rows
 * PREFETCH_AHEAD neurons ahead (active neurons are scattered, so the hardware prefetcher cannot guess the next row);
 * one reduction. work: F + threads x D floats; index: F + threads int64. counts[0] = active neurons. */
void cats_ffn(const float *x, const float *gate, const float *up, const float *down_t, const float *gate_bias,
              const float *up_bias, int64_t D, int64_t F, float tau, int act, float *y, float *work, int64_t *index,
              int64_t *counts) {
    int64_t *active = index + F;
#pragma omp parallel
    {
        const int nt = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t lo = F * t / nt, hi = F * (t + 1) / nt;
        float *a = work + lo, *acc = work + F + t * D;
        int64_t *ix = index + lo, k = 0;
        for (int64_t i = lo; i < hi; i++) {
            const float v = activate(dot(gate + i * D, x, D) + (gate_bias ? gate_bias[i] : 0.f), act);
            if (fabsf(v) > tau) { ix[k] = i; a[k] = v; k++; }
        }
        for (int64_t d = 0; d < D; d++) acc[d] = 0.f;
        for (int64_t j = 0; j < k; j++) {
            if (j + PREFETCH_AHEAD < k) {
                prefetch_start(up + ix[j + PREFETCH_AHEAD] * D);
                prefetch_start(down_t + ix[j + PREFETCH_AHEAD] * D);
            }
            const int64_t i = ix[j];
            const float c = a[j] * (dot(up + i * D, x, D) + (up_bias ? up_bias[i] : 0.f));
            const float *row = down_t + i * D;
#pragma omp simd
            for (int64_t d = 0; d < D; d++) acc[d] += c * row[d];
        }
        active[t] = k;
        sum_accumulators(work + F, D, t, nt, y);
#pragma omp single nowait
        counts[0] = sum_counts(active, nt);
    }
}

/* ---- the rest of a Llama-style decode step, one token (ponder.inference.decode.RopeRunner is the specification) */

static void rms_norm(const float *x, const float *w, int64_t n, float eps, float *y) {
    float s = 0.f;
    for (int64_t i = 0; i < n; i++) s += x[i] * x[i];
    const float r = 1.f / sqrtf(s / (float)n + eps);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * r * w[i];
}

/* y[rows] = W x (+ b): W [rows, cols] row-major, threads split the rows. */
void gemv(const float *W, const float *x, const float *b, int64_t rows, int64_t cols, float *y) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) y[r] = dot_stream(W + r * cols, x, cols) + (b ? b[r] : 0.f);
}

/* ---- Greedy next token from the output head, reading an int8 copy of it (ponder.inference.head) ----------------
 * The token is argmax_r (W x + b)_r as `gemv` computes it in fp32, but the full pass reads Wq, W quantised to int8
 * with one scale per row (a quarter of W's bytes). approx_r = scale_r (Wq_r . x) + b_r differs from gemv's value by
 * at most bound_r |x| + 2^-20 (|approx_r| + |b_r|) (bound_r: the quantisation error's norm plus both sums' rounding,
 * precomputed with margin). Every row whose interval can reach the best lower end is recomputed exactly with
 * `gemv`'s own dot, and the best of those, the first on ties as torch.argmax, is returned: the same token as
 * argmax(gemv(W, x, b)). Returns -1 where x is not finite (the caller then runs the full head).
 * approx: [rows] scratch; recomputed: where the number of rows recomputed is written. */
static inline float dot_i8(const int8_t *restrict a, const float *restrict b, int64_t n) {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        const __m512 a0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(a + j))));
        const __m512 a1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(a + j + 16))));
        s0 = _mm512_fmadd_ps(a0, _mm512_loadu_ps(b + j), s0);
        s1 = _mm512_fmadd_ps(a1, _mm512_loadu_ps(b + j + 16), s1);
    }
    for (; j < n; j += 16) {
        const __mmask16 m = tail_mask(n - j);
        const __m512 a0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, a + j)));
        s0 = _mm512_fmadd_ps(a0, _mm512_maskz_loadu_ps(m, b + j), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
#else
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; j++) s += (float)a[j] * b[j];
    return s;
#endif
}

int64_t greedy_head(const int8_t *Wq, const float *scale, const float *bound, const float *W, const float *b,
                    int64_t rows, int64_t cols, const float *x, float *approx, int64_t *recomputed) {
    double norm2 = 0.0;
    for (int64_t i = 0; i < cols; i++) norm2 += (double)x[i] * x[i];
    if (!isfinite(norm2)) return -1;
    const float norm = (float)(sqrt(norm2) * (1.0 + 1e-6)), slack = 0x1p-20f;
    float floor_ = -INFINITY; /* the best lower end of any row's interval */
#pragma omp parallel for schedule(static) reduction(max : floor_)
    for (int64_t r = 0; r < rows; r++) {
        const float bias = b ? b[r] : 0.f, a = scale[r] * dot_i8(Wq + r * cols, x, cols) + bias;
        approx[r] = a;
        const float low = a - (bound[r] * norm + slack * (fabsf(a) + fabsf(bias)));
        floor_ = low > floor_ ? low : floor_;
    }
    if (!isfinite(floor_)) return -1;
    int64_t best = -1, count = 0;
    float best_value = -INFINITY;
    for (int64_t r = 0; r < rows; r++) { /* rows in order: the first of equal values wins, as in torch.argmax */
        const float bias = b ? b[r] : 0.f, a = approx[r];
        if (a + (bound[r] * norm + slack * (fabsf(a) + fabsf(bias))) < floor_) continue;
        const float exact = dot_stream(W + r * cols, x, cols) + bias; /* as gemv computes row r */
        count++;
        if (best < 0 || exact > best_value) best = r, best_value = exact;
    }
    *recomputed = count;
    return best;
}

/* RoPE as RopeRunner._rotate: v*cos + roll(v, E/2)*sin_signed (sin_signed: first half negated). */
static void rotate(float *v, const float *cos, const float *sin_signed, int64_t E, float *tmp) {
    const int64_t half = E / 2;
    for (int64_t i = 0; i < E; i++) tmp[i] = v[i] * cos[i] + v[(i + half) % E] * sin_signed[i];
    for (int64_t i = 0; i < E; i++) v[i] = tmp[i];
}

/* One decoder layer's attention block for one token at position `pos`, in place on the residual x [D]:
 *   h = rms_norm(x); q,k,v = Wqkv h (+b); optional per-head rms_norm of q and k (Qwen3); RoPE on q and k;
 *   k, v written to the caches [KV, max_len, E] at pos; softmax(q k^T * scale) v over positions 0..pos with
 *   H / KV query heads per key/value head; x += Wo attn (+bo); then ffn_in = rms_norm(x) with post_w.
 * work: D + (H + 2 KV) E + H E + H (pos + 1) + threads * E floats. */
void attention_decode(float *x, int64_t D, const float *input_w, const float *post_w, float eps, const float *wqkv,
                      const float *bqkv, int64_t H, int64_t KV, int64_t E, const float *q_norm, const float *k_norm,
                      float qk_eps, const float *cos, const float *sin_signed, float *kcache, float *vcache,
                      int64_t max_len, int64_t pos, float scale, const float *wo, const float *bo, float *ffn_in,
                      float *work) {
    float *h = work, *qkv = h + D, *attn = qkv + (H + 2 * KV) * E, *scores = attn + H * E;
    float *tmp = scores + H * (pos + 1);
    rms_norm(x, input_w, D, eps, h);
    gemv(wqkv, h, bqkv, (H + 2 * KV) * E, D, qkv);
    float *q = qkv, *k = qkv + H * E, *v = k + KV * E;
    for (int64_t head = 0; head < H + KV; head++) { /* query heads, then key heads */
        float *vec = head < H ? q + head * E : k + (head - H) * E;
        const float *norm = head < H ? q_norm : k_norm;
        if (norm) rms_norm(vec, norm, E, qk_eps, vec);
        rotate(vec, cos, sin_signed, E, tmp);
    }
    for (int64_t g = 0; g < KV; g++) {
        for (int64_t i = 0; i < E; i++) {
            kcache[(g * max_len + pos) * E + i] = k[g * E + i];
            vcache[(g * max_len + pos) * E + i] = v[g * E + i];
        }
    }
    const int64_t group = H / KV, n = pos + 1;
#pragma omp parallel for schedule(static)
    for (int64_t head = 0; head < H; head++) {
        const float *qh = q + head * E, *K = kcache + (head / group) * max_len * E;
        const float *V = vcache + (head / group) * max_len * E;
        float *s = scores + head * n, *o = attn + head * E, best = -INFINITY, total = 0.f;
        for (int64_t t = 0; t < n; t++) {
            s[t] = dot_stream(qh, K + t * E, E) * scale;
            best = s[t] > best ? s[t] : best;
        }
        for (int64_t t = 0; t < n; t++) total += (s[t] = expf(s[t] - best));
        for (int64_t i = 0; i < E; i++) o[i] = 0.f;
        for (int64_t t = 0; t < n; t++) {
            const float p = s[t] / total, *vt = V + t * E;
#pragma omp simd
            for (int64_t i = 0; i < E; i++) o[i] += p * vt[i];
        }
    }
    gemv(wo, attn, bo, D, H * E, h); /* h reused for the o_proj output */
    for (int64_t i = 0; i < D; i++) x[i] += h[i];
    rms_norm(x, post_w, D, eps, ffn_in);
}

/* Layer skip for one token at position `pos` (ponder.methods.skip and RopeRunner's batched path are the
 * specification). The gate scores the residual x [D]: w2 . silu(W1 (x / rms(x)) + b1) + b2. Above `threshold` the
 * token runs the layer: returns 0, nothing written. Otherwise it skips it: the layer's K/V are computed from
 * rms_norm(x) (wkv: the K and V rows of the fused QKV; per-head k_norm and RoPE on k) and written to the caches
 * [KV, max_len, E] at pos, the stand-in update is added, x += scale * x + shift, and it returns 1.
 * work: max(R, D + 2 KV E + E) floats. */
int64_t layer_skip_decode(float *x, int64_t D, const float *w1, const float *b1, int64_t R, const float *w2, float b2,
                          float threshold, const float *input_w, float eps, const float *wkv, const float *bkv,
                          int64_t KV, int64_t E, const float *k_norm, float qk_eps, const float *cos,
                          const float *sin_signed, float *kcache, float *vcache, int64_t max_len, int64_t pos,
                          const float *scale, const float *shift, float *work) {
    float s = 0.f;
    for (int64_t i = 0; i < D; i++) s += x[i] * x[i];
    const float r = 1.f / sqrtf(s / (float)D + 1e-6f);
    gemv(w1, x, 0, R, D, work); /* no bias: it is added after scaling by r */
    float score = b2;
    for (int64_t j = 0; j < R; j++) score += w2[j] * activate(work[j] * r + b1[j], 0);
    if (score > threshold) return 0;
    float *h = work, *kv = h + D, *tmp = kv + 2 * KV * E;
    rms_norm(x, input_w, D, eps, h);
    gemv(wkv, h, bkv, 2 * KV * E, D, kv);
    for (int64_t g = 0; g < KV; g++) {
        float *k = kv + g * E;
        const float *v = kv + (KV + g) * E;
        if (k_norm) rms_norm(k, k_norm, E, qk_eps, k);
        rotate(k, cos, sin_signed, E, tmp);
        for (int64_t i = 0; i < E; i++) {
            kcache[(g * max_len + pos) * E + i] = k[i];
            vcache[(g * max_len + pos) * E + i] = v[i];
        }
    }
    for (int64_t i = 0; i < D; i++) x[i] += scale[i] * x[i] + shift[i];
    return 1;
}

/* ---- Grouped MoE for batches (ponder.methods.moe: prefill and batched decode) ---------------------------------
 * Every expert (the shared ones first, each over all N tokens; then the routed ones, each over the tokens that
 * chose it, given as CSR: tokens[offsets[e] .. offsets[e+1])) runs on blocks of up to GROUP_TOKENS of its tokens:
 * the block's pre-activations against the expert's panel, its activations, then its down rows, accumulated in
 * registers and added into the thread's own output buffer. 24-neuron experts make GEMMs too narrow for BLAS here
 * (benchmarks/experiments/moe_prefill.py); this kernel keeps the FMA units busy at that width.
 *
 * panels: per expert [D][Wp]: column c < S holds gate neuron c's input weights (GLU; else up's), column S + c up
 * neuron c's, zero-padded to Wp, a multiple of 16, at most GROUP_WIDTH; panel_bias: [experts][Wp] (zeros for no
 * bias); down_t: [F, D] permuted, expert e's rows e*S .. e*S+S-1. y: [N, D] (written). */
enum { GROUP_TOKENS = 8, GROUP_ITEM = 64, GROUP_WIDTH = 192 };

#if defined(__AVX512F__)
/* h[t][c] = bias[c] + sum_k x_t[k] W[k][c] for T tokens and NV vectors of 16 columns (W's rows Wp apart). */
static inline __attribute__((always_inline)) void panel_tile(const float *const *xr, const float *W, int64_t D,
                                                             int64_t Wp, const float *bias, float *h, int T, int NV) {
    __m512 acc[GROUP_TOKENS][3];
    for (int j = 0; j < NV; j++) {
        const __m512 b = _mm512_loadu_ps(bias + 16 * j);
        for (int t = 0; t < T; t++) acc[t][j] = b;
    }
    for (int64_t k = 0; k < D; k++) {
        __m512 w[3];
        for (int j = 0; j < NV; j++) w[j] = _mm512_loadu_ps(W + k * Wp + 16 * j);
        for (int t = 0; t < T; t++) {
            const __m512 xv = _mm512_set1_ps(xr[t][k]);
            for (int j = 0; j < NV; j++) acc[t][j] = _mm512_fmadd_ps(xv, w[j], acc[t][j]);
        }
    }
    for (int t = 0; t < T; t++)
        for (int j = 0; j < NV; j++) _mm512_storeu_ps(h + t * GROUP_WIDTH + 16 * j, acc[t][j]);
}

/* out_t[c0 + c] += sum_i a[t][i] down[i][c0 + c] over S rows, T tokens and NV vectors (the last one masked). */
static inline __attribute__((always_inline)) void down_tile(const float *a, int64_t S, const float *down, int64_t D,
                                                            int64_t c0, float *const *out, int T, int NV) {
    __m512 acc[GROUP_TOKENS][3];
    __mmask16 m[3];
    for (int j = 0; j < NV; j++) m[j] = tail_mask(D - c0 - 16 * j);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < NV; j++) acc[t][j] = _mm512_setzero_ps();
    for (int64_t i = 0; i < S; i++) {
        __m512 d[3];
        for (int j = 0; j < NV; j++) d[j] = _mm512_maskz_loadu_ps(m[j], down + i * D + c0 + 16 * j);
        for (int t = 0; t < T; t++) {
            const __m512 av = _mm512_set1_ps(a[t * GROUP_WIDTH + i]);
            for (int j = 0; j < NV; j++) acc[t][j] = _mm512_fmadd_ps(av, d[j], acc[t][j]);
        }
    }
    for (int t = 0; t < T; t++)
        for (int j = 0; j < NV; j++) {
            float *o = out[t] + c0 + 16 * j;
            _mm512_mask_storeu_ps(o, m[j], _mm512_add_ps(_mm512_maskz_loadu_ps(m[j], o), acc[t][j]));
        }
}

/* e^v to about 1 ulp: 2^n e^r with n = round(v log2 e), r = v - n ln 2 in two steps, a degree-7 Taylor
 * polynomial for e^r (|r| <= ln 2 / 2: truncation below 6e-9), scaled by 2^n exactly. */
static inline __m512 exp_vec(__m512 v) {
    v = _mm512_max_ps(_mm512_min_ps(v, _mm512_set1_ps(88.f)), _mm512_set1_ps(-104.f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504089f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), v);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.f / 5040.f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 720.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    return _mm512_scalef_ps(p, n);
}

/* activate() on 16 lanes for silu, gelu (tanh) and relu; gelu (erf) stays scalar (activations). */
static inline __m512 activate_vec(__m512 v, int act) {
    const __m512 one = _mm512_set1_ps(1.f);
    if (act == 0) return _mm512_div_ps(v, _mm512_add_ps(one, exp_vec(_mm512_sub_ps(_mm512_setzero_ps(), v))));
    if (act == 1) { /* 0.5 v (1 + tanh z), tanh z = 1 - 2 / (1 + e^{2z}) */
        const __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
        const __m512 inner = _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), v3, v);
        const __m512 z = _mm512_mul_ps(_mm512_set1_ps(0.7978845608f), inner);
        const __m512 e = exp_vec(_mm512_add_ps(z, z));
        const __m512 tanh = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.f), _mm512_add_ps(one, e)));
        return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(one, tanh));
    }
    return _mm512_max_ps(v, _mm512_setzero_ps());
}

/* A block's activations in place: a_i = act(g_i) u_i (GLU) or act(u_i), rows GROUP_WIDTH apart. */
static void activations(float *h, int64_t n, int64_t S, int glu, int act) {
    for (int64_t t = 0; t < n; t++) {
        float *row = h + t * GROUP_WIDTH;
        if (act == 2) { /* erf: scalar */
            for (int64_t i = 0; i < S; i++) row[i] = glu ? activate(row[i], act) * row[S + i] : activate(row[i], act);
            continue;
        }
        for (int64_t i = 0; i < S; i += 16) {
            const __mmask16 m = tail_mask(S - i);
            __m512 a = activate_vec(_mm512_maskz_loadu_ps(m, row + i), act);
            if (glu) a = _mm512_mul_ps(a, _mm512_maskz_loadu_ps(m, row + S + i));
            _mm512_mask_storeu_ps(row + i, m, a);
        }
    }
}

/* Tiles specialised for each block size T and vector count NV, so the accumulators stay in registers. */
#define BY_NV(F, T, ...) \
    (NV == 3 ? F(__VA_ARGS__, T, 3) : NV == 2 ? F(__VA_ARGS__, T, 2) : F(__VA_ARGS__, T, 1))
#define BY_T(F, ...) \
    switch (T) { \
    case 1: BY_NV(F, 1, __VA_ARGS__); break; case 2: BY_NV(F, 2, __VA_ARGS__); break; \
    case 3: BY_NV(F, 3, __VA_ARGS__); break; case 4: BY_NV(F, 4, __VA_ARGS__); break; \
    case 5: BY_NV(F, 5, __VA_ARGS__); break; case 6: BY_NV(F, 6, __VA_ARGS__); break; \
    case 7: BY_NV(F, 7, __VA_ARGS__); break; default: BY_NV(F, 8, __VA_ARGS__); }

/* The pre-activations h [n][GROUP_WIDTH] of n tokens (rows xr) against one expert's panel W [D][Wp] + bias. */
static void preactivations(const float *const *xr, int64_t n, const float *W, int64_t D, int64_t Wp,
                           const float *bias, float *h) {
    for (int64_t c0 = 0; c0 < Wp; c0 += 48) {
        const int NV = (Wp - c0) / 16 < 3 ? (int)((Wp - c0) / 16) : 3;
        for (int64_t b = 0; b < n; b += GROUP_TOKENS) {
            const int T = (int)(n - b < GROUP_TOKENS ? n - b : GROUP_TOKENS);
            BY_T(panel_tile, xr + b, W + c0, D, Wp, bias + c0, h + b * GROUP_WIDTH + c0)
        }
    }
}

/* out rows += a [n][GROUP_WIDTH] (first S columns) times the expert's down rows [S][D], 48 columns at a time. */
static void add_down(const float *a, int64_t n, int64_t S, const float *down, int64_t D, float *const *out) {
    for (int64_t c0 = 0; c0 < D; c0 += 48) {
        const int NV = (D - c0 + 15) / 16 < 3 ? (int)((D - c0 + 15) / 16) : 3;
        for (int64_t b = 0; b < n; b += GROUP_TOKENS) {
            const int T = (int)(n - b < GROUP_TOKENS ? n - b : GROUP_TOKENS);
            BY_T(down_tile, a + b * GROUP_WIDTH, S, down, D, c0, out + b)
        }
    }
}
#else /* portable: the same sums, plain loops */
static void preactivations(const float *const *xr, int64_t n, const float *W, int64_t D, int64_t Wp,
                           const float *bias, float *h) {
    for (int64_t t = 0; t < n; t++) {
        float *row = h + t * GROUP_WIDTH;
        for (int64_t c = 0; c < Wp; c++) row[c] = bias[c];
        for (int64_t k = 0; k < D; k++)
            for (int64_t c = 0; c < Wp; c++) row[c] += xr[t][k] * W[k * Wp + c];
    }
}

static void activations(float *h, int64_t n, int64_t S, int glu, int act) {
    for (int64_t t = 0; t < n; t++) {
        float *row = h + t * GROUP_WIDTH;
        for (int64_t i = 0; i < S; i++) row[i] = glu ? activate(row[i], act) * row[S + i] : activate(row[i], act);
    }
}

static void add_down(const float *a, int64_t n, int64_t S, const float *down, int64_t D, float *const *out) {
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < S; i++)
            for (int64_t d = 0; d < D; d++) out[t][d] += a[t * GROUP_WIDTH + i] * down[i * D + d];
}
#endif

/* First position in sorted list[0:n) whose value is >= v. */
static int64_t lower_bound(const int64_t *list, int64_t n, int64_t v) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        const int64_t mid = (lo + hi) / 2;
        if (list[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

void moe_grouped(const float *x, int64_t N, int64_t D, const float *panels, const float *panel_bias,
                 const float *down_t, int64_t S, int64_t Wp, int glu, int act, int64_t shared, int64_t routed,
                 const int64_t *offsets, const int64_t *tokens, float *y) {
#pragma omp parallel
    { /* each thread owns a range of tokens and runs every expert over its tokens in expert order: every output
       * row gets its terms in the same order whatever the thread count, and no reduction is needed */
        const int64_t threads = omp_get_num_threads(), me = omp_get_thread_num();
        const int64_t lo = N * me / threads, hi = N * (me + 1) / threads;
        for (int64_t j = lo * D; j < hi * D; j++) y[j] = 0.f;
        float h[GROUP_ITEM * GROUP_WIDTH];
        const float *xr[GROUP_ITEM];
        float *out[GROUP_ITEM];
        for (int64_t e = 0; e < shared + routed; e++) {
            int64_t first = lo, last = hi; /* shared experts: positions are the tokens themselves */
            const int64_t *list = NULL;
            if (e >= shared) {
                const int64_t begin = offsets[e - shared], count = offsets[e - shared + 1] - begin;
                list = tokens + begin;
                first = lower_bound(list, count, lo), last = lower_bound(list, count, hi);
            }
            for (int64_t start = first; start < last; start += GROUP_ITEM) {
                const int64_t n = last - start < GROUP_ITEM ? last - start : GROUP_ITEM;
                for (int64_t t = 0; t < n; t++) {
                    const int64_t token = list ? list[start + t] : start + t;
                    xr[t] = x + token * D, out[t] = y + token * D;
                }
                preactivations(xr, n, panels + e * D * Wp, D, Wp, panel_bias + e * Wp, h);
                activations(h, n, S, glu, act);
                add_down(h, n, S, down_t + e * S * D, D, out);
            }
        }
    }
}
