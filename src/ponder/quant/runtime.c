/* The quantized lean runtime: GGUF block matvecs and a whole-model Llama-style forward in one call.
 *
 * Weights are GGUF's blocks of 32 (ggml-common.h layouts): Q8_0 {fp16 d; int8 q[32]} w = d*q; Q4_0 {fp16 d;
 * uint8 q[16]} w = d*(nibble-8); Q4_1 {fp16 d; fp16 m; uint8 q[16]} w = d*nibble + m; nibble j of a block is the
 * low half of byte j (j < 16) or the high half of byte j-16. F32 rows are plain floats.
 *
 * As llama.cpp does, each matvec's input is quantized once to int8 blocks of 32 (scale amax/127, kept in fp32
 * here, with d*sum(q) for the Q4 offset terms), so a block's dot is one integer dot: vpdpbusd (AVX-512 VNNI) or
 * pmaddubsw (AVX2) over the unsigned nibbles and signed activations, a scalar loop elsewhere. Every path computes
 * the same integer sums; they differ only in float summation order. With AVX-512 VNNI a one-token matvec takes two
 * blocks a step (even and odd blocks in separate accumulators) and four rows a call, and the token groups of T > 1
 * calls keep each row's order, so that a step and a multi-token pass give the same logits bit for bit.
 *
 * pq_forward runs T tokens through every layer (RMSNorm, QKV, RoPE in HF's rotate_half convention, causal
 * attention over the fp32 KV cache, o_proj, SwiGLU FFN) and the head, inside one OpenMP parallel region: the
 * threads split each matrix's rows, and every weight row is read once per call for all T tokens.
 *
 * Shapes: T tokens this call, D hidden, H query heads, K kv heads, E head dim, F FFN width, V vocabulary.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) || defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#define QK 32

enum { PQ_F32 = 0, PQ_Q8_0 = 1, PQ_Q4_0 = 2, PQ_Q4_1 = 3 };

typedef struct { uint16_t d; int8_t qs[QK]; } block_q8_0;
typedef struct { uint16_t d; uint8_t qs[QK / 2]; } block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[QK / 2]; } block_q4_1;
typedef struct { float d, s; int8_t qs[QK]; } block_act; /* an activation block: x ~ d*q, s = d*sum(q) */

_Static_assert(sizeof(block_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(block_q4_0) == 18, "Q4_0 block is 18 bytes");
_Static_assert(sizeof(block_q4_1) == 20, "Q4_1 block is 20 bytes");

typedef struct {
    const void *data;  /* [rows, cols] in `format` */
    const float *bias; /* [rows] or NULL */
    int64_t rows, cols;
    int32_t format, pad_;
} pq_mat;

typedef struct {
    const float *attn_norm, *ffn_norm; /* [D] */
    const float *q_norm, *k_norm;      /* [E] per-head norms (Qwen3) or NULL */
    pq_mat q, k, v, o, gate, up, down;
    float *k_cache, *v_cache; /* [K, max_len, E] */
    /* The FFN kind and its parameters for the current budget (set from Python when the budget changes). */
    int32_t ffn_kind; /* PQ_FFN_DENSE, or PQ_FFN_CATS: up and down rows only for neurons with |act(gate)| > threshold */
    int32_t top_k;    /* > 0: exactly this many neurons a token (the largest |act(gate)|), else the threshold */
    float threshold;
    int32_t pad2_;
    pq_mat down_t;  /* [F, D] the down projection neuron-major (requantized along D), read by sparse kinds */
    int64_t *spent; /* += active neurons over the tokens of each call (sparse kinds), or NULL */
} pq_layer;

enum { PQ_FFN_DENSE = 0, PQ_FFN_CATS = 1 };

typedef struct {
    int64_t layers, hidden, ffn, heads, kv_heads, head_dim, vocab, max_len, max_tokens;
    int32_t threads;
    int32_t fp32_act; /* 1: matvecs read fp32 activations (no int8 rounding), 0: int8 blocks */
    float eps, scaling;
    const float *cos, *sin; /* [max_len, E] HF's tables (each half repeated) */
    const float *final_norm;
    pq_mat embed, head;
    const pq_layer *layer;
    void *work; /* pq_work_bytes(model) bytes, 64-byte aligned */
} pq_model;

/* ---- fp16 ---- */

static inline float fp16(uint16_t h) {
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 113;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
#endif
}

int32_t pq_simd_level(void) {
    /* 3: AVX-512 VNNI, 2: AVX2, 0: scalar: which block-dot path this build compiled. */
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return 3;
#elif defined(__AVX2__)
    return 2;
#else
    return 0;
#endif
}

/* ---- activation quantization ---- */

static void quantize_act(const float *x, int64_t n, block_act *out) {
    for (int64_t b = 0; b < n / QK; b++) {
        const float *v = x + b * QK;
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(v[j]));
        const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK; j++) {
            const int q = (int)nearbyintf(v[j] * id); /* round to nearest even, as cvtps2dq */
            out[b].qs[j] = (int8_t)q;
            sum += q;
        }
        out[b].d = d;
        out[b].s = d * (float)sum;
    }
}

void pq_quantize_act(const float *x, int64_t n, void *out) { quantize_act(x, n, (block_act *)out); }

/* ---- block dots: one weight row [nb blocks] with one activation row ---- */

#if defined(__AVX2__)
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256i udot(__m256i u8, __m256i s8) { /* 8 int32 sums of 4 products u8*s8 */
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u8, s8);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u8, s8), _mm256_set1_epi16(1));
#endif
}

