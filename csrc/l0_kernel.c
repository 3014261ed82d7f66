/* The costly part of a training step of L0 regularisation with a gate per weight (sparse_training/l0.py), in one pass
 * over a layer: each gate's uniform noise, the gate, the gated weight, the gate's slope in log α, and the gate's
 * chance of being open with its derivative, for the penalty. And the backward, in one more.
 *
 * In torch these took a dozen passes over the layer, forward and backward, the noise drawn by torch's generator
 * in one of its own. The noise here is a hash of the weight's index and a seed
 * drawn from torch's generator each step: the same gates for the same seed on any number of threads, and three
 * multiplies a weight where a generator that carries its state from one number to the next cannot be
 * vectorised. The exponentials and logarithms are glibc's vector ones, under -ffast-math, as for vd_kernel.c.
 *
 * u uniform in (0, 1); s = sigmoid((logit u + log α) / β); z = clip(s (ζ − γ) + γ, 0, 1), the gate;
 * dz / d log α = (ζ − γ) s (1 − s) / β where the clip leaves z alone, else 0;
 * P(z ≠ 0) = sigmoid(log α − β log(−γ/ζ)) (Louizos et al. 2018).
 */
#include <math.h>
#include <stdint.h>

#define BETA (2.f / 3.f)
#define GAMMA (-0.1f)
#define ZETA 1.1f
#define EPS 1e-6f  /* u kept in [ε, 1 − ε], as torch.logit(u, eps=1e-6) keeps it */

static inline uint32_t mix(uint32_t h) {  /* MurmurHash3's finaliser: each bit of h flips about half of the result's */
    h ^= h >> 16, h *= 0x85ebca6bu, h ^= h >> 13, h *= 0xc2b2ae35u;
    return h ^ (h >> 16);
}

#define BLOCK 64  /* weights a vectorised pass takes at once: every weight in the same lane on any thread count */

/* The terms of the weights [first, first + BLOCK), those past `valid` left out of the sum; returns Σ P(open). */
static inline float gate_block(const float *restrict weight, const float *restrict log_alpha, float *restrict gated,
                               float *restrict gates, float *restrict slope, float *restrict d_open, int64_t first,
                               int valid, uint32_t seed)
{
    const float s0 = -GAMMA / (ZETA - GAMMA), shift = BETA * logf(-GAMMA / ZETA);
    float open = 0;
    #pragma omp simd reduction(+:open)
    for (int k = 0; k < BLOCK; k++) {
        uint32_t index = (uint32_t)(first + k);
        float u = ((mix(index * 0x9e3779b9u + seed) >> 8) + 0.5f) * (1.f / 16777216.f);  /* 24 bits */
        u = fminf(fmaxf(u, EPS), 1.f - EPS);
        float s = 1.f / (1.f + expf(-(logf(u / (1.f - u)) + log_alpha[k]) / BETA));
        float z = fminf(fmaxf(s * (ZETA - GAMMA) + GAMMA, 0.f), 1.f);
        float ss = s * (1.f - s);
        gates[k] = z;
        gated[k] = weight[k] * z;
        slope[k] = ss > s0 * (1.f - s0) ? (ZETA - GAMMA) / BETA * ss : 0.f;
        float p = 1.f / (1.f + expf(shift - log_alpha[k]));
        open += k < valid ? p : 0.f;
        d_open[k] = p * (1.f - p);
    }
    return open;
}

/* Writes the gated weights, the gates, their slopes and d P(open) / d log α; returns Σ P(open). Whole blocks in
 * place; the last, partial one through a padded copy, so that it too runs the vectorised pass. */
double l0_gates(const float *restrict weight, const float *restrict log_alpha, float *restrict gated,
                float *restrict gates, float *restrict slope, float *restrict d_open, int64_t n, uint32_t seed,
                int threads)
{
    int64_t blocks = n / BLOCK;
    double open = 0;
    #pragma omp parallel for num_threads(threads) schedule(static) reduction(+:open)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t i = b * BLOCK;
        open += gate_block(weight + i, log_alpha + i, gated + i, gates + i, slope + i, d_open + i, i, BLOCK, seed);
    }
    int valid = (int)(n - blocks * BLOCK);
    if (valid) {
        float in[2][BLOCK] = {{0}}, out[4][BLOCK];
        int64_t i = blocks * BLOCK;
        for (int k = 0; k < valid; k++) in[0][k] = weight[i + k], in[1][k] = log_alpha[i + k];
        open += gate_block(in[0], in[1], out[0], out[1], out[2], out[3], i, valid, seed);
        for (int k = 0; k < valid; k++)
            gated[i + k] = out[0][k], gates[i + k] = out[1][k], slope[i + k] = out[2][k], d_open[i + k] = out[3][k];
    }
    return open;
}

/* From the gradient of the gated weights and of Σ P(open), those of the weights and of log α. */
void l0_backward(const float *restrict grad, const float *restrict weight, const float *restrict gates,
                 const float *restrict slope, const float *restrict d_open, float grad_open,
                 float *restrict grad_weight, float *restrict grad_log_alpha, int64_t n, int threads)
{
    #pragma omp parallel for simd num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        grad_weight[i] = grad[i] * gates[i];
        grad_log_alpha[i] = grad[i] * weight[i] * slope[i] + grad_open * d_open[i];
    }
}
