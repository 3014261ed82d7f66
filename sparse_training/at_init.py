"""Masks found at init, before any training, then held (train.py --sparse static, snip, synflow), and the mask
that SET and RigL start from: each hidden layer keeps the number of weights its distribution gives it
(distribution.py), chosen by

    static   at random: the control every other method must beat;
    snip     |g ⊙ w|, the loss's sensitivity to each weight (Lee et al. 2019), summed over SNIP_BATCHES batches;
    synflow  |∂R/∂w ⊙ w|, R the sum of the outputs of the net with |W| in place of W on an input of ones: the
             synaptic flow through each weight, no data (Tanaka et al. 2020); pruned in SYNFLOW_ROUNDS rounds,
             the density falling exponentially, the scores taken again after each.

The kept weights then start from the dense init scaled up by each unit's sparse fan-in, sqrt(n_in / kept
inputs), so that a unit's output has the variance it has in the dense net (Evci et al. 2022): at 99 % with the
dense init, each layer would shrink the signal tenfold.
"""
import torch
import torch.nn.functional as F

from prune import mask_smallest

SNIP_BATCHES = 10  # Lee et al. score one batch; ten give steadier sums at the cost of ten forward passes
SYNFLOW_ROUNDS = 100  # Tanaka et al.'s count


def keep_largest(scores, count):
    """A bool mask of `scores`' shape keeping its `count` largest entries (ties to the higher index)."""
    return mask_smallest(scores, scores.numel() - count).bool()


def static_masks(model, counts):
    """Each hidden layer keeps `count` weights drawn uniformly, from torch's default generator."""
    return [keep_largest(torch.rand(layer.weight.shape, device=layer.weight.device), count)
            for layer, count in zip(model.hidden, counts)]


def snip_masks(model, counts, images, labels, batch_size, batches=SNIP_BATCHES):
    """SNIP's masks: the `count` weights of each hidden layer with the largest |g ⊙ w|, g the gradient of the
    cross-entropy, summed over `batches` batches drawn from (images, labels) by torch's default generator."""
    weights = [layer.weight for layer in model.hidden]
    scores = [torch.zeros_like(weight) for weight in weights]
    for _ in range(batches):
        batch = torch.randint(len(labels), (batch_size,), device=labels.device)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images[batch]), labels[batch]).backward()
        for score, weight in zip(scores, weights):
            score += (weight.grad * weight).abs().detach()
    model.zero_grad(set_to_none=True)
    return [keep_largest(score, count) for score, count in zip(scores, counts)]


def synflow_masks(model, counts, rounds=SYNFLOW_ROUNDS):
    """SynFlow's masks: each hidden layer pruned in `rounds` rounds to `count` weights, keeping after round r a
    share density^(r / rounds) of its weights with the largest synaptic flow (the logits layer scores but is never
    pruned). In float64: the flow is a product over the layers, and shrinks below float32's range on wide nets."""
    weights = [layer.weight.detach().double().abs() for layer in model.layers]
    masks = [torch.ones_like(weight, dtype=torch.bool) for weight in weights[:-1]]
    for r in range(1, rounds + 1):
        live = [(weight * mask).requires_grad_() for weight, mask in zip(weights, masks)] + [weights[-1]]
        x = torch.ones(1, weights[0].shape[1], dtype=torch.float64, device=weights[0].device)
        for weight in live:  # no ReLU needed: every weight and input is non-negative
            x = x @ weight.T
        x.sum().backward()
        for i, (weight, count) in enumerate(zip(live[:-1], counts)):
            n = weight.numel()
            keep = round(n * (count / n) ** (r / rounds)) if count else 0
            scores = (weight.grad * weight).detach()
            # pruned weights score 0: ranked last, they stay pruned
            masks[i] = keep_largest(torch.where(masks[i], scores, -1.0), keep)
    return masks


@torch.no_grad()
def sparse_fan_in(model, masks):
    """Scale each kept weight by sqrt(n_in / kept inputs of its unit), zero the others."""
    for layer, mask in zip(model.hidden, masks):
        fan_in = mask.sum(dim=1, keepdim=True).clamp(min=1)
        layer.weight.mul_(mask * (layer.weight.shape[1] / fan_in).sqrt())