static inline __m256i nibbles(const uint8_t *qs) { /* 16 bytes -> 32 values 0..15 in block order */
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs), m4 = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(raw, m4));
}
#endif

static float dot_q4_1(const block_q4_1 *w, const block_act *x, int64_t nb) {
    float offsets = 0.0f;
#if defined(__AVX2__)
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const __m256i p = udot(nibbles(w[b].qs), _mm256_loadu_si256((const __m256i *)x[b].qs));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(fp16(w[b].d) * x[b].d), acc);
        offsets = fmaf(fp16(w[b].m), x[b].s, offsets); /* as group_dot does, so that T = 1 and T > 1 agree */
    }
    return hsum8(acc) + offsets;
#else
    float total = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int sum = 0;
        for (int j = 0; j < QK / 2; j++)
            sum += (w[b].qs[j] & 0x0f) * x[b].qs[j] + (w[b].qs[j] >> 4) * x[b].qs[j + QK / 2];
        total += (float)sum * (fp16(w[b].d) * x[b].d);
        offsets += fp16(w[b].m) * x[b].s;
    }
    return total + offsets;
#endif
}

static float dot_q4_0(const block_q4_0 *w, const block_act *x, int64_t nb) {
    float offsets = 0.0f; /* d*(n-8)·x = d*n·x - 8*d*sum(x) */
#if defined(__AVX2__)
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const float d = fp16(w[b].d);
        const __m256i p = udot(nibbles(w[b].qs), _mm256_loadu_si256((const __m256i *)x[b].qs));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * x[b].d), acc);
        offsets = fmaf(-8.0f * d, x[b].s, offsets);
    }
    return hsum8(acc) + offsets;
#else
    float total = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const float d = fp16(w[b].d);
        int sum = 0;
        for (int j = 0; j < QK / 2; j++)
            sum += (w[b].qs[j] & 0x0f) * x[b].qs[j] + (w[b].qs[j] >> 4) * x[b].qs[j + QK / 2];
        total += (float)sum * (d * x[b].d);
        offsets += d * x[b].s;
    }
    return total - 8.0f * offsets;
#endif
}

static float dot_q8_0(const block_q8_0 *w, const block_act *x, int64_t nb) {
#if defined(__AVX2__)
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const __m256i wq = _mm256_loadu_si256((const __m256i *)w[b].qs);
        const __m256i xq = _mm256_loadu_si256((const __m256i *)x[b].qs);
        /* signed x signed through the unsigned-x-signed dot: |w| * (x with w's sign) */
        const __m256i p = udot(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(fp16(w[b].d) * x[b].d), acc);
    }
    return hsum8(acc);
#else
    float total = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int sum = 0;
        for (int j = 0; j < QK; j++) sum += w[b].qs[j] * x[b].qs[j];
        total += (float)sum * (fp16(w[b].d) * x[b].d);
    }
    return total;
#endif
}

static float dot_f32(const float *w, const float *x, int64_t n) {
    int64_t j = 0;
    float total = 0.0f;
#if defined(__AVX2__)
    __m256 acc = _mm256_setzero_ps();
    for (; j + 8 <= n; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(x + j), acc);
    total = hsum8(acc);
#endif
    for (; j < n; j++) total += w[j] * x[j];
    return total;
}

/* Block rows times fp32 activations (no activation rounding): each block dequantized in registers. */

static float dotf_q4_1(const block_q4_1 *w, const float *x, int64_t nb) {
#if defined(__AVX512F__)
    __m512 acc = _mm512_setzero_ps(), offsets = _mm512_setzero_ps();
    const __m128i m4 = _mm_set1_epi8(0x0f);
    for (int64_t b = 0; b < nb; b++) {
        const __m128i raw = _mm_loadu_si128((const __m128i *)w[b].qs);
        const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(raw, m4)));
        const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(raw, 4), m4)));
        const __m512 x0 = _mm512_loadu_ps(x + b * QK), x1 = _mm512_loadu_ps(x + b * QK + 16);
        acc = _mm512_fmadd_ps(_mm512_fmadd_ps(hi, x1, _mm512_mul_ps(lo, x0)), _mm512_set1_ps(fp16(w[b].d)), acc);
        offsets = _mm512_fmadd_ps(_mm512_add_ps(x0, x1), _mm512_set1_ps(fp16(w[b].m)), offsets);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc, offsets));
#else
    float total = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const float d = fp16(w[b].d), m = fp16(w[b].m), *v = x + b * QK;
        float dot = 0.0f, sum = 0.0f;
        for (int j = 0; j < QK / 2; j++) {
            dot += (w[b].qs[j] & 0x0f) * v[j] + (w[b].qs[j] >> 4) * v[j + QK / 2];
            sum += v[j] + v[j + QK / 2];
        }
        total += d * dot + m * sum;
    }
    return total;
#endif
}

static float dotf_q4_0(const block_q4_0 *w, const float *x, int64_t nb) {
#if defined(__AVX512F__)
    __m512 acc = _mm512_setzero_ps();
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m512 eight = _mm512_set1_ps(8.0f);
    for (int64_t b = 0; b < nb; b++) {
        const __m128i raw = _mm_loadu_si128((const __m128i *)w[b].qs);
        const __m512 lo = _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(raw, m4))), eight);
        const __m512 hi = _mm512_sub_ps(
            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(raw, 4), m4))), eight);
        const __m512 p = _mm512_fmadd_ps(hi, _mm512_loadu_ps(x + b * QK + 16), _mm512_mul_ps(lo, _mm512_loadu_ps(x + b * QK)));
        acc = _mm512_fmadd_ps(p, _mm512_set1_ps(fp16(w[b].d)), acc);
    }
    return _mm512_reduce_add_ps(acc);
