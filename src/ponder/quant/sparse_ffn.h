/* The runtime's adaptive FFN kinds, included by runtime.c (one translation unit, so they inline its block dots).
 *
 * Layouts, so that a skipped neuron skips whole blocks:
 *   gate, up  [F, D] one row of blocks per neuron, as the file stores them: an inactive neuron's up row is not read.
 *   down_t    [F, D] the down projection neuron-major, each neuron's column requantized along D in the same format:
 *             an active neuron adds a_i * row_i into fp32 accumulators, an inactive one skips its row of blocks.
 *
 * CATS: the gate runs densely (int8 or fp32 inputs, as every matvec), a = silu(gate); neuron i of token t is active
 * where |a_i| > threshold, or (top_k > 0) where it is among the top_k largest |a_i| (exactly top_k of them, ties
 * broken by the lower index). Active neurons run their up row, h_i = a_i * up_i, and add h_i * down_t[i] to the
 * residual. The threads split the active neurons for up, and D (contiguous runs of blocks) for down, so the down
 * sums need no reduction and every output value sums its neurons in ascending order whatever the thread count.
 */

/* ---- acc[32·n] += a * row of n blocks (row starts at block b0 of a neuron-major down row) ---- */

static inline void axpy_block(int32_t format, const uint8_t *row, int64_t b, float a, float *acc) {
#if defined(__AVX512F__)
    __m512 lo, hi, scale, offset = _mm512_setzero_ps();
    const __m128i m4 = _mm_set1_epi8(0x0f);
    if (format == PQ_Q4_1 || format == PQ_Q4_0) {
        const uint8_t *qs;
        float d, shift;
        if (format == PQ_Q4_1) {
            const block_q4_1 *k = (const block_q4_1 *)row + b;
            qs = k->qs, d = fp16(k->d), shift = fp16(k->m);
        } else {
            const block_q4_0 *k = (const block_q4_0 *)row + b;
            qs = k->qs, d = fp16(k->d), shift = -8.0f * d;
        }
        const __m128i raw = _mm_loadu_si128((const __m128i *)qs);
        lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(raw, m4)));
        hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(raw, 4), m4)));
        scale = _mm512_set1_ps(a * d), offset = _mm512_set1_ps(a * shift);
    } else if (format == PQ_Q8_0) {
        const block_q8_0 *k = (const block_q8_0 *)row + b;
        lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)k->qs)));
        hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(k->qs + 16))));
        scale = _mm512_set1_ps(a * fp16(k->d));
    } else {
        lo = _mm512_loadu_ps((const float *)row + b * QK), hi = _mm512_loadu_ps((const float *)row + b * QK + 16);
        scale = _mm512_set1_ps(a);
    }
    _mm512_storeu_ps(acc, _mm512_fmadd_ps(lo, scale, _mm512_add_ps(_mm512_loadu_ps(acc), offset)));
    _mm512_storeu_ps(acc + 16, _mm512_fmadd_ps(hi, scale, _mm512_add_ps(_mm512_loadu_ps(acc + 16), offset)));
#else
    float w[QK];
    const pq_mat one = {row + (size_t)b * row_bytes(format, QK), NULL, 1, QK, format, 0};
    dequantize_row(&one, 0, w);
    for (int j = 0; j < QK; j++) acc[j] += a * w[j];
#endif
}

/* y[D] += Σ_j h[j] · down_t[ids[j]] over the blocks [b0, b1) of D, neurons in the order given. */
static void down_rows(const pq_mat *down_t, const int32_t *ids, const float *h, int64_t n, int64_t b0, int64_t b1,
                      float *y) {
    enum { TILE = 4 }; /* blocks whose 128 accumulators stay in L1 lines the tile owns */
    const size_t stride = row_bytes(down_t->format, down_t->cols);
    for (int64_t b = b0; b < b1; b += TILE) {
        const int64_t nb = b + TILE <= b1 ? TILE : b1 - b;
        float acc[TILE * QK] __attribute__((aligned(64)));
        memset(acc, 0, sizeof(acc));
        for (int64_t j = 0; j < n; j++) {
            const uint8_t *row = (const uint8_t *)down_t->data + (size_t)ids[j] * stride;
            for (int64_t k = 0; k < nb; k++) axpy_block(down_t->format, row, b + k, h[j], acc + k * QK);
        }
        for (int64_t v = 0; v < nb * QK; v++) y[b * QK + v] += acc[v];
    }
}

/* ---- neuron selection ---- */

static inline float silu(float g) { return g / (1.0f + expf(-g)); }

