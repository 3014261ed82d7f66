"""Training the net to be sparse, from its initialisation, rather than pruning it after training.

gmp: gradual magnitude pruning (Zhu & Gupta 2017). Each hidden layer's sparsity rises from 0 to the target
on the cubic schedule s_t = s_f · (1 − (1 − (t − t0) / (n·Δt))³), the masks recomputed from |w| every Δt
steps, the pruned weights held at exactly zero by the masks (torch.nn.utils.prune), so that the net trains
on with what it keeps. The schedule starts after GMP_START of the training steps and ends at GMP_END,
leaving the rest to train the final masks, as the paper's schedules do.
"""
import torch
from torch.nn.utils import prune as torch_prune

from prune import weight_mask

GMP_START, GMP_END, GMP_EVERY = 0.1, 0.7, 100  # shares of the training steps, and Δt in steps


def gmp_sparsity(step, target, start, end):
    """Zhu & Gupta's sparsity (a fraction) at `step`: 0 before `start`, `target` from `end` on."""
    if step < start:
        return 0.0
    progress = min(1.0, (step - start) / (end - start))
    return target * (1 - (1 - progress) ** 3)


def gradual_magnitude_pruning(model, target, steps, every=GMP_EVERY):
    """Put masks on the hidden layers of `model` and return the function to call after each training step,
    which recomputes them every `every` steps and at the last of `steps`, to `target` percent at the end."""
    for layer in model.hidden:
        torch_prune.custom_from_mask(layer, "weight", torch.ones_like(layer.weight))
    start, end, done = round(GMP_START * steps), max(round(GMP_END * steps), round(GMP_START * steps) + 1), [0]

    def after_step():
        done[0] += 1
        if done[0] % every == 0 or done[0] == steps:
            fraction = gmp_sparsity(done[0], target / 100, start, end) if done[0] < steps else target / 100
            with torch.no_grad():
                for layer in model.hidden:  # from the masked weights: a pruned one is 0, so it stays pruned
                    layer.weight_mask.copy_(weight_mask(layer.weight_orig * layer.weight_mask, fraction))
    return after_step


def remove_masks(model):
    """The masks folded into the weights, so that the model saves as a plain MLP."""
    for layer in model.hidden:
        if torch_prune.is_pruned(layer):
            torch_prune.remove(layer, "weight")
    return model
