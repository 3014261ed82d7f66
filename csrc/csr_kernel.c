/* The forward pass of a pruned MLP on the CPU, every layer in one call: h = relu(W @ h), the last
 * layer without ReLU. fastpath/plan.py builds the layers (sparse_plan) and calls csr_forward.
 *
 * W is cut into column panels, and each panel into segments: the nonzeros of one row in that panel,
 * val[p] for p in [start[g], start[g + 1]), added to row row[g] of out. Panel q holds segments
 * [panel[q], panel[q + 1]). Each thread keeps its activations [features][width], row-major, width its
 * slice of the batch in whole vectors, fixed by the plan; offset[p] is where the row of h that val[p]
 * multiplies starts, in bytes (its column * 4 * width): no multiply per nonzero, as a column index would need.
 *
 * Why it is shaped so (docs/speed.md, "The kernel", gives each step's measurements and their commands):
 * - A nonzero w at (i, j) adds w * h[j] to out[i]: a scaled row of activations, VEC samples per vector.
 *   The partial sums of a row stay in registers while its nonzeros stream past, so each nonzero costs
 *   its loads of h[j] and its multiply-adds, with no load and store of out[i] in between.
 * - Each thread runs the whole net on its own slice of the batch, with no barrier: nothing one core
 *   writes is read by the other. Splitting rows instead, each core read the half of every layer's
 *   input that the other had written from its cache.
 * - Rows of h are read in the order of the nonzeros, not in sequence. A panel's rows of h are sized by
 *   fastpath/plan.py to the L1 cache, so that they are read from there, unless that leaves too few nonzeros
 *   per segment.
 * - A panel's segments run shortest first, so that the branch closing each one is predicted: in the
 *   order of the rows, the closing branch is a coin toss.
 */
#ifdef _OPENMP
#include <omp.h>
#else  /* built without OpenMP (csrc/build.py): one thread */
static int omp_get_thread_num(void) { return 0; }
static int omp_get_num_threads(void) { return 1; }
#endif
#include <stdint.h>
#ifdef __AVX__
#include <immintrin.h>
#endif

#ifdef __AVX512F__
#define VEC 16        /* floats per vector */
#define MAX_CHUNK 16  /* vectors of partial sums held in registers: 16 of AVX-512's 32 */
#define MAX_PAIRED 8  /* two sets of sums up to this many vectors */
#else
#define VEC 8
#define MAX_CHUNK 12  /* AVX2's 16 registers: 12 sums, a broadcast weight and a load */
#define MAX_PAIRED 6
#endif
typedef float vec __attribute__((vector_size(VEC * 4), aligned(4)));  /* loads need only 4-byte alignment */
typedef int ivec __attribute__((vector_size(VEC * 4), aligned(4)));

typedef struct {             /* one layer; mirrored by speed.Layer */
    const int64_t *start;    /* segments + 1 */
    const int32_t *row;      /* segments */
    const int32_t *offset;
    const float *val;
    const int64_t *panel;    /* panels + 1 */
    int64_t rows, columns, panels;
    int64_t dense;           /* if set, val is the whole matrix, row-major, and the other arrays are unused */
} layer_t;

int vector_width(void) { return VEC; }

/* n vectors of out[i] from the nonzeros in [p, end). Inlined with n a constant, so acc lives in registers. */
static inline __attribute__((always_inline)) void chunk_of_row(const int32_t *offset, const float *val, int64_t p,
        int64_t end, const float *h, float *out, int n, int first_panel, int relu) {
    vec acc[MAX_CHUNK], *o = (vec *)out;
    for (int v = 0; v < n; v++) acc[v] = first_panel ? (vec){0} : o[v];
    if (n <= MAX_PAIRED) {  /* two nonzeros at a time into two sets of sums: a multiply-add waits 4 cycles */
        /* for its sum, and with one set each would wait for the one before */
        vec acc2[MAX_CHUNK];
        for (int v = 0; v < n; v++) acc2[v] = (vec){0};
        for (; p + 1 < end; p += 2) {
            const vec *h_row = (const vec *)((const char *)h + offset[p]);
            const vec *h_row2 = (const vec *)((const char *)h + offset[p + 1]);
            float w = val[p], w2 = val[p + 1];
            for (int v = 0; v < n; v++) acc[v] += w * h_row[v];
            for (int v = 0; v < n; v++) acc2[v] += w2 * h_row2[v];
        }
        for (int v = 0; v < n; v++) acc[v] += acc2[v];
    }
    for (; p < end; p++) {
        const vec *h_row = (const vec *)((const char *)h + offset[p]);
        float w = val[p];
        for (int v = 0; v < n; v++) acc[v] += w * h_row[v];
    }
    for (int v = 0; v < n; v++) o[v] = relu ? (vec)((ivec)acc[v] & (acc[v] > 0)) : acc[v];
}