#else
    float total = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const float *v = x + b * QK;
        float dot = 0.0f;
        for (int j = 0; j < QK / 2; j++)
            dot += ((w[b].qs[j] & 0x0f) - 8) * v[j] + ((w[b].qs[j] >> 4) - 8) * v[j + QK / 2];
        total += fp16(w[b].d) * dot;
    }
    return total;
#endif
}

static float dotf_q8_0(const block_q8_0 *w, const float *x, int64_t nb) {
#if defined(__AVX512F__)
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)w[b].qs)));
        const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w[b].qs + 16))));
        const __m512 p = _mm512_fmadd_ps(hi, _mm512_loadu_ps(x + b * QK + 16), _mm512_mul_ps(lo, _mm512_loadu_ps(x + b * QK)));
        acc = _mm512_fmadd_ps(p, _mm512_set1_ps(fp16(w[b].d)), acc);
    }
    return _mm512_reduce_add_ps(acc);
#else
    float total = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const float *v = x + b * QK;
        float dot = 0.0f;
        for (int j = 0; j < QK; j++) dot += w[b].qs[j] * v[j];
        total += fp16(w[b].d) * dot;
    }
    return total;
#endif
}

static size_t row_bytes(int32_t format, int64_t cols) {
    switch (format) {
    case PQ_Q8_0: return (size_t)(cols / QK) * sizeof(block_q8_0);
    case PQ_Q4_0: return (size_t)(cols / QK) * sizeof(block_q4_0);
    case PQ_Q4_1: return (size_t)(cols / QK) * sizeof(block_q4_1);
    default: return (size_t)cols * sizeof(float);
    }
}

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define PQ_GROUPS 1
/* T = 1 on AVX-512: two blocks a step in one 512-bit register, lanes 0-7 the even block's and 8-15 the odd one's,
   so that every row carries an even and an odd chain, as group_dot does for each token (the two agree bit for
   bit); R rows interleaved share the input's loads and overlap their chains. */

/* The 64 weight bytes of blocks b and b+1 of a row (zeros for b+1 when !both), in the input's byte order, and
   their fp32 scales in lanes 0 and 2 of *dm, the offset coefficients (min, -8*d or 0) in lanes 1 and 3. */
static inline __attribute__((always_inline)) __m512i pair_weights(const int format, const uint8_t *row, int64_t b,
                                                                  const int both, __m128 *dm) {
    if (format == PQ_Q8_0) {
        const block_q8_0 *k = (const block_q8_0 *)row + b;
        const __m256i second = both ? _mm256_loadu_si256((const __m256i *)k[1].qs) : _mm256_setzero_si256();
        const uint64_t d1 = both ? k[1].d : 0;
        *dm = _mm_cvtph_ps(_mm_cvtsi64_si128((int64_t)(k[0].d | d1 << 32)));
        return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)k[0].qs)), second, 1);
    }
    const size_t bytes = format == PQ_Q4_1 ? sizeof(block_q4_1) : sizeof(block_q4_0), qs = bytes - QK / 2;
    const uint8_t *at = row + (size_t)b * bytes;
    const __m128i first = _mm_loadu_si128((const __m128i *)(at + qs));
    const __m256i raw = both ? _mm256_inserti128_si256(_mm256_castsi128_si256(first),
                                                       _mm_loadu_si128((const __m128i *)(at + bytes + qs)), 1)
                             : _mm256_zextsi128_si256(first);
    uint32_t head0, head1 = 0; /* d and m (q4_1) or d (q4_0) of each block */
    memcpy(&head0, at, 4);
    if (both) memcpy(&head1, at + bytes, 4);
    if (format == PQ_Q4_1) {
        *dm = _mm_cvtph_ps(_mm_cvtsi64_si128((int64_t)((uint64_t)head0 | (uint64_t)head1 << 32)));
    } else {
        const uint64_t d0 = head0 & 0xffff, d1 = head1 & 0xffff;
        *dm = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi64_si128((int64_t)(d0 | d0 << 16 | d1 << 32 | d1 << 48))),
                         _mm_setr_ps(1.0f, -8.0f, 1.0f, -8.0f));
    }
    /* [q0, q0, q1, q1] by 128-bit lane, then the low nibbles of lanes 0 and 2 and the high ones of 1 and 3 */
    const __m512i spread = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), _mm512_castsi256_si512(raw));
    return _mm512_and_si512(_mm512_srlv_epi64(spread, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4)), _mm512_set1_epi8(0x0f));
}

#define PREFETCH 16 /* rows ahead: four interleaved row streams defeat the hardware prefetcher on matrices past the L3 */

