"""gmp: gradual magnitude pruning (Zhu & Gupta 2017), for train.py --sparse gmp and gmp-global. Each hidden
layer's sparsity rises from 0 to the target on the cubic schedule s_t = s_f · (1 − (1 − (t − t0) / (n·Δt))³), the
masks recomputed from |w| every Δt steps, the pruned weights held at exactly zero after each step
(prune.hold_at_zero), so that the net trains on with what it keeps; once a layer's mask prunes most of it, its
steps cost what its kept weights do (masked.py). The schedule starts after GMP_START of the training steps and
ends at GMP_END, leaving the rest to train the final masks, as the paper's schedules do. gmp-global ranks the
hidden layers' weights together, as global pruning does, so that each layer ends with the sparsity its
magnitudes earn it.
"""
import torch

from prune import global_magnitude, hold_at_zero, per_layer, weight_mask
from sparse_training.kept import keep_trained
from sparse_training.masked import mask_hidden, prunes_most

GMP_START, GMP_END, GMP_EVERY = 0.1, 0.7, 100  # shares of the training steps, and Δt in steps
RULES = {"gmp": per_layer(weight_mask), "gmp-global": global_magnitude}  # each layer to the target, or all together


def gmp_sparsity(step, target, start, end):
    """Zhu & Gupta's sparsity (a fraction) at `step`: 0 before `start`, `target` from `end` on."""
    if step < start:
        return 0.0
    progress = min(1.0, (step - start) / (end - start))
    return target * (1 - (1 - progress) ** 3)


def layer_shares(counts, model):
    """Each hidden layer's final sparsity over the net's, where the layers are to keep `counts` weights (ERK's):
    the schedule moves each layer in proportion, to its own sparsity at the end."""
    sizes = [layer.weight.numel() for layer in model.hidden]
    fraction = 1 - sum(counts) / sum(sizes)
    return [(1 - count / size) / fraction for count, size in zip(counts, sizes)]


def gradual_magnitude_pruning(model, target, steps, every=GMP_EVERY, rule=RULES["gmp"], shares=None, optimizer=None):
    """Put masks on the hidden layers of `model` (each layer's weight_mask) and return the function to call after
    each training step, which holds the pruned weights at zero and recomputes the masks by `rule` (one of RULES)
    every `every` steps and at the last of `steps`, to `target` percent at the end; `shares` (per-layer rules
    only), each layer's sparsity over the net's (layer_shares), where they are not all at the target.

    Once the masks reach the target, from GMP_END of the steps on, they no longer change: recomputed from the
    masked weights, the pruned ones zero, they keep what they keep. Given the `optimizer`, the hidden layers then
    become KeptLinear layers of their kept weights, where every mask prunes SPARSE_FROM or more, so that the last
    steps cost the nonzeros in the optimizer and the L1 term too, not only in the products."""
    if shares is not None:
        rule = lambda weights, fraction: [weight_mask(w, fraction * share) for w, share in zip(weights, shares)]
    masks = [torch.ones_like(layer.weight) for layer in model.hidden]
    mask_hidden(model, masks)  # their products over the kept weights only, once the masks prune most
    zero_pruned = hold_at_zero(model.hidden, masks)
    start = round(GMP_START * steps)
    end, done = max(round(GMP_END * steps), start + 1), [0]

    def after_step():
        if done[0] < 0:  # kept layers: nothing is left to prune or to hold
            return
        zero_pruned()
        done[0] += 1
        if done[0] % every == 0 or done[0] == steps:
            final = done[0] >= end
            fraction = gmp_sparsity(done[0], target / 100, start, end) if not final else target / 100
            with torch.no_grad():  # from the masked weights: a pruned one is 0, so it stays pruned
                for mask, new in zip(masks, rule([layer.weight for layer in model.hidden], fraction)):
                    mask.copy_(new)
            zero_pruned()
            if final and optimizer is not None and all(prunes_most(m) for m in masks):
                keep_trained(model, masks, optimizer)
                done[0] = -1
    return after_step
