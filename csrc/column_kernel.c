/* The forward pass of a pruned MLP on one image: h = relu(W @ h) layer by layer, the last without ReLU, on one
 * thread or more. fastpath/plan.py builds the layers (column_plan) and calls column_forward for a batch of one.
 *
 * Why not csr_kernel.c's way: it puts samples in the lanes of a vector, and one image fills one lane of 8
 * (AVX2) or 16 (AVX-512). Nor a row's nonzeros in the lanes, fetching their activations by a gather, which
 * runs no faster than one nonzero at a time. What one image offers instead is zeros: after
 * a ReLU, 45-70 % of a trained net's activations are zero, so the product is taken column by column,
 * out += h[j] * W[:, j], and a column whose h[j] is zero is skipped with all its nonzeros, about half the
 * work. The input is not zero where it is blank, but constant:
 * x minus its first pixel (blank in MNIST-like images) is zero there, and W @ x = W @ (x - b) + b * (W @ 1)
 * for any b, so the first layer skips those columns too, and stays exact for any image.
 * Threads split a layer's columns, not its rows: each takes a share of the active columns into sums of its own,
 * and after a barrier each adds up every thread's sums into its own copy of the next activations. No line of
 * memory is written by two cores while they work, and each reads the other's sums once a layer. Split by rows
 * instead (each thread half of every layer's rows), each would read the half of the activations the other
 * wrote at every layer. Where two threads pay: fastpath/plan.py's TWO_THREADS_FROM.
 */
#ifdef _OPENMP
#include <omp.h>
#else  /* built without OpenMP (csrc/build.py): one thread */
static int omp_get_thread_num(void) { return 0; }
static int omp_get_num_threads(void) { return 1; }
#endif
#include <stdint.h>

typedef struct {             /* one layer; mirrored by kernel.ColumnLayer */
    const int32_t *start;    /* columns + 1: where each column's nonzeros start */
    const uint16_t *row;     /* the row of each nonzero */
    const float *val;        /* or, if dense, the whole matrix, column by column */
    const float *row_sum;    /* W @ 1, for the first layer; else NULL */
    int64_t rows, columns, dense;
} clayer_t;

/* sums [rows] = W @ (h - background) over the active columns active[q0..q1) of h, plus background * (W @ 1)
 * where asked: one thread's part of W @ h. */
static void partial_sums(const clayer_t *layer, const float *h, const int32_t *active, int64_t q0, int64_t q1,
                         float background, int with_background, float *restrict sums) {
    int64_t rows = layer->rows;
    for (int64_t i = 0; i < rows; i++) sums[i] = with_background ? background * layer->row_sum[i] : 0;
    for (int64_t q = q0; q < q1; q++) {
        int64_t j = active[q];
        float a = h[j] - background;
        if (layer->dense) {  /* as in a compacted unit-pruned net: a contiguous column, vectorised */
            const float *restrict w = layer->val + j * rows;
            for (int64_t i = 0; i < rows; i++) sums[i] += a * w[i];
        } else {
            if (q + 1 < q1) {  /* the next column's nonzeros, from L2 or L3: short runs the prefetcher misses */
                int64_t next = layer->start[active[q + 1]];
                __builtin_prefetch(layer->row + next);
                __builtin_prefetch(layer->val + next);
                __builtin_prefetch(layer->val + next + 16);
            }
            for (int64_t p = layer->start[j]; p < layer->start[j + 1]; p++) sums[layer->row[p]] += a * layer->val[p];
        }
    }
}

/* out [rows] = the sum of every thread's sums, then ReLU if asked. out may be the first thread's sums. */
static void add_sums(float *const *sums, int threads, int64_t rows, float *restrict out, int relu) {
    if (out != sums[0])
        for (int64_t i = 0; i < rows; i++) out[i] = sums[0][i];
    for (int t = 1; t < threads; t++) {
        const float *restrict s = sums[t];
        for (int64_t i = 0; i < rows; i++) out[i] += s[i];
    }
    if (relu)
        for (int64_t i = 0; i < rows; i++) out[i] = out[i] > 0 ? out[i] : 0;
}

/* The columns j of h [columns] where h[j] differs from `background`, into active; their number. Without a
 * branch: one per column, taken at random, cost more than the columns it skipped at 99 % sparsity. */
static int64_t active_columns(const float *h, int64_t columns, float background, int32_t *active) {
    int64_t n = 0;
    for (int64_t j = 0; j < columns; j++) {
        active[n] = (int32_t)j;
        n += h[j] != background;
    }
    return n;
}

/* Thread t's share of column_forward, in a team of n_threads: its share of every layer's active columns. */
static void forward_share(const clayer_t *layers, int n_layers, const float *x, float *logits, float *scratch,
                          int64_t features, int t, int n_threads) {
    float *h_own = scratch + 4 * features * t + 2 * features, *sums[n_threads];
    int32_t *active = (int32_t *)(h_own + features);
    const float *h = x;
    float background = layers[0].row_sum ? x[0] : 0;
    int64_t n = active_columns(x, layers[0].columns, background, active);
    for (int l = 0; l < n_layers; l++) {
        int last = l == n_layers - 1;
        for (int u = 0; u < n_threads; u++) sums[u] = scratch + 4 * features * u + (l % 2) * features;
        partial_sums(layers + l, h, active, n * t / n_threads, n * (t + 1) / n_threads, l ? 0 : background,
                     l == 0 && t == 0 && layers[0].row_sum, sums[t]);
        #pragma omp barrier
        if (!last) {  /* one thread's sums are the activations: no copy */
            float *next = n_threads == 1 ? sums[0] : h_own;
            add_sums(sums, n_threads, layers[l].rows, next, 1);
            n = active_columns(next, layers[l].rows, 0, active);
            h = next;
        } else if (t == 0) {
            add_sums(sums, n_threads, layers[l].rows, logits, 0);
        }
    }
}

/* logits [out] of one image x [in], on `threads` threads. scratch: room for 4 * features floats a thread,
 * features the widest layer rounded up to 16: its sums for two layers (the next layer's while another thread
 * may still read the last's), its copy of the activations and its list of the active columns. */
void column_forward(const clayer_t *layers, int n_layers, const float *x, float *logits, float *scratch, int threads) {
    int64_t features = layers[0].columns;
    for (int l = 0; l < n_layers; l++) features = layers[l].rows > features ? layers[l].rows : features;
    features = (features + 15) / 16 * 16;  /* each thread's memory in whole cache lines: none shared */
    if (threads == 1) {  /* no parallel region: entering one, even of one thread, costs as much as a short pass */
        forward_share(layers, n_layers, x, logits, scratch, features, 0, 1);
        return;
    }
    #pragma omp parallel num_threads(threads)
    forward_share(layers, n_layers, x, logits, scratch, features, omp_get_thread_num(), omp_get_num_threads());
}
