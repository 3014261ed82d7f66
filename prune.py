"""The pruning methods, and what acts on their masks: applying them, holding them, measuring sparsity.

A method takes the hidden layers' weight matrices, in order, and the fraction of weights to remove,
and returns one 0/1 mask per matrix (0: pruned); one of SCORE_METHODS takes the scores that training to be
sparse learned (train.py --sparse vd, l0) in place of the weights. A rule that looks at one matrix at a time is a plain
function of (weight, fraction), lifted to the whole list by per_layer. A method may draw random numbers
from torch's default generator: prune() seeds it from --seed, so the same seed gives the same masks; eval.py seeds
each checkpoint's from --seed and the checkpoint's file (mask_seed), so that every checkpoint draws its own.
"""
import copy
import hashlib

import torch
from torch.nn.utils import prune as torch_prune



def mask_smallest(scores, n):
    """A 0/1 mask shaped like `scores`, with zeros at its n smallest entries.

    Ties go to the lower index (a stable sort), so the mask is the same on every run and device, and
    the mask for a larger n contains the one for a smaller n. torch.topk, behind torch.nn.utils.prune's
    l1_unstructured and ln_structured, promises neither: ln_structured gives masks that are not nested
    when rows have equal norms.

    The mask is the one a stable sort gives, found without sorting: the n-th smallest score by kthvalue, zeros
    below it, and at it as many of the tied entries, the lowest indices first, as make n: a selection costs less
    than a sort of the whole matrix, and train.py --sparse gmp recomputes its masks every 100 steps.
    """
    flat = scores.flatten()
    mask = torch.ones(flat.numel(), device=scores.device)
    if flat.isnan().any():  # a sort puts NaN last; kthvalue does not say where
        mask[flat.argsort(stable=True)[:n]] = 0
    elif n >= flat.numel():
        mask.zero_()
    elif n > 0:
        threshold = flat.kthvalue(n).values
        up_to = flat <= threshold
        if int(up_to.sum()) == n:  # no tie across the cut, as for a layer at the sparsity it has
            mask[up_to] = 0
        else:
            below = flat < threshold
            mask[below] = 0
            mask[(flat == threshold).nonzero().flatten()[:n - int(below.sum())]] = 0
    return mask.view_as(scores)


def per_layer(rule):
    """The method that applies rule(weight, fraction) to each matrix on its own."""
    def method(weights, fraction):
        return [rule(weight, fraction) for weight in weights]
    method.__doc__ = rule.__doc__
    return method


def weight_mask(weight, fraction):
    """Zero the round(fraction * numel) weights of the smallest magnitude."""
    return mask_smallest(weight.abs(), round(fraction * weight.numel()))


def unit_mask(weight, fraction):
    """Zero the round(fraction * out_features) output units (rows) of the smallest L2 norm."""
    rows = mask_smallest(weight.norm(dim=1), round(fraction * weight.shape[0]))
    return rows[:, None].expand_as(weight).contiguous()


def random_mask(weight, fraction):
    """Zero round(fraction * numel) weights drawn uniformly: the control every other method must beat."""
    return mask_smallest(torch.rand(weight.shape).to(weight.device), round(fraction * weight.numel()))


def smallest_across(scores, fraction):
    """Masks with zeros at the round(fraction * N) smallest of all the matrices of `scores` together (N:
    their total count)."""
    flat = torch.cat([score.flatten() for score in scores])
    mask = mask_smallest(flat, round(fraction * len(flat)))
    return [part.view_as(score) for part, score in zip(mask.split([s.numel() for s in scores]), scores)]


def global_magnitude(weights, fraction):
    """Zero the round(fraction * N) weights of smallest |w| across all the matrices together (N: their
    total count), so that each layer ends with the sparsity its magnitudes earn it."""
    return smallest_across([weight.abs() for weight in weights], fraction)


def learned(scores, fraction):
    """Zero the round(fraction * N) weights that training to be sparse scored lowest, across all the matrices
    together (the checkpoint's scores: vd's −log α, l0's gate locations), not their magnitudes."""
    return smallest_across(scores, fraction)


METHODS = {
    "weight": per_layer(weight_mask),
    "unit": per_layer(unit_mask),
    "global": global_magnitude,
    "random": per_layer(random_mask),
}
SCORE_METHODS = {"learned": learned}  # given the scores a checkpoint learned instead of its weights: its own only


def masks(model, method, k, seed=0, scores=None):
    """The 0/1 masks that METHODS[method] gives the hidden layers of `model` at k percent, with every weight
    that is zero already pruned too: a pruned net that was saved and loaded again stays pruned, whatever the
    method, and its zeros stay zero while it is fine-tuned. `scores`: the checkpoint's learned scores, for
    the methods that rank them."""
    weights = [layer.weight.detach() for layer in model.hidden]
    if method in SCORE_METHODS:
        rule, ranked = SCORE_METHODS[method], [score.to(weights[0].device) for score in scores]
    else:
        rule, ranked = METHODS[method], weights
    with torch.random.fork_rng(devices=[]):  # a method's draws are seeded here, and leave no trace outside
        torch.manual_seed(seed)
        return [mask * weight.ne(0) for mask, weight in zip(rule(ranked, k / 100), weights)]


def mask_seed(seed, sha256):
    """The seed of one checkpoint's masks, from --seed and the checkpoint file's sha256: random pruning draws
    another mask for each checkpoint, so that its spread over checkpoints includes the mask's."""
    return int(hashlib.sha256(f"{seed} {sha256}".encode()).hexdigest()[:15], 16)


def apply_masks(model, masks):
    """A copy of `model` with `masks` on its hidden layers; the logits layer is kept whole.

    The masks go through torch.nn.utils.prune, so the copy trains with pruned weights held at zero.
    """
    pruned = copy.deepcopy(model)
    for layer, mask in zip(pruned.hidden, masks):
        torch_prune.custom_from_mask(layer, "weight", mask)
    return pruned


def hold_at_zero(layers, masks):
    """Zero the weights of `layers` that `masks` prune, in place, and return the function that zeroes them again,
    to call after each optimizer step, so that they stay exactly zero while the net trains. A mask changed in
    place takes effect at the next call.

    The net trains to the same weights as with torch.nn.utils.prune, to the last bit of every kept one: a kept
    weight's gradient and update are the same, and a pruned one's update is undone (a pruned weight may end as
    -0.0 where the hooks give 0.0, or the other way round, which changes no product). But where the hooks
    multiply the weights by the masks into new tensors twice a step (before the forward, and in the backward),
    this is one pass over them in place.
    """
    def zero_pruned():
        with torch.no_grad():
            for layer, mask in zip(layers, masks):
                layer.weight.mul_(mask)
    zero_pruned()
    return zero_pruned


def prune(model, method, k, seed=0):
    """A copy of `model` with its hidden layers pruned to k percent by METHODS[method]."""
    return apply_masks(model, masks(model, method, k, seed))


def zero_percent(layers):
    return 100 * sum(int((layer.weight == 0).sum()) for layer in layers) / sum(layer.weight.numel() for layer in layers)


def sparsity(model):
    """Percentage of zero weights in the hidden layers, in the whole network, and in each hidden layer."""
    return {"sparsity": zero_percent(model.hidden), "total_sparsity": zero_percent(model.layers),
            **{f"sparsity_layer{i}": zero_percent([layer]) for i, layer in enumerate(model.hidden, 1)}}