/* The vectors a pass over a layer's weights takes: all of them in as few passes as the registers allow, in
 * chunks of equal size. */
static long chunk_size(long vectors) {
    long passes = (vectors + MAX_CHUNK - 1) / MAX_CHUNK;
    return (vectors + passes - 1) / passes;
}

/* out = W @ h on the first `vectors` vectors of each row of h, then ReLU if asked. The first panel sets every
 * row of out, and the last applies ReLU to every row, so they hold a segment for every row, empty or not. */
static void sparse_layer(const layer_t *layer, const float *h, float *out, long width, long vectors, int relu) {
    long chunk = chunk_size(vectors);
    for (long v0 = 0; v0 < vectors; v0 += chunk) {
        long n = vectors - v0 < chunk ? vectors - v0 : chunk;
        for (long q = 0; q < layer->panels; q++) {
            int first = q == 0, last = relu && q == layer->panels - 1;
            for (long g = layer->panel[q]; g < layer->panel[q + 1]; g++) {
                const float *hs = h + v0 * VEC;
                float *os = out + (long)layer->row[g] * width + v0 * VEC;
                switch (n) {  /* one inlined copy per chunk size */
                    #define CASE(k) case k: chunk_of_row(layer->offset, layer->val, layer->start[g], \
                                                         layer->start[g + 1], hs, os, k, first, last); break;
                    CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) CASE(9) CASE(10) CASE(11) CASE(12)
#if MAX_CHUNK > 12
                    CASE(13) CASE(14) CASE(15) CASE(16)
#endif
                }
            }
        }
    }
}

/* R rows of out, n vectors, from columns [j0, j1) of the dense rows w: each row of h is loaded once for R rows.
 * Inlined with n and R constants, so acc lives in registers. */
static inline __attribute__((always_inline)) void dense_rows(const float *w, long columns, long j0, long j1,
        const float *h, long width, float *out, int n, int R, int first_panel, int relu) {
    vec acc[4][MAX_CHUNK];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < n; v++) acc[r][v] = first_panel ? (vec){0} : ((vec *)(out + r * width))[v];
    for (long j = j0; j < j1; j++) {
        const vec *h_row = (const vec *)(h + j * width);
        for (int r = 0; r < R; r++) {
            float w_rj = w[r * columns + j];
            for (int v = 0; v < n; v++) acc[r][v] += w_rj * h_row[v];
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < n; v++)
            ((vec *)(out + r * width))[v] = relu ? (vec)((ivec)acc[r][v] & (acc[r][v] > 0)) : acc[r][v];
}

/* The rows a dense block takes for n vectors of sums: as many as the registers hold, up to 4. */
#define BLOCK_ROWS(n) (MAX_CHUNK / (n) >= 4 ? 4 : MAX_CHUNK / (n) >= 2 ? 2 : 1)

/* out = W @ h, then ReLU if asked, for a layer stored dense: fastpath/plan.py stores a layer so where most of its weights
 * are nonzero, as in a compacted unit-pruned net, and then no column index is loaded. */