/* out[i] = row i of the R rows at w (`stride` bytes apart) times the int8 input x of nb blocks. */
static inline __attribute__((always_inline)) void pair_rows(const int format, const int R, const uint8_t *w,
                                                            size_t stride, const block_act *x, int64_t nb, float *out) {
    __m512 acc[4];
    __m128 offsets[4];
    for (int i = 0; i < R; i++) acc[i] = _mm512_setzero_ps(), offsets[i] = _mm_setzero_ps();
    const __m512i expand = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    const size_t block = format == PQ_Q8_0 ? sizeof(block_q8_0) : format == PQ_Q4_1 ? sizeof(block_q4_1) : sizeof(block_q4_0);
    for (int64_t b = 0; b < nb; b += 2) {
        const int both = b + 1 < nb;
        const __m256i x1 = both ? _mm256_loadu_si256((const __m256i *)x[b + 1].qs) : _mm256_setzero_si256();
        const __m512i xv = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)x[b].qs)), x1, 1);
        const __m128 ds = _mm_setr_ps(x[b].d, x[b].s, both ? x[b + 1].d : 0.0f, both ? x[b + 1].s : 0.0f);
        for (int i = 0; i < R; i++) {
            if (R > 1) _mm_prefetch((const char *)w + (size_t)(i + PREFETCH) * stride + (size_t)b * block, _MM_HINT_T0);
            __m128 dm;
            __m512i wv = pair_weights(format, w + (size_t)i * stride, b, both, &dm), xs = xv;
            if (format == PQ_Q8_0) { /* signed x signed as |w| x (x with w's sign) */
                xs = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(wv), _mm512_setzero_si512(), xv);
                wv = _mm512_abs_epi8(wv);
            }
            const __m512 scales = _mm512_permutexvar_ps(expand, _mm512_castps128_ps512(_mm_mul_ps(dm, ds)));
            const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, xs);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scales, acc[i]);
            offsets[i] = _mm_fmadd_ps(dm, ds, offsets[i]); /* lanes 1 and 3: the even and odd offset chains */
        }
    }
    for (int i = 0; i < R; i++) {
        const __m256 both = _mm256_add_ps(_mm512_castps512_ps256(acc[i]), _mm512_extractf32x8_ps(acc[i], 1));
        float o[4];
        _mm_storeu_ps(o, offsets[i]);
        out[i] = hsum8(both) + (o[1] + o[3]);
    }
}

#define PQ_PAIR_FORMATS(R, mat, row, stride, x, nb, out)                                                        \
    switch ((mat)->format) {                                                                                   \
    case PQ_Q8_0: pair_rows(PQ_Q8_0, R, row, stride, x, nb, out); break;                                       \
    case PQ_Q4_0: pair_rows(PQ_Q4_0, R, row, stride, x, nb, out); break;                                       \
    default: pair_rows(PQ_Q4_1, R, row, stride, x, nb, out);                                                   \
    }
#else
#define PQ_GROUPS 0
#endif

/* Row r of w times one input: xq its int8 blocks, xf its floats (read by F32 rows, and by every row when xq is
   NULL: the fp32-activation mode). */
static inline float row_dot(const pq_mat *w, int64_t r, const block_act *xq, const float *xf) {
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * row_bytes(w->format, w->cols);
    const int64_t nb = w->cols / QK;
    float y;
    if (!xq) {
        switch (w->format) {
        case PQ_Q8_0: y = dotf_q8_0((const block_q8_0 *)row, xf, nb); break;
        case PQ_Q4_0: y = dotf_q4_0((const block_q4_0 *)row, xf, nb); break;
        case PQ_Q4_1: y = dotf_q4_1((const block_q4_1 *)row, xf, nb); break;
        default: y = dot_f32((const float *)row, xf, w->cols);
        }
        return w->bias ? y + w->bias[r] : y;
    }
#if PQ_GROUPS
    if (w->format != PQ_F32) {
        PQ_PAIR_FORMATS(1, w, row, 0, xq, nb, &y);
        return w->bias ? y + w->bias[r] : y;
    }
#endif
    switch (w->format) {
    case PQ_Q8_0: y = dot_q8_0((const block_q8_0 *)row, xq, nb); break;
    case PQ_Q4_0: y = dot_q4_0((const block_q4_0 *)row, xq, nb); break;
    case PQ_Q4_1: y = dot_q4_1((const block_q4_1 *)row, xq, nb); break;
    default: y = dot_f32((const float *)row, xf, w->cols);
    }
    return w->bias ? y + w->bias[r] : y;
}

/* out[i] = row r+i of w times one input, for i < n: the values row_dot gives, four rows a call where it can. */
static inline void rows_dot(const pq_mat *w, int64_t r, int64_t n, const block_act *xq, const float *xf, float *out) {
#if PQ_GROUPS
    if (n == 4 && xq && w->format != PQ_F32) {
        const size_t stride = row_bytes(w->format, w->cols);
        const uint8_t *row = (const uint8_t *)w->data + (size_t)r * stride;
        PQ_PAIR_FORMATS(4, w, row, stride, xq, w->cols / QK, out);
        if (w->bias)
            for (int64_t i = 0; i < n; i++) out[i] += w->bias[r + i];
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) out[i] = row_dot(w, r + i, xq, xf);
}

static void dequantize_row(const pq_mat *w, int64_t r, float *out) {
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * row_bytes(w->format, w->cols);
    const int64_t nb = w->cols / QK;
    switch (w->format) {
    case PQ_Q8_0:
        for (int64_t b = 0; b < nb; b++) {
            const block_q8_0 *k = (const block_q8_0 *)row + b;
            const float d = fp16(k->d);
            for (int j = 0; j < QK; j++) out[b * QK + j] = d * k->qs[j];
        }
        break;
    case PQ_Q4_0:
        for (int64_t b = 0; b < nb; b++) {
            const block_q4_0 *k = (const block_q4_0 *)row + b;
            const float d = fp16(k->d);
            for (int j = 0; j < QK / 2; j++) {
                out[b * QK + j] = d * ((k->qs[j] & 0x0f) - 8);
                out[b * QK + j + QK / 2] = d * ((k->qs[j] >> 4) - 8);
            }
        }
        break;
    case PQ_Q4_1:
        for (int64_t b = 0; b < nb; b++) {
            const block_q4_1 *k = (const block_q4_1 *)row + b;
            const float d = fp16(k->d), m = fp16(k->m);
            for (int j = 0; j < QK / 2; j++) {
                out[b * QK + j] = d * (k->qs[j] & 0x0f) + m;
                out[b * QK + j + QK / 2] = d * (k->qs[j] >> 4) + m;
            }
        }
        break;
    default: memcpy(out, row, (size_t)w->cols * sizeof(float));
    }
}


