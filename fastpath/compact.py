"""A pruned net without its dead units: a unit whose weights from the live units before it are all zero
outputs relu(0) = 0 (there are no biases), so its row, and its column in the next layer, can go. What is left
is a smaller dense net with the same outputs: what unit pruning leaves, run as dense products, and where
retraining spends its steps (retrain.py).
"""
import torch


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
