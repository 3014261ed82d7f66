/* The forward pass of a pruned MLP on the CPU, every layer in one call: h = relu(W @ h), the last
 * layer without ReLU. speed.py builds the layers (sparse_plan) and calls csr_forward.
 *
 * W is CSR cut into column panels: the nonzeros of row i in panel q are col[p], val[p] for p in
 * [crow[q * rows + i], crow[q * rows + i + 1]). The activations are kept [features][width], row-major,
 * width the batch padded to whole vectors.
 *
 * Why it is shaped so (each step measured by benchmarks/timing.py; README, "Speed"):
 * - A nonzero w at (i, j) adds w * h[j] to out[i]: a scaled row of activations, VEC samples per vector.
 *   The partial sums of a row stay in registers while its nonzeros stream past, so each nonzero costs
 *   its loads of h[j] and its multiply-adds, with no load and store of out[i] in between. With AVX-512
 *   (32 registers of 16 floats) a batch of up to 256 takes one pass over the nonzeros.
 * - Rows of h are read in the order of the nonzeros, not in sequence. A panel's rows of h are sized by
 *   speed.py to the L1 cache, so that they are read from there; where the rows are too sparse for
 *   that to pay (fewer than a few nonzeros of a row per panel), there is one panel.
 * - One parallel region for the whole net, a barrier between layers: threads share h (read-only) and
 *   write disjoint rows of out, each thread's rows holding an equal share of the nonzeros (the rows
 *   that pruning leaves are very uneven, and whole units die).
 */
#include <omp.h>
#include <stdint.h>

#ifdef __AVX512F__
#define VEC 16        /* floats per vector */
#define MAX_CHUNK 16  /* vectors of partial sums held in registers: 16 of AVX-512's 32 */
#else
#define VEC 8
#define MAX_CHUNK 12  /* AVX2's 16 registers: 12 sums, a broadcast weight and a load */
#endif
typedef float vec __attribute__((vector_size(VEC * 4), aligned(4)));  /* loads need only 4-byte alignment */
typedef int ivec __attribute__((vector_size(VEC * 4), aligned(4)));

typedef struct {             /* one layer; mirrored by speed.Layer */
    const int64_t *crow;     /* panels * rows + 1 starts */
    const int32_t *col;
    const float *val;
    const int64_t *split;    /* threads + 1: the first row of each thread */
    int64_t rows, columns, panels;
} layer_t;

int vector_width(void) { return VEC; }

/* n vectors of out[i] from the nonzeros in [p, end). Inlined with n a constant, so acc lives in registers. */
static inline __attribute__((always_inline)) void chunk_of_row(const int32_t *col, const float *val, int64_t p,
        int64_t end, const float *h, long width, float *out, int n, int first_panel, int relu) {
    vec acc[MAX_CHUNK], *o = (vec *)out;
    for (int v = 0; v < n; v++) acc[v] = first_panel ? (vec){0} : o[v];
    for (; p < end; p++) {
        const vec *h_row = (const vec *)(h + (long)col[p] * width);
        float w = val[p];
        for (int v = 0; v < n; v++) acc[v] += w * h_row[v];
    }
    for (int v = 0; v < n; v++) o[v] = relu ? (vec)((ivec)acc[v] & (acc[v] > 0)) : acc[v];
}

/* Rows [first_row, end_row) of out = W @ h, then ReLU if asked. */
static void layer_rows(const layer_t *layer, const float *h, float *out, long width, long first_row, long end_row,
                       int relu) {
    /* The batch in as few passes over the nonzeros as the registers allow, in chunks of equal size. */
    long vectors = width / VEC, passes = (vectors + MAX_CHUNK - 1) / MAX_CHUNK, chunk = (vectors + passes - 1) / passes;
    for (long v0 = 0; v0 < vectors; v0 += chunk) {
        long n = vectors - v0 < chunk ? vectors - v0 : chunk;
        for (long q = 0; q < layer->panels; q++) {
            const int64_t *starts = layer->crow + q * layer->rows;
            int first = q == 0, last = relu && q == layer->panels - 1;
            for (long i = first_row; i < end_row; i++) {
                if (starts[i] == starts[i + 1] && !first && !last) continue;  /* nothing to add here */
                const float *hs = h + v0 * VEC;
                float *os = out + i * width + v0 * VEC;
                switch (n) {  /* one inlined copy per chunk size */
                    #define CASE(k) case k: chunk_of_row(layer->col, layer->val, starts[i], starts[i + 1], hs, width, \
                                                         os, k, first, last); break;
                    CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) CASE(9) CASE(10) CASE(11) CASE(12)
#if MAX_CHUNK > 12
                    CASE(13) CASE(14) CASE(15) CASE(16)
#endif
                }
            }
        }
    }
}

/* logits [batch][out] of x [batch][in], both row-major; a and b: room for [features][width] each. */
void csr_forward(const layer_t *layers, int n_layers, const float *x, long batch, float *logits, float *a, float *b,
                 int threads) {
    long width = (batch + VEC - 1) / VEC * VEC, in = layers[0].columns, out = layers[n_layers - 1].rows;
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), n_threads = omp_get_num_threads();
        for (long j = in * t / n_threads; j < in * (t + 1) / n_threads; j++) {  /* x, transposed and padded */
            for (long s = 0; s < batch; s++) a[j * width + s] = x[s * in + j];
            for (long s = batch; s < width; s++) a[j * width + s] = 0;
        }
        #pragma omp barrier
        float *h = a, *o = b, *swap;
        for (int l = 0; l < n_layers; l++) {
            const int64_t *split = layers[l].split;  /* planned for `threads`; fewer granted take several shares */
            layer_rows(layers + l, h, o, width, split[threads * t / n_threads], split[threads * (t + 1) / n_threads],
                       l < n_layers - 1);
            #pragma omp barrier
            swap = h, h = o, o = swap;
        }
        #pragma omp for
        for (long s = 0; s < batch; s++)
            for (long r = 0; r < out; r++) logits[s * out + r] = h[r * width + s];
    }
}
