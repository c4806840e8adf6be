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

/* ---- down: y += Σ_j h_j · down_t[ids_j] over a tile of blocks, accumulators in registers ---- */

#define PQ_TILE 6 /* blocks of D a tile holds: 12 zmm accumulators */
#define PQ_AHEAD 6 /* neurons ahead whose tile is prefetched: the rows are scattered, the prefetcher cannot see them */

/* One block b of a neuron-major row, dequantized: (lo, hi) = 32 values without the offset, *d and *shift its
   scale and per-weight offset (w = d·q + shift). */
#if defined(__AVX512F__)
static inline __attribute__((always_inline)) void load_block(const int format, const uint8_t *row, int64_t b,
                                                             __m512 *lo, __m512 *hi, float *d, float *shift) {
    const __m128i m4 = _mm_set1_epi8(0x0f);
    if (format == PQ_Q4_1 || format == PQ_Q4_0) {
        const uint8_t *qs;
        if (format == PQ_Q4_1) {
            const block_q4_1 *k = (const block_q4_1 *)row + b;
            qs = k->qs, *d = fp16(k->d), *shift = fp16(k->m);
        } else {
            const block_q4_0 *k = (const block_q4_0 *)row + b;
            qs = k->qs, *d = fp16(k->d), *shift = -8.0f * *d;
        }
        const __m128i raw = _mm_loadu_si128((const __m128i *)qs);
        *lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(raw, m4)));
        *hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(raw, 4), m4)));
    } else if (format == PQ_Q8_0) {
        const block_q8_0 *k = (const block_q8_0 *)row + b;
        *lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)k->qs)));
        *hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(k->qs + 16))));
        *d = fp16(k->d), *shift = 0.0f;
    } else {
        *lo = _mm512_loadu_ps((const float *)row + b * QK), *hi = _mm512_loadu_ps((const float *)row + b * QK + 16);
        *d = 1.0f, *shift = 0.0f;
    }
}

static inline __attribute__((always_inline)) void down_tile(const int format, const int nb, const pq_mat *down_t,
                                                            const int32_t *ids, const float *h, int64_t n,
                                                            int64_t b, float *y) {
    const size_t stride = row_bytes(format, down_t->cols), offset = (size_t)b * row_bytes(format, QK);
    const uint8_t *base = (const uint8_t *)down_t->data;
    __m512 lo[PQ_TILE], hi[PQ_TILE];
    float shifts[PQ_TILE];
    for (int k = 0; k < nb; k++) lo[k] = hi[k] = _mm512_setzero_ps(), shifts[k] = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        if (j + PQ_AHEAD < n) {
            const char *ahead = (const char *)base + (size_t)ids[j + PQ_AHEAD] * stride + offset;
            for (size_t line = 0; line < row_bytes(format, (int64_t)nb * QK); line += 64)
                _mm_prefetch(ahead + line, _MM_HINT_T0);
        }
        const uint8_t *row = base + (size_t)ids[j] * stride;
        const float a = h[j];
        for (int k = 0; k < nb; k++) {
            __m512 wl, wh;
            float d, shift;
            load_block(format, row, b + k, &wl, &wh, &d, &shift);
            const __m512 scale = _mm512_set1_ps(a * d);
            lo[k] = _mm512_fmadd_ps(wl, scale, lo[k]), hi[k] = _mm512_fmadd_ps(wh, scale, hi[k]);
            shifts[k] = fmaf(a, shift, shifts[k]);
        }
    }
    for (int k = 0; k < nb; k++) {
        float *out = y + (b + k) * QK;
        const __m512 shift = _mm512_set1_ps(shifts[k]);
        _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), _mm512_add_ps(lo[k], shift)));
        _mm512_storeu_ps(out + 16, _mm512_add_ps(_mm512_loadu_ps(out + 16), _mm512_add_ps(hi[k], shift)));
    }
}