/* ---- T > 1 tokens: one weight block decoded once for a group of G tokens (AVX-512 VNNI builds) ---- */

#define G 8
typedef struct { int8_t qs[G][QK]; float d[G], s[G]; } block_grp; /* block b of G tokens' inputs */

#if PQ_GROUPS
/* Block b of a row into the pair accumulators acc (and the offsets) of the G tokens of one group. */
static inline __attribute__((always_inline)) void group_block(const int format, const int pairs, const uint8_t *row,
                                                              const block_grp *x, int64_t b, const __m512i *pick,
                                                              __m512 *acc, __m256 *offsets) {
    __m256i wq;
    float d, coef = 0.0f;
    if (format == PQ_Q4_1) {
        const block_q4_1 *k = (const block_q4_1 *)row + b;
        wq = nibbles(k->qs), d = fp16(k->d), coef = fp16(k->m);
    } else if (format == PQ_Q4_0) {
        const block_q4_0 *k = (const block_q4_0 *)row + b;
        wq = nibbles(k->qs), d = fp16(k->d), coef = -8.0f * d;
    } else {
        const block_q8_0 *k = (const block_q8_0 *)row + b;
        wq = _mm256_loadu_si256((const __m256i *)k->qs), d = fp16(k->d);
    }
    const __m512i w2 = _mm512_broadcast_i64x4(format == PQ_Q8_0 ? _mm256_abs_epi8(wq) : wq);
    const __mmask64 negative = format == PQ_Q8_0 ? _mm512_movepi8_mask(_mm512_broadcast_i64x4(wq)) : 0;
    const __m512 scales = _mm512_castps256_ps512(_mm256_mul_ps(_mm256_set1_ps(d), _mm256_loadu_ps(x[b].d)));
    if (format != PQ_Q8_0) *offsets = _mm256_fmadd_ps(_mm256_set1_ps(coef), _mm256_loadu_ps(x[b].s), *offsets);
    for (int p = 0; p < pairs; p++) {
        __m512i xv = _mm512_loadu_si512((const void *)x[b].qs[2 * p]);
        if (format == PQ_Q8_0) xv = _mm512_mask_sub_epi8(xv, negative, _mm512_setzero_si512(), xv);
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w2, xv);
        acc[p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(pick[p], scales), acc[p]);
    }
}

/* out[t] = row · input t for the G tokens of one group, each token's sums in the order of the T = 1 dots
   (pair_rows): the 512-bit lanes hold two tokens' 8-lane accumulators, the weight block broadcast to both halves,
   even and odd blocks in separate accumulators. */
static inline __attribute__((always_inline)) void group_dot(const int format, const int pairs, const uint8_t *row,
                                                            const block_grp *x, int64_t nb, float *out) {
    /* pairs: the token pairs the group holds (a verify pass of a few tokens pays for those, not for G) */
    __m512 even[G / 2], odd[G / 2];
    for (int p = 0; p < G / 2; p++) even[p] = odd[p] = _mm512_setzero_ps();
    __m256 even_offsets = _mm256_setzero_ps(), odd_offsets = _mm256_setzero_ps();
    __m512i pick[G / 2];
    for (int p = 0; p < G / 2; p++)
        pick[p] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(2 * p)), _mm256_set1_epi32(2 * p + 1), 1);
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        group_block(format, pairs, row, x, b, pick, even, &even_offsets);
        group_block(format, pairs, row, x, b + 1, pick, odd, &odd_offsets);
    }
    if (b < nb) group_block(format, pairs, row, x, b, pick, even, &even_offsets);
    float off[G];
    _mm256_storeu_ps(off, _mm256_add_ps(even_offsets, odd_offsets));
    for (int p = 0; p < pairs; p++) {
        const __m512 sum = _mm512_add_ps(even[p], odd[p]);
        out[2 * p] = hsum8(_mm512_castps512_ps256(sum)) + off[2 * p];
        out[2 * p + 1] = hsum8(_mm512_extractf32x8_ps(sum, 1)) + off[2 * p + 1];
    }
}

/* One instance per format and pair count, so that each inlined loop has constant bounds. */
#define PQ_GROUP_PAIRS(format, pairs, row, x, nb, out)                                                          \
    switch (pairs) {                                                                                           \
    case 1: group_dot(format, 1, row, x, nb, out); break;                                                      \
    case 2: group_dot(format, 2, row, x, nb, out); break;                                                      \
    case 3: group_dot(format, 3, row, x, nb, out); break;                                                      \
    default: group_dot(format, 4, row, x, nb, out);                                                            \
    }

/* out[t] for the `tokens` (1..G) of one group; out holds G floats, those past `tokens` rounded up to a pair
   are left as they were. */
static void group_row(const pq_mat *w, int64_t r, const block_grp *x, int tokens, float *out) {
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * row_bytes(w->format, w->cols);
    const int64_t nb = w->cols / QK;
    const int pairs = (tokens + 1) / 2;
    switch (w->format) {
    case PQ_Q8_0: PQ_GROUP_PAIRS(PQ_Q8_0, pairs, row, x, nb, out); break;
    case PQ_Q4_0: PQ_GROUP_PAIRS(PQ_Q4_0, pairs, row, x, nb, out); break;
    default: PQ_GROUP_PAIRS(PQ_Q4_1, pairs, row, x, nb, out);
    }
    if (w->bias)
        for (int t = 0; t < tokens; t++) out[t] += w->bias[r];
}
#endif

