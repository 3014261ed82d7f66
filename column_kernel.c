/* The forward pass of a pruned MLP on one image: h = relu(W @ h) layer by layer, the last without ReLU, on one
 * thread. kernel.py builds the layers (column_plan) and calls column_forward for a batch of one.
 *
 * Why not csr_kernel.c's way: it puts samples in the lanes of a vector, and one image fills one lane of 8
 * (AVX2) or 16 (AVX-512). Nor a row's nonzeros in the lanes, fetching their activations by a gather: on the
 * AMD Zen 3 here that ran no faster than one nonzero at a time. What one image offers instead is zeros: after
 * a ReLU, 45-70 % of a trained net's activations are zero, so the product is taken column by column,
 * out += h[j] * W[:, j], and a column whose h[j] is zero is skipped with all its nonzeros (2-3x less work
 * at 90-99 % sparsity, measured on Fashion-MNIST). The input is not zero where it is blank, but constant:
 * x minus its first pixel (blank in MNIST-like images) is zero there, and W @ x = W @ (x - b) + b * (W @ 1)
 * for any b, so the first layer skips those columns too, and stays exact for any image.
 * One thread: two, each taking half of every layer's rows and meeting at a barrier after it, ran no faster here.
 */
#include <stdint.h>

typedef struct {             /* one layer; mirrored by kernel.ColumnLayer */
    const int32_t *start;    /* columns + 1: where each column's nonzeros start */
    const uint16_t *row;     /* the row of each nonzero */
    const float *val;        /* or, if dense, the whole matrix, column by column */
    const float *row_sum;    /* W @ 1, for the first layer; else NULL */
    int64_t rows, columns, dense;
} clayer_t;

/* out = W @ h, then ReLU if asked. `active` lists the n columns of h
 * that are not zero (not the background, for the first layer). */
static void layer_forward(const clayer_t *layer, const float *h, const int32_t *active, int64_t n, float *restrict out,
                          int relu) {
    int64_t rows = layer->rows;
    float background = layer->row_sum ? h[0] : 0;
    for (int64_t i = 0; i < rows; i++) out[i] = layer->row_sum ? background * layer->row_sum[i] : 0;
    for (int64_t q = 0; q < n; q++) {
        int64_t j = active[q];
        float a = h[j] - background;
        if (layer->dense) {  /* as in a compacted unit-pruned net: a contiguous column, vectorised */
            const float *restrict w = layer->val + j * rows;
            for (int64_t i = 0; i < rows; i++) out[i] += a * w[i];
        } else {
            if (q + 1 < n) {  /* the next column's nonzeros, from L2 or L3: short runs the prefetcher misses */
                int64_t next = layer->start[active[q + 1]];
                __builtin_prefetch(layer->row + next);
                __builtin_prefetch(layer->val + next);
                __builtin_prefetch(layer->val + next + 16);
            }
            for (int64_t p = layer->start[j]; p < layer->start[j + 1]; p++) out[layer->row[p]] += a * layer->val[p];
        }
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

/* logits [out] of one image x [in]. scratch: room for 2 * features floats and features int32s, features the
 * widest layer. */
void column_forward(const clayer_t *layers, int n_layers, const float *x, float *logits, float *scratch) {
    int64_t features = layers[0].columns;
    for (int l = 0; l < n_layers; l++) features = layers[l].rows > features ? layers[l].rows : features;
    int32_t *active = (int32_t *)(scratch + 2 * features);
    const float *h = x;
    int64_t n = active_columns(x, layers[0].columns, layers[0].row_sum ? x[0] : 0, active);
    for (int l = 0; l < n_layers; l++) {
        int last = l == n_layers - 1;
        float *out = last ? logits : scratch + (l % 2) * features;
        layer_forward(layers + l, h, active, n, out, !last);
        if (!last) n = active_columns(out, layers[l + 1].columns, 0, active);
        h = out;
    }
}