/* The k-th largest of v[0..n) (1 <= k <= n), reordering v: quickselect. */
static float kth_largest(float *v, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        const float pivot = v[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) {
                const float t = v[i];
                v[i++] = v[j], v[j--] = t;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else break;
    }
    return v[want];
}

/* Active neurons of one token from its activations a[F]: ids ascending into ids, activations compacted into a.
   Returns their count. */
static int32_t select_neurons(const pq_layer *L, float *a, int64_t F, int32_t *ids, float *scratch) {
    int32_t n = 0;
    if (L->top_k > 0 && L->top_k < F) {
        for (int64_t i = 0; i < F; i++) scratch[i] = fabsf(a[i]);
        const float kth = kth_largest(scratch, F, L->top_k);
        int64_t above = 0;
        for (int64_t i = 0; i < F; i++) above += fabsf(a[i]) > kth;
        int64_t ties = L->top_k - above; /* neurons equal to the k-th that still fit, lowest index first */
        for (int64_t i = 0; i < F; i++) {
            const float v = fabsf(a[i]);
            if (v > kth || (v == kth && ties-- > 0)) ids[n] = (int32_t)i, a[n++] = a[i];
        }
        return n;
    }
    const float tau = L->top_k >= F ? -1.0f : L->threshold;
    for (int64_t i = 0; i < F; i++)
        if (fabsf(a[i]) > tau) ids[n] = (int32_t)i, a[n++] = a[i];
    return n;
}

static inline int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static inline int thread_count(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* ---- the CATS kind: inputs prepared by ffn_layer; adds the FFN output to w->x. Call inside the region. ---- */

static void cats_ffn(const pq_model *m, const pq_layer *L, const pq_work *w, int64_t T) {
    const int64_t F = m->ffn, D = m->hidden;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < F; r++) { /* the gate of every neuron, every token */
        float *g = row_scratch(w, m);
        row_all(&L->gate, r, w, T, g);
        for (int64_t t = 0; t < T; t++) w->ffn[t * F + r] = silu(g[t]);
    }
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; t++)
        w->counts[t] = select_neurons(L, w->ffn + t * F, F, w->active + t * F, w->magnitudes + thread_id() * F);
    for (int64_t t = 0; t < T; t++) { /* up rows of the active neurons: h = a * up */
        const int32_t *ids = w->active + t * F;
        float *h = w->ffn + t * F;
        const block_act *xq = xq_row(w, t, D / QK);
#pragma omp for schedule(static)
        for (int64_t j = 0; j < w->counts[t]; j++) h[j] *= row_dot(&L->up, ids[j], xq, w->xn + t * D);
    }
    const int64_t nb = D / QK, threads = thread_count(), me = thread_id();
    const int64_t b0 = nb * me / threads, b1 = nb * (me + 1) / threads; /* this thread's blocks of D */
    for (int64_t t = 0; t < T; t++)
        down_rows(&L->down_t, w->active + t * F, w->ffn + t * F, w->counts[t], b0, b1, w->x + t * D);
#pragma omp barrier
#pragma omp single
    if (L->spent)
        for (int64_t t = 0; t < T; t++) *L->spent += w->counts[t];
}

static void ffn_layer(const pq_model *m, const pq_layer *L, const pq_work *w, int64_t T);

/* ---- standalone entry point (tests): one layer's FFN on x [T, D] in place, through the forward's code ---- */

int32_t pq_ffn(const pq_model *m, const pq_layer *L, float *x, int64_t T, int32_t *active, int32_t *counts) {
    /* x += FFN(rmsnorm(x)) for T <= max_tokens rows, m->work carved for m; the active ids [T, F] and counts [T]
       of a sparse kind copied out when given. Returns 0, or -1 when T does not fit. */
    if (T < 1 || T > m->max_tokens) return -1;
    pq_work w;
    carve(m, &w, (uint8_t *)m->work);
    w.quantized = !m->fp32_act;
    memcpy(w.x, x, (size_t)(T * m->hidden) * sizeof(float));
#pragma omp parallel num_threads(max_threads(m))
    {
        pq_work k = w;
        k.grouped = PQ_GROUPS && k.quantized && T > 1;
        ffn_layer(m, L, &k, T);
    }
    memcpy(x, w.x, (size_t)(T * m->hidden) * sizeof(float));
    if (L->ffn_kind != PQ_FFN_DENSE && active && counts) {
        memcpy(active, w.active, (size_t)(T * m->ffn) * sizeof(int32_t));
        memcpy(counts, w.counts, (size_t)T * sizeof(int32_t));
    }
    return 0;
}
