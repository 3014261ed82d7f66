/* out = W @ x, then ReLU if asked: one layer of the sparse path on the CPU (speed.py).
 *
 * W is CSR cut into column panels (PANEL columns each, set in speed.py): the nonzeros of row i in panel q
 * are col[p], val[p] for p in [crow[q * rows + i], crow[q * rows + i + 1]).
 * x is [in_features][width] and out is [rows][width], row-major, width a multiple of 8 (the batch, padded).
 *
 * Why it is shaped so (each step measured on this project's 2-core Zen 3; README, "Speed"):
 * - A nonzero w at (i, j) adds w * x[j] to out[i]: a scaled row of activations, 8 samples per AVX
 *   vector. The partial sums of a row stay in registers for a whole panel, so each nonzero costs its
 *   loads of x and its multiply-adds, with no load and store of out in between.
 * - Rows of x are read in the order of the nonzeros, not in sequence. A chunk of 64 samples of a
 *   panel of 128 rows of x is 32 KB, the size of the L1 cache: every chunk of out is built panel by
 *   panel, so the activations it reads come from L1.
 * - Threads take equal blocks of rows: they share x (read-only) and write disjoint rows of out.
 */
#include <omp.h>
#include <stdint.h>

typedef float vec __attribute__((vector_size(32), aligned(4)));  /* 8 floats; loads need only 4-byte alignment */
typedef int ivec __attribute__((vector_size(32), aligned(4)));
enum { CHUNK = 8 };  /* vectors per chunk: 8 partial sums, a broadcast weight and loads fit AVX2's 16 registers */

/* n vectors of out[i] from the nonzeros in [p, end). Inlined with n a constant, so acc lives in registers. */
static inline __attribute__((always_inline)) void chunk_of_row(const int *col, const float *val, int64_t p, int64_t end,
        const float *x, long width, float *out, int n, int first_panel, int relu) {
    vec acc[CHUNK], *o = (vec *)out;
    for (int v = 0; v < n; v++) acc[v] = first_panel ? (vec){0} : o[v];
    for (; p < end; p++) {
        const vec *x_row = (const vec *)(x + (long)col[p] * width);
        float w = val[p];
        for (int v = 0; v < n; v++) acc[v] += w * x_row[v];
    }
    for (int v = 0; v < n; v++) o[v] = relu ? (vec)((ivec)acc[v] & (acc[v] > 0)) : acc[v];
}

void csr_matmul(const int64_t *crow, const int *col, const float *val, const float *x, float *out,
                long rows, long panels, long width, int relu, int threads) {
    #pragma omp parallel num_threads(threads)
    {
        int thread = omp_get_thread_num(), n_threads = omp_get_num_threads();
        long first_row = rows * thread / n_threads, end_row = rows * (thread + 1) / n_threads;
        for (long v0 = 0; v0 < width / 8; v0 += CHUNK) {
            long n = width / 8 - v0 < CHUNK ? width / 8 - v0 : CHUNK;
            for (long q = 0; q < panels; q++) {
                const int64_t *starts = crow + q * rows;
                int first = q == 0, last = relu && q == panels - 1;
                for (long i = first_row; i < end_row; i++) {
                    if (starts[i] == starts[i + 1] && !first && !last) continue;  /* a row with nothing to add here */
                    const float *xs = x + v0 * 8;
                    float *os = out + i * width + v0 * 8;
                    switch (n) {  /* one inlined copy per chunk size: the last chunk of a batch may be short */
                        #define CASE(k) case k: chunk_of_row(col, val, starts[i], starts[i + 1], xs, width, os, k, first, last); break;
                        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
                    }
                }
            }
        }
    }
}