/* ---- standalone entry points (tests and Python-side use) ---- */

void pq_dequantize(const pq_mat *w, float *out) {
    for (int64_t r = 0; r < w->rows; r++) dequantize_row(w, r, out + r * w->cols);
}

/* ---- the model forward ---- */

typedef struct {
    float *x, *xn, *qkv, *ffn, *scores, *rows;
    int32_t *active, *counts; /* sparse kinds: [T, F] active neuron ids and [T] their counts a token */
    float *magnitudes;        /* [threads, F] the top-k selection's scratch */
    block_act *xq;
    block_grp *xg;
    int quantized; /* whether matvecs read xq (else xn only) */
    int grouped;   /* whether block rows read xg: int8 inputs, T > 1, a build with group_dot */
} pq_work;

/* The int8 blocks of input row t (rows of `nb` blocks), NULL in the fp32-activation mode. */
static inline const block_act *xq_row(const pq_work *w, int64_t t, int64_t nb) {
    return w->quantized ? w->xq + t * nb : NULL;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static int64_t max3(int64_t a, int64_t b, int64_t c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

static int32_t max_threads(const pq_model *m) {
#ifdef _OPENMP
    return m->threads > 0 ? m->threads : omp_get_max_threads();
#else
    (void)m;
    return 1;
#endif
}

static size_t carve(const pq_model *m, pq_work *w, uint8_t *base) {
    const int64_t T = m->max_tokens, D = m->hidden, E = m->head_dim;
    const int64_t qkv = (m->heads + 2 * m->kv_heads) * E, widest = max3(D, m->heads * E, m->ffn);
    size_t at = 0;
#define TAKE(field, type, count)                                                                                      \
    do {                                                                                                              \
        if (base) w->field = (type *)(base + at);                                                                     \
        at += align64((size_t)(count) * sizeof(type));                                                                \
    } while (0)
    TAKE(x, float, T * D);
    TAKE(xn, float, T * widest);
    TAKE(qkv, float, T * qkv);
    TAKE(ffn, float, T * m->ffn);
    TAKE(scores, float, (int64_t)max_threads(m) * m->max_len);
    TAKE(xq, block_act, T * (widest / QK));
    TAKE(xg, block_grp, (T + G - 1) / G * (widest / QK));
    TAKE(rows, float, (int64_t)max_threads(m) * 2 * ((T + G - 1) / G * G));
    TAKE(active, int32_t, T * m->ffn);
    TAKE(counts, int32_t, T);
    TAKE(magnitudes, float, (int64_t)max_threads(m) * m->ffn);
#undef TAKE
    return at;
}

int64_t pq_work_bytes(const pq_model *m) { return (int64_t)carve(m, &(pq_work){0}, NULL); }

static void rms_norm(const float *x, const float *weight, int64_t n, float eps, float *out) {
    double ss = 0.0;
    for (int64_t j = 0; j < n; j++) ss += (double)x[j] * x[j];
    const float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (int64_t j = 0; j < n; j++) out[j] = weight[j] * (x[j] * scale);
}

/* out [E] = rotate_half RoPE of x at table row (cos, sin) */
static void rope(float *x, const float *cos, const float *sin, int64_t E) {
    const int64_t half = E / 2;
    for (int64_t i = 0; i < half; i++) {
        const float a = x[i], b = x[i + half];
        x[i] = a * cos[i] - b * sin[i];
        x[i + half] = b * cos[i + half] + a * sin[i + half];
    }
}

/* Regroup the int8 input rows xq (T rows of nb blocks) into xg's groups of G tokens, padding with zeros. */
static void regroup(const pq_work *w, int64_t T, int64_t nb) {
#pragma omp for schedule(static)
    for (int64_t g = 0; g < (T + G - 1) / G; g++)
        for (int64_t b = 0; b < nb; b++) {
            block_grp *out = w->xg + g * nb + b;
            for (int64_t lane = 0; lane < G; lane++) {
                const int64_t t = g * G + lane;
                if (t < T) {
                    const block_act *in = w->xq + t * nb + b;
                    memcpy(out->qs[lane], in->qs, QK);
                    out->d[lane] = in->d, out->s[lane] = in->s;
                } else {
                    memset(out->qs[lane], 0, QK);
                    out->d[lane] = out->s[lane] = 0.0f;
                }
            }
        }
}

/* Quantize the fp32 input rows xn (T rows of n) for the next matvecs, as the mode asks. Call inside the region. */
static void prepare_inputs(const pq_work *w, const float *rows, int64_t T, int64_t n) {
    if (!w->quantized) return;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; t++) quantize_act(rows + t * n, n, w->xq + t * (n / QK));
    if (w->grouped) regroup(w, T, n / QK);
}

/* Norm rows of x [T, D] into xn and prepare them as inputs. Call inside the region. */
static void norm_inputs(const pq_model *m, const pq_work *w, const float *x, const float *weight, int64_t T) {
    const int64_t D = m->hidden;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; t++) rms_norm(x + t * D, weight, D, m->eps, w->xn + t * D);
    prepare_inputs(w, w->xn, T, D);
}

