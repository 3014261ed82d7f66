"""SET and RigL (train.py --sparse set, rigl): the mask moves while the net trains, its size fixed. Every
REGROW_EVERY steps (ΔT), until REGROW_END of the steps, each hidden layer drops the share α_t of its kept weights
with the smallest |w| and grows as many where it keeps none: SET at random (Mocanu et al. 2018), RigL where the
dense gradient of the loss is largest (Evci et al. 2020), computed on those steps only. α_t = α (1 + cos(π t /
(REGROW_END · steps))) / 2 falls from REGROW_ALPHA to 0, as in RigL. A grown weight starts at zero, its optimizer
state (momentum, Adam's moments) cleared; the weights kept go on with theirs. A weight dropped may grow again at
once, at zero, as in the RigL code. The update itself looks at every position of a layer, once every ΔT steps.
"""
import math

import torch

REGROW_EVERY, REGROW_ALPHA, REGROW_END = 100, 0.3, 0.75
GROWTH = {"set": "random", "rigl": "gradient"}


def drop_share(step, steps, alpha=REGROW_ALPHA, end=REGROW_END):
    """α_t at `step` of `steps`: the share of each layer's kept weights an update drops (0 from `end` on)."""
    last = end * steps
    return alpha / 2 * (1 + math.cos(math.pi * step / last)) if step < last else 0.0


@torch.no_grad()
def move(layer, share, growth, optimizer):
    """Drop round(share · kept) of `layer`'s (a KeptLinear) weights with the smallest |w| and grow as many by
    `growth` ("random", or "gradient": the largest |layer.dense_gradient|); return how many of the grown
    positions were not kept before the update."""
    n = len(layer.positions)
    k = round(share * n)
    if k == 0:
        return 0
    survivors = torch.ones(n, dtype=torch.bool, device=layer.values.device)
    survivors[layer.values.abs().argsort(stable=True)[:k]] = False
    before = layer.kept().flatten()
    scores = (torch.rand(before.shape, device=before.device) if growth == "random" else
              layer.dense_gradient.abs().flatten().to(before.device))
    scores[layer.positions[survivors]] = -1.0  # never above a free position's score, all >= 0
    grown = scores.topk(k).indices
    positions = torch.cat([layer.positions[survivors], grown])
    order = positions.argsort()
    moved = lambda kept: torch.cat([kept[survivors], torch.zeros(k, dtype=kept.dtype, device=kept.device)])[order]
    for state in optimizer.state.get(layer.values, {}).values():
        if isinstance(state, torch.Tensor) and state.shape == layer.values.shape:
            state.copy_(moved(state))  # momentum and Adam's moments: kept with their weight, 0 where grown
    layer.move(positions[order], moved(layer.values))
    return int((~before[grown]).sum())


def regrowth(model, optimizer, steps, growth, every=REGROW_EVERY):
    """The function to call after each of `steps` training steps of `model` (its hidden layers KeptLinear,
    trained by `optimizer`) that moves the masks every `every` steps; its attribute `regrown` counts the
    connections grown that were not kept before."""
    layers = list(model.hidden)

    def after_step():
        after_step.done += 1
        share = drop_share(after_step.done, steps)
        if after_step.done % every == 0 and share > 0:
            after_step.regrown += sum(move(layer, share, growth, optimizer) for layer in layers)
        want_gradients(after_step.done + 1)

    def want_gradients(step):  # RigL: the dense gradient on `step` alone, if it moves the masks
        for layer in layers:
            layer.dense_gradient = None
            layer.want_dense_gradient = growth == "gradient" and step % every == 0 and drop_share(step, steps) > 0
    after_step.done, after_step.regrown = 0, 0
    want_gradients(1)
    return after_step
