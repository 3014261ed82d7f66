/* The three matrix products of a training step of a pruned layer, over its mask's nonzeros only
 * (sparse_training/masked.py). Activations are feature-major, [features][width], width the batch: each nonzero then
 * scales or meets a whole row of the batch, VEC samples a vector.
 *
 * A layer's mask is given twice, as lists of nonzeros by row of W (for y = W x) and by column (for the
 * gradient of x, W^T g): for each output row r, its nonzeros p in [start[r], start[r + 1]), each reading
 * the row of activations index[p] and the weight w[at[p]] of the dense, row-major W. The weights are read
 * where they are, so that the optimizer updates W as it would a dense layer, and nothing is copied a step.
 */
#include <stdint.h>
#include <string.h>

#define VEC 8        /* floats per vector: AVX2's; AVX-512 runs them too */
#define MAX_CHUNK 8  /* vectors of sums in registers: with FMA's latency of 4 and two a cycle, 8 keep both busy */
/* Nonzeros ahead whose rows of activations are fetched: the rows lie in the L2 cache, in an order no hardware
 * prefetcher follows; 4 to 16 ahead all cover the L2's latency (python benchmarks/masked_layer.py times the
 * products). */
#define PREFETCH 8
typedef float vec __attribute__((vector_size(VEC * 4), aligned(4)));  /* loads need only 4-byte alignment */

/* n vectors of out's row from the nonzeros in [p, end). Inlined with n a constant, so acc lives in registers. */
static inline __attribute__((always_inline)) void row_chunk(const int32_t *index, const int32_t *at, const float *w,
        int64_t p, int64_t end, const float *h, long width, float *out, int n) {
    vec acc[MAX_CHUNK];
    for (int v = 0; v < n; v++) acc[v] = (vec){0};
    for (; p < end; p++) {
        const vec *h_row = (const vec *)(h + (long)index[p] * width);
        if (p + PREFETCH < end)  /* a cache line holds two vectors */
            for (int v = 0; v < n; v += 2) __builtin_prefetch(h + (long)index[p + PREFETCH] * width + v * VEC);
        float weight = w[at[p]];
        for (int v = 0; v < n; v++) acc[v] += weight * h_row[v];
    }
    for (int v = 0; v < n; v++) ((vec *)out)[v] = acc[v];
}

/* out[r][:] = sum over r's nonzeros p of w[at[p]] * h[index[p]][:], for each of `rows` rows. */
void masked_product(const int64_t *start, const int32_t *index, const int32_t *at, const float *w, const float *h,
                    float *out, long rows, long width, int threads) {
    long vectors = width / VEC;
    #pragma omp parallel for num_threads(threads) schedule(dynamic, 16)
    for (long r = 0; r < rows; r++) {
        float *o = out + r * width;
        for (long v0 = 0; v0 < vectors; v0 += MAX_CHUNK) {
            long n = vectors - v0 < MAX_CHUNK ? vectors - v0 : MAX_CHUNK;
            switch (n) {  /* one inlined copy per chunk size */
                #define CASE(k) case k: row_chunk(index, at, w, start[r], start[r + 1], h + v0 * VEC, width, \
                                                  o + v0 * VEC, k); break;
                CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
            }
        }
        for (long s = vectors * VEC; s < width; s++) {  /* the samples past the last whole vector */
            float sum = 0;
            for (int64_t p = start[r]; p < start[r + 1]; p++) sum += w[at[p]] * h[(long)index[p] * width + s];
            o[s] = sum;
        }
    }
}

/* The weights' gradient: g[r][:] . h[index[p]][:] at grad[at[p]] for each nonzero p of each row r. Where grad is the
 * dense [rows][columns] gradient of W, it is 0 where the mask prunes: each row is zeroed here, just before its
 * nonzeros are written, while it is in the cache (zeroing the whole matrix first took a pass over memory of its
 * own). Where grad holds the kept weights only (sparse_training/kept.py), every element is written and columns is
 * 0: nothing is zeroed, and the gradient costs the nonzeros alone. Four nonzeros at a time, each with two sums, so
 * that a load of g serves four multiply-adds. */
void masked_gradient(const int64_t *start, const int32_t *index, const int32_t *at, const float *g, const float *h,
                     float *grad, long rows, long width, int threads, long columns) {
    long vectors = width / VEC;
    #pragma omp parallel for num_threads(threads) schedule(dynamic, 16)
    for (long r = 0; r < rows; r++) {
        if (columns) memset(grad + r * columns, 0, columns * sizeof(float));
        const float *g_row = g + r * width;
        const vec *gv = (const vec *)g_row;
        int64_t p = start[r], end = start[r + 1];
        for (; p + 3 < end; p += 4) {
            const vec *h0 = (const vec *)(h + (long)index[p] * width);
            const vec *h1 = (const vec *)(h + (long)index[p + 1] * width);
            const vec *h2 = (const vec *)(h + (long)index[p + 2] * width);
            const vec *h3 = (const vec *)(h + (long)index[p + 3] * width);
            vec a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
            long v = 0;
            for (; v + 1 < vectors; v += 2) {
                vec x = gv[v], y = gv[v + 1];
                a0 += x * h0[v], a1 += x * h1[v], a2 += x * h2[v], a3 += x * h3[v];
                b0 += y * h0[v + 1], b1 += y * h1[v + 1], b2 += y * h2[v + 1], b3 += y * h3[v + 1];
            }
            if (v < vectors) {
                vec x = gv[v];
                a0 += x * h0[v], a1 += x * h1[v], a2 += x * h2[v], a3 += x * h3[v];
            }
            vec sums[4] = {a0 + b0, a1 + b1, a2 + b2, a3 + b3};
            for (int k = 0; k < 4; k++) {
                float sum = 0;
                for (int lane = 0; lane < VEC; lane++) sum += sums[k][lane];
                for (long s = vectors * VEC; s < width; s++) sum += g_row[s] * h[(long)index[p + k] * width + s];
                grad[at[p + k]] = sum;
            }
        }
        for (; p < end; p++) {
            const float *h_row = h + (long)index[p] * width;
            vec a = {0};
            for (long v = 0; v < vectors; v++) a += gv[v] * ((const vec *)h_row)[v];
            float sum = 0;
            for (int lane = 0; lane < VEC; lane++) sum += a[lane];
            for (long s = vectors * VEC; s < width; s++) sum += g_row[s] * h_row[s];
            grad[at[p]] = sum;
        }
    }
}