/* out[t] = row r of mat times input t, for every t < T (out holds T rounded up to G floats). */
static inline void row_all(const pq_mat *mat, int64_t r, const pq_work *w, int64_t T, float *out) {
    const int64_t nb = mat->cols / QK;
#if PQ_GROUPS
    if (w->grouped && mat->format != PQ_F32) {
        for (int64_t g = 0; g < (T + G - 1) / G; g++) {
            const int64_t left = T - g * G;
            group_row(mat, r, w->xg + g * nb, left < G ? (int)left : G, out + g * G);
        }
        return;
    }
#endif
    for (int64_t t = 0; t < T; t++) out[t] = row_dot(mat, r, xq_row(w, t, nb), w->xn + t * mat->cols);
}

static inline float *row_scratch(const pq_work *w, const pq_model *m) {
#ifdef _OPENMP
    const int me = omp_get_thread_num();
#else
    const int me = 0;
#endif
    return w->rows + (int64_t)me * 2 * ((m->max_tokens + G - 1) / G * G);
}

/* y [T, ldy] (+)= x · w^T over the prepared inputs. Call inside the region. */
static void matmul_rows(const pq_model *m, const pq_mat *w, const pq_work *k, int64_t T, float *y, int64_t ldy,
                        int accumulate) {
    if (T == 1) {
#pragma omp for schedule(static)
        for (int64_t c = 0; c < (w->rows + 3) / 4; c++) {
            const int64_t r = c * 4, n = w->rows - r < 4 ? w->rows - r : 4;
            float v[4];
            rows_dot(w, r, n, xq_row(k, 0, 0), k->xn, v);
            for (int64_t i = 0; i < n; i++) y[r + i] = accumulate ? y[r + i] + v[i] : v[i];
        }
        return;
    }
#pragma omp for schedule(static)
    for (int64_t r = 0; r < w->rows; r++) {
        float *v = row_scratch(k, m);
        row_all(w, r, k, T, v);
        for (int64_t t = 0; t < T; t++) y[t * ldy + r] = accumulate ? y[t * ldy + r] + v[t] : v[t];
    }
}

/* Q, K and V share their input: one pass over all their rows into qkv [T, QKV]; four rows a chunk when T = 1
   (no chunk spans two matrices). Call inside the region. */
static void qkv_rows(const pq_model *m, const pq_layer *L, const pq_work *w, int64_t T, int64_t QKV) {
    const pq_mat *mats[3] = {&L->q, &L->k, &L->v};
    const int64_t nq = L->q.rows, nk = L->k.rows, first[3] = {0, nq, nq + nk};
    const int64_t step = T == 1 ? 4 : 1, cq = (nq + step - 1) / step, ck = (nk + step - 1) / step;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < cq + 2 * ck; c++) {
        const int which = c < cq ? 0 : (c < cq + ck ? 1 : 2);
        const pq_mat *mat = mats[which];
        const int64_t r = (which == 0 ? c : (which == 1 ? c - cq : c - cq - ck)) * step;
        if (T == 1) {
            rows_dot(mat, r, mat->rows - r < 4 ? mat->rows - r : 4, xq_row(w, 0, 0), w->xn, w->qkv + first[which] + r);
            continue;
        }
        float *v = row_scratch(w, m);
        row_all(mat, r, w, T, v);
        for (int64_t t = 0; t < T; t++) w->qkv[t * QKV + first[which] + r] = v[t];
    }
}

static void attention_layer(const pq_model *m, const pq_layer *L, const pq_work *w, int64_t T, int64_t pos) {
    const int64_t D = m->hidden, H = m->heads, K = m->kv_heads, E = m->head_dim, S = m->max_len;
    const int64_t QKV = (H + 2 * K) * E;
    norm_inputs(m, w, w->x, L->attn_norm, T);
    qkv_rows(m, L, w, T, QKV);
#pragma omp for schedule(static) collapse(2)
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H + 2 * K; h++) {
            float *v = w->qkv + t * QKV + h * E;
            const float *cos = m->cos + (pos + t) * E, *sin = m->sin + (pos + t) * E;
            if (h < H + K) {
                const float *norm = h < H ? L->q_norm : L->k_norm;
                if (norm) rms_norm(v, norm, E, m->eps, v);
                rope(v, cos, sin, E);
            }
            if (h >= H) {
                float *cache = h < H + K ? L->k_cache + (h - H) * S * E : L->v_cache + (h - H - K) * S * E;
                memcpy(cache + (pos + t) * E, v, (size_t)E * sizeof(float));
            }
        }
#pragma omp for schedule(static) collapse(2)
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
#ifdef _OPENMP
            const int me = omp_get_thread_num();
#else
            const int me = 0;
#endif
            const float *q = w->qkv + t * QKV + h * E;
            const float *keys = L->k_cache + (h / (H / K)) * S * E, *values = L->v_cache + (h / (H / K)) * S * E;
            float *scores = w->scores + me * S, *out = w->xn + t * H * E + h * E; /* o_proj's input */
            const int64_t n = pos + t + 1; /* causal: positions 0..pos+t */
            float top = -INFINITY;
            for (int64_t p = 0; p < n; p++) {
                scores[p] = dot_f32(q, keys + p * E, E) * m->scaling;
                top = fmaxf(top, scores[p]);
            }
            float total = 0.0f;
            for (int64_t p = 0; p < n; p++) total += (scores[p] = expf(scores[p] - top));
            const float inv = 1.0f / total;
            for (int64_t e = 0; e < E; e++) out[e] = 0.0f;
            for (int64_t p = 0; p < n; p++) {
                const float a = scores[p] * inv, *v = values + p * E;
                for (int64_t e = 0; e < E; e++) out[e] += a * v[e];
            }
        }
    prepare_inputs(w, w->xn, T, H * E);
    matmul_rows(m, &L->o, w, T, w->x, D, 1);
}