#define PQ_TILES(format)                                                                                              \
    switch (nb) {                                                                                                     \
    case 1: down_tile(format, 1, down_t, ids, h, n, b, y); break;                                                     \
    case 2: down_tile(format, 2, down_t, ids, h, n, b, y); break;                                                     \
    case 3: down_tile(format, 3, down_t, ids, h, n, b, y); break;                                                     \
    case 4: down_tile(format, 4, down_t, ids, h, n, b, y); break;                                                     \
    case 5: down_tile(format, 5, down_t, ids, h, n, b, y); break;                                                     \
    default: down_tile(format, PQ_TILE, down_t, ids, h, n, b, y);                                                     \
    }
#endif

/* y[D] += Σ_j h[j] · down_t[ids[j]] over the blocks [b0, b1) of D, neurons in the order given. */
static void down_rows(const pq_mat *down_t, const int32_t *ids, const float *h, int64_t n, int64_t b0, int64_t b1,
                      float *y) {
    for (int64_t b = b0; b < b1; b += PQ_TILE) {
        const int64_t nb = b + PQ_TILE <= b1 ? PQ_TILE : b1 - b;
#if defined(__AVX512F__)
        switch (down_t->format) {
        case PQ_Q4_1: PQ_TILES(PQ_Q4_1); break;
        case PQ_Q4_0: PQ_TILES(PQ_Q4_0); break;
        case PQ_Q8_0: PQ_TILES(PQ_Q8_0); break;
        default: PQ_TILES(PQ_F32);
        }
#else
        float w[PQ_TILE * QK];
        const size_t stride = row_bytes(down_t->format, down_t->cols);
        pq_mat tile = {NULL, NULL, 1, nb * QK, down_t->format, 0};
        for (int64_t j = 0; j < n; j++) {
            tile.data = (const uint8_t *)down_t->data + (size_t)ids[j] * stride + b * row_bytes(down_t->format, QK);
            dequantize_row(&tile, 0, w);
            for (int64_t v = 0; v < nb * QK; v++) y[b * QK + v] += h[j] * w[v];
        }
#endif
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
    if (T == 1) {
#pragma omp for schedule(static)
        for (int64_t c = 0; c < (F + 3) / 4; c++) { /* the gate of every neuron, four rows a call */
            const int64_t r = c * 4, n = F - r < 4 ? F - r : 4;
            float g[4];
            rows_dot(&L->gate, r, n, xq_row(w, 0, 0), w->xn, g);
            for (int64_t i = 0; i < n; i++) w->ffn[r + i] = silu(g[i]);
        }
    } else {
#pragma omp for schedule(static)
        for (int64_t r = 0; r < F; r++) { /* the gate of every neuron, every token */
            float *g = row_scratch(w, m);
            row_all(&L->gate, r, w, T, g);
            for (int64_t t = 0; t < T; t++) w->ffn[t * F + r] = silu(g[t]);
        }
    }
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; t++)
        w->counts[t] = select_neurons(L, w->ffn + t * F, F, w->active + t * F, w->magnitudes + thread_id() * F);
    const size_t stride = row_bytes(L->up.format, L->up.cols);
    for (int64_t t = 0; t < T; t++) { /* up rows of the active neurons: h = a * up */
        const int32_t *ids = w->active + t * F;
        float *h = w->ffn + t * F;
        const block_act *xq = xq_row(w, t, D / QK);
#pragma omp for schedule(static)
        for (int64_t j = 0; j < w->counts[t]; j++) {
#if defined(__AVX512F__)
            if (j + 2 < w->counts[t]) { /* the next rows are scattered: fetch one ahead of the prefetcher */
                const char *ahead = (const char *)L->up.data + (size_t)ids[j + 2] * stride;
                for (size_t line = 0; line < stride; line += 64) _mm_prefetch(ahead + line, _MM_HINT_T0);
            }
#endif
            h[j] *= row_dot(&L->up, ids[j], xq, w->xn + t * D);
        }
    }
    const int64_t nb = D / QK, threads = thread_count(), me = thread_id();
    (void)stride;
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
