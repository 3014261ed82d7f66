/* The costly part of a training step of sparse variational dropout (sparse_training/vd.py), in one pass over a layer:
 * from each weight's θ and log σ², its σ², its KL term and the KL's derivatives in θ and log σ².
 *
 * In torch these took a dozen passes over the layer, forward and backward, each reading and writing tensors
 * the size of the layer. Here each weight is read once and its four results written
 * once; the exponentials and logarithms are glibc's vector ones (libmvec), which GCC calls only under
 * -ffast-math. csrc/build.py compiles this file so, and links it without, as GCC before 13 would otherwise link
 * in code that sets the CPU to flush subnormal floats to zero for the whole process.
 *
 * log α = log σ² − log(θ² + ε); KL ≈ k1 − k1 s + ½ log(1 + 1/α), s = sigmoid(k2 + k3 log α) (Molchanov et al.
 * 2017), with log(1 + 1/α) = log(σ² + θ² + ε) − log σ²; d KL / d log α = −k1 k3 s (1 − s) − ½ (θ² + ε) / (σ² + θ²
 * + ε). s (1 − s) is taken as e s², e = exp(−(k2 + k3 log α)): 1 − s would round to 0 where s nears 1.
 */
#include <math.h>
#include <stdint.h>

#define K1 0.63576f
#define K2 1.87320f
#define K3 1.48695f
#define EPS 1e-8f

/* Writes σ² to variance and the derivatives of the KL to d_theta and d_log_sigma2; returns Σ KL. */
double vd_terms(const float *restrict theta, const float *restrict log_sigma2, float *restrict variance,
                float *restrict d_theta, float *restrict d_log_sigma2, int64_t n, int threads)
{
    double kl = 0;
    #pragma omp parallel for simd num_threads(threads) schedule(static) reduction(+:kl)
    for (int64_t i = 0; i < n; i++) {
        float w = theta[i], log_s2 = log_sigma2[i];
        float s2 = expf(log_s2), squared = w * w + EPS, total = s2 + squared;
        float e = expf(-(K2 + K3 * (log_s2 - logf(squared)))), s = 1.f / (1.f + e);
        kl += K1 - K1 * s + 0.5f * (logf(total) - log_s2);
        float d_log_alpha = -K1 * K3 * e * s * s - 0.5f * squared / total;
        variance[i] = s2;
        d_log_sigma2[i] = d_log_alpha;
        d_theta[i] = -2.f * d_log_alpha * w / squared;  /* d log α / dθ = −2θ / (θ² + ε) */
    }
    return kl;
}