#include "sparse_ffn.h"

static void ffn_layer(const pq_model *m, const pq_layer *L, const pq_work *w, int64_t T) {
    /* F: the gate's rows, m->ffn or fewer (a prefix of neurons: the perfect executor of `ponder bench --ceiling`) */
    const int64_t F = L->ffn_kind == PQ_FFN_DENSE ? L->gate.rows : m->ffn, groups = (T + G - 1) / G * G;
    norm_inputs(m, w, w->x, L->ffn_norm, T);
    if (L->ffn_kind == PQ_FFN_CATS) {
        cats_ffn(m, L, w, T);
        return;
    }
    if (T == 1) {
#pragma omp for schedule(static)
        for (int64_t c = 0; c < (F + 3) / 4; c++) { /* gate and up of four neurons together */
            const int64_t r = c * 4, n = F - r < 4 ? F - r : 4;
            float g[4], u[4];
            rows_dot(&L->gate, r, n, xq_row(w, 0, 0), w->xn, g);
            rows_dot(&L->up, r, n, xq_row(w, 0, 0), w->xn, u);
            for (int64_t i = 0; i < n; i++) w->ffn[r + i] = g[i] / (1.0f + expf(-g[i])) * u[i];
        }
    } else {
#pragma omp for schedule(static)
        for (int64_t r = 0; r < F; r++) { /* gate and up of neuron r together, SwiGLU into the down input */
            float *g = row_scratch(w, m), *u = g + groups;
            row_all(&L->gate, r, w, T, g);
            row_all(&L->up, r, w, T, u);
            for (int64_t t = 0; t < T; t++) w->ffn[t * F + r] = g[t] / (1.0f + expf(-g[t])) * u[t];
        }
    }
    prepare_inputs(w, w->ffn, T, F);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; t++) memcpy(w->xn + t * F, w->ffn + t * F, (size_t)F * sizeof(float));
    matmul_rows(m, &L->down, w, T, w->x, m->hidden, 1);
}

int32_t pq_forward(const pq_model *m, const int32_t *ids, int64_t T, int64_t pos, float *logits, int32_t all) {
    /* Append T tokens at positions pos.. to the cache; logits [T, V] when `all`, else [1, V] of the last token.
       Returns 0, or -1 when T or the positions do not fit the buffers. */
    if (T < 1 || T > m->max_tokens || pos < 0 || pos + T > m->max_len) return -1;
    pq_work w;
    carve(m, &w, (uint8_t *)m->work);
    const int64_t D = m->hidden, first = all ? 0 : T - 1, rows = T - first;
    w.quantized = !m->fp32_act;
#pragma omp parallel num_threads(max_threads(m))
    {
        pq_work k = w; /* per thread: the head's row count differs from the layers' */
        k.grouped = PQ_GROUPS && k.quantized && T > 1;
#pragma omp for schedule(static)
        for (int64_t t = 0; t < T; t++) dequantize_row(&m->embed, ids[t], k.x + t * D);
        for (int64_t l = 0; l < m->layers; l++) {
            attention_layer(m, &m->layer[l], &k, T, pos);
            ffn_layer(m, &m->layer[l], &k, T);
        }
        k.grouped = PQ_GROUPS && k.quantized && rows > 1;
        norm_inputs(m, &k, k.x + first * D, m->final_norm, rows);
        matmul_rows(m, &m->head, &k, rows, logits, m->vocab, 0);
    }
    return 0;
}

int64_t pq_argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t j = 1; j < n; j++)
        if (x[j] > x[best]) best = j;
    return best;
}

int32_t pq_matmul(const pq_mat *w, const float *x, int64_t T, float *y, int32_t threads, int32_t fp32_act) {
    /* y [T, rows] = x [T, cols] · w^T through the forward's own kernels (int8 inputs unless fp32_act; groups of
       tokens where T > 1); `threads` OpenMP threads split the rows. Returns -1 when scratch cannot be had. */
    const int64_t nb = w->cols / QK, padded = (T + G - 1) / G * G;
    pq_work k = {0};
    k.quantized = !fp32_act;
    k.grouped = PQ_GROUPS && k.quantized && T > 1;
    k.xn = (float *)x;
    k.xq = malloc((size_t)(T * nb) * sizeof(block_act));
    k.xg = malloc((size_t)(padded / G * nb) * sizeof(block_grp));
    float *scratch = malloc((size_t)(threads * padded) * sizeof(float));
    const int32_t ok = k.xq && k.xg && scratch;
    if (ok) {
        prepare_inputs(&k, x, T, w->cols);
        if (T == 1) {
#pragma omp parallel for schedule(static) num_threads(threads)
            for (int64_t r = 0; r < w->rows; r += 4)
                rows_dot(w, r, w->rows - r < 4 ? w->rows - r : 4, xq_row(&k, 0, 0), x, y + r);
        } else {
#pragma omp parallel for schedule(static) num_threads(threads)
            for (int64_t r = 0; r < w->rows; r++) {
#ifdef _OPENMP
                float *v = scratch + omp_get_thread_num() * padded;
#else
                float *v = scratch;
#endif
                row_all(w, r, &k, T, v);
                for (int64_t t = 0; t < T; t++) y[t * w->rows + r] = v[t];
            }
        }
    }
    free(k.xq), free(k.xg), free(scratch);
    return ok ? 0 : -1;
}