static void dense_layer(const layer_t *layer, const float *h, float *out, long width, long vectors, int relu) {
    long chunk = chunk_size(vectors), rows = layer->rows, columns = layer->columns;
    for (long v0 = 0; v0 < vectors; v0 += chunk) {
        long n = vectors - v0 < chunk ? vectors - v0 : chunk;
        for (long q = 0; q < layer->panels; q++) {
            long j0 = columns * q / layer->panels, j1 = columns * (q + 1) / layer->panels;
            int first = q == 0, last = relu && q == layer->panels - 1;
            for (long i = 0; i < rows;) {
                long block = rows - i >= BLOCK_ROWS(n) ? BLOCK_ROWS(n) : 1;
                const float *w = layer->val + i * columns, *hs = h + v0 * VEC;
                float *os = out + i * width + v0 * VEC;
                switch (block == 1 ? -n : n) {  /* one inlined copy per chunk size, for a block and for one row */
                    #define DENSE(k) \
                        case k: dense_rows(w, columns, j0, j1, hs, width, os, k, BLOCK_ROWS(k), first, last); break; \
                        case -k: dense_rows(w, columns, j0, j1, hs, width, os, k, 1, first, last); break;
                    DENSE(1) DENSE(2) DENSE(3) DENSE(4) DENSE(5) DENSE(6) DENSE(7) DENSE(8)
                    DENSE(9) DENSE(10) DENSE(11) DENSE(12)
#if MAX_CHUNK > 12
                    DENSE(13) DENSE(14) DENSE(15) DENSE(16)
#endif
                }
                i += block;
            }
        }
    }
}

/* h[j][s] = x[s][j] for the samples s < batch, and 0 for those up to width (a multiple of 8), the rows of h
 * stride apart. In 8 x 8 blocks in registers where there is AVX, written along the rows of h, so that each
 * store is a whole vector, where a plain loop stores one float at a time. */
static void transpose(const float *x, long batch, long in, float *h, long stride, long width) {
    long j = 0;
#ifdef __AVX__
    for (; j + 8 <= in; j += 8)
        for (long s = 0; s < width; s += 8) {
            __m256 r[8], t[8];
            for (int k = 0; k < 8; k++)
                r[k] = s + k < batch ? _mm256_loadu_ps(x + (s + k) * in + j) : _mm256_setzero_ps();
            for (int k = 0; k < 8; k += 2)
                t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]), t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
            for (int k = 0; k < 8; k += 4) {
                r[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);
                r[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);
                r[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);
                r[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
            }
            for (int k = 0; k < 4; k++) {
                _mm256_storeu_ps(h + (j + k) * stride + s, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
                _mm256_storeu_ps(h + (j + k + 4) * stride + s, _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
            }
        }
#endif
    for (; j < in; j++)
        for (long s = 0; s < width; s++) h[j * stride + s] = s < batch ? x[s * in + j] : 0;
}

/* logits [batch][out] of x [batch][in], both row-major. scratch: room for 2 * features * width floats a thread,
 * features the widest layer. The batch goes in rounds of up to width samples a thread, each thread taking an
 * equal share of a round's vectors. */
void csr_forward(const layer_t *layers, int n_layers, const float *x, long batch, float *logits, float *scratch,
                 int threads, long width) {
    long in = layers[0].columns, out = layers[n_layers - 1].rows, features = in;
    for (int l = 0; l < n_layers; l++) features = layers[l].rows > features ? layers[l].rows : features;
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), n_threads = omp_get_num_threads();
        float *h = scratch + 2 * features * width * t, *o = h + features * width, *swap;  /* the thread's own two */
        for (long b0 = 0; b0 < batch; b0 += n_threads * width) {  /* in rounds of a slice of width for each thread */
            long round = batch - b0 < n_threads * width ? batch - b0 : n_threads * width;
            long vectors = (round + VEC - 1) / VEC;
            long v0 = vectors * t / n_threads, v1 = vectors * (t + 1) / n_threads;
            long s0 = b0 + v0 * VEC, s1 = b0 + v1 * VEC < b0 + round ? b0 + v1 * VEC : b0 + round;
            if (v1 == v0) continue;
            transpose(x + s0 * in, s1 - s0, in, h, width, (v1 - v0) * VEC);
            for (int l = 0; l < n_layers; l++) {
                (layers[l].dense ? dense_layer : sparse_layer)(layers + l, h, o, width, v1 - v0, l < n_layers - 1);
                swap = h, h = o, o = swap;
            }
            for (long s = s0; s < s1; s++)
                for (long r = 0; r < out; r++) logits[s * out + r] = h[r * width + s - s0];
        }
    }
}
