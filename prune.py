"""The pruning methods, and what acts on their masks: applying them, fine-tuning, measuring sparsity.

A method takes the hidden layers' weight matrices, in order, and the fraction of weights to remove,
and returns one 0/1 mask per matrix (0: pruned); one of SCORE_METHODS takes the scores that training to be
sparse learned (train.py --sparse vd, l0) in place of the weights. A rule that looks at one matrix at a time is a plain
function of (weight, fraction), lifted to the whole list by per_layer. A method may draw random numbers
from torch's default generator: prune() seeds it from --seed, so the same seed gives the same masks.
"""
import copy
import math

import torch
from torch.nn.utils import prune as torch_prune

import utils
from masked_layer import mask_hidden
from model import MLP


def mask_smallest(scores, n):
    """A 0/1 mask shaped like `scores`, with zeros at its n smallest entries.

    Ties go to the lower index (a stable sort), so the mask is the same on every run and device, and
    the mask for a larger n contains the one for a smaller n. torch.topk, behind torch.nn.utils.prune's
    l1_unstructured and ln_structured, promises neither: ln_structured gives masks that are not nested
    when rows have equal norms.

    The mask is the one a stable sort gives, found without sorting: the n-th smallest score by kthvalue, zeros
    below it, and at it as many of the tied entries, the lowest indices first, as make n. Sorting a million
    scores took 4 to 11 times as long on the AMD Zen 3 here, and train.py --sparse gmp recomputes its masks every
    100 steps.
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


def fresh_init(seed, device="cpu"):
    """A newly initialised MLP, its weights drawn from `seed`: where retraining from scratch starts."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP().to(device)


def retrain(model, train_data, epochs, lr, batch_size, seed, l1=0.0, weight_decay=0.0):
    """Train a pruned model, its masks holding the pruned weights at exactly zero.

    SGD with Nesterov momentum from `lr` down to 0 on a cosine, the images in an order drawn from
    `seed`, and train.py's L1 penalty and weight decay where asked: fine-tuning (Han et al. 2015) takes
    a lower rate and no penalty, as the mask already decides what is kept; rewinding and training from
    scratch take the checkpoint's own recipe.

    Only the units the masks leave alive train, as the smaller net compact() would make of them: its
    outputs and its weights' gradients are the full net's, as the dead units' outputs are exactly zero,
    but it costs fewer multiplies: a step at batch 128 took 1.5x / 2.9x less time at weight pruning 90 / 99 %,
    2.5x / 9.3x at unit pruning 50 / 90 % (seed 0 on Fashion-MNIST, AMD EPYC Zen 4, medians of 3 rounds). The
    weights it leaves out stay as they were: each is masked or multiplies a zero. A layer of the smaller net whose
    mask still prunes most of it, as weight pruning leaves them, trains through masked_layer.MaskedLinear, at the
    cost of the weights it keeps.
    """
    rows, columns = live_units([*(layer.weight_mask for layer in model.hidden), model.layers[-1].weight])
    weights = [*(layer.weight_orig for layer in model.hidden), model.layers[-1].weight]  # what training changes
    smaller = MLP((model.layers[0].in_features, *(len(r) for r in rows))).to(rows[0].device)
    with torch.no_grad():
        for layer, weight, r, c in zip(smaller.layers, weights, rows, columns):
            layer.weight.copy_(weight[r][:, c])
    masks = [layer.weight_mask[r][:, c] for layer, r, c in zip(model.hidden, rows, columns)]
    mask_hidden(smaller, masks)  # their products over the kept weights only, where the masks prune most
    zero_pruned = hold_at_zero(smaller.hidden, masks)
    optimizer, scheduler = utils.sgd(smaller, lr, epochs * math.ceil(len(train_data[1]) / batch_size), weight_decay)
    shuffle = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        utils.train_epoch(smaller, train_data, optimizer, batch_size, shuffle, scheduler, l1,
                          desc=f"retrain {epoch}/{epochs}", after_step=zero_pruned)
    with torch.no_grad():
        for weight, new, r, c in zip(weights, (layer.weight for layer in smaller.layers), rows, columns):
            weight[r[:, None], c] = new
        for layer in model.hidden:  # as torch.nn.utils.prune sets it before a forward, so that it is never stale
            layer.weight = layer.weight_orig * layer.weight_mask


def live_units(weights):
    """(rows, columns): for each layer, the indices of its units (rows) that can output anything but zero, and of
    its inputs (columns) that can be anything but zero, the live units of the layer before. A unit whose weights
    from the live units before it are all zero outputs relu(0) = 0 (there are no biases). One unit per layer
    always stays, so that every layer keeps a shape, and every row of the last layer (the logits)."""
    columns = [torch.arange(weights[0].shape[1], device=weights[0].device)]
    for weight in weights[:-1]:
        alive = weight[:, columns[-1]].ne(0).any(dim=1)
        alive[0] |= not alive.any()
        columns.append(alive.nonzero().flatten())
    return columns[1:] + [torch.arange(weights[-1].shape[0], device=weights[-1].device)], columns


def compact(weights):
    """The pruned net without its dead units, as a smaller dense net with the same outputs: each layer's rows of
    the live units, and its columns of the live units before it (live_units)."""
    rows, columns = live_units(weights)
    return [weight[r][:, c].contiguous() for weight, r, c in zip(weights, rows, columns)]


def zero_percent(layers):
    return 100 * sum(int((layer.weight == 0).sum()) for layer in layers) / sum(layer.weight.numel() for layer in layers)


def sparsity(model):
    """Percentage of zero weights in the hidden layers, in the whole network, and in each hidden layer."""
    return {"sparsity": zero_percent(model.hidden), "total_sparsity": zero_percent(model.layers),
            **{f"sparsity_layer{i}": zero_percent([layer]) for i, layer in enumerate(model.hidden, 1)}}
