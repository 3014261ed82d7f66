"""Training a pruned net at the cost of its nonzeros: a hidden layer held by a mask (MaskedLinear) runs its three
matrix products, y = W x and the gradients of x and of W, over the weights its mask keeps (masked_kernel.c),
once the mask prunes at least SPARSE_FROM of them. gmp (sparse_training/gmp.py) and retraining (retrain.py)
train through it.

The products are the dense ones without the terms that are zero, summed in another order, so a net trains to
the same weights up to rounding. Where the kernel cannot run (no C compiler, a GPU, float64) or the mask keeps
most weights, the layer is a plain Linear: there its weights, held at zero where pruned (prune.hold_at_zero),
give the dense products exactly.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from csrc import build, check

# The share of a layer's weights its mask must prune for the kernel to run it: below, torch's dense products are
# as fast (python benchmarks/masked_layer.py times the three products at each sparsity: docs/masked_layer.md).
SPARSE_FROM = 0.75


def prunes_most(mask):
    """Whether `mask` prunes at least SPARSE_FROM of its weights: where the kernel is the faster path."""
    return 1 - mask.float().mean().item() >= SPARSE_FROM


def starts(lines, count):
    """Where each of `count` lines' nonzeros start in a list sorted by line (`lines`: each nonzero's line), and
    where the last ends."""
    start = torch.zeros(count + 1, dtype=torch.int64)
    start[1:] = torch.bincount(lines, minlength=count).cumsum(0)
    return start


def cpu_masked_kernel():
    return build.load("masked")[0]


class Lists(NamedTuple):
    """A mask's nonzeros as masked_kernel.c takes them, by row (by column) of the mask, of `shape`: the nonzeros of
    row (column) r are [start[r], start[r + 1]), each in column (row) index[p], at the flat position at[p]."""
    start: torch.Tensor
    index: torch.Tensor
    at: torch.Tensor
    shape: tuple
    by_column: bool
    weights: tuple = None  # the shape of what `at` points into: None for the dense W, of `shape`


def nonzero_lists(mask, by_column=False):
    """The nonzeros of `mask` as Lists, by row or by column."""
    rows, columns = mask.shape
    check.fits(rows * columns, 31, "a masked layer's weights")  # int32 positions
    major, minor = (mask.T if by_column else mask).nonzero(as_tuple=True)
    row, column = (minor, major) if by_column else (major, minor)
    return Lists(starts(major, columns if by_column else rows), minor.int(), (row * columns + column).int(),
                 (rows, columns), by_column)


def run(function, lists, a, b, out, *more):
    """function(lists, a, b, out, ...) of masked_kernel.c, on torch's threads, each tensor checked against the
    mask the lists were made from. b [*, width] holds a row for each column (row) the lists name; out holds a row
    for each of their rows (columns); what `at` points into, a for masked_product and out for masked_gradient, has
    the mask's shape (the dense W), or is the vector of the kept weights where the lists say so (lists.weights)."""
    lines, named = lists.shape[::-1] if lists.by_column else lists.shape
    width, nonzeros, weights = b.shape[1], len(lists.index), lists.weights or lists.shape
    shapes = {"the mask's starts": (lists.start, torch.int64, (lines + 1,)),
              "the mask's indices": (lists.index, torch.int32, (nonzeros,)),
              "the mask's positions": (lists.at, torch.int32, (nonzeros,)),
              "the masked product's first operand": (a, torch.float32, (lines, width) if more else weights),
              "the masked product's second operand": (b, torch.float32, (named, width)),
              "the masked product's output": (out, torch.float32, weights if more else (lines, width))}
    pointers = [check.address(tensor, name, dtype, shape) for name, (tensor, dtype, shape) in shapes.items()]
    function(*pointers, lines, width, torch.get_num_threads(), *more)


class MaskedProduct(torch.autograd.Function):
    """x W^T over the nonzeros of W's mask, given by row and by column (nonzero_lists), and its gradients: the
    kernel works on x^T, so the output is the transpose of a [out][batch] tensor, and its transpose, the next
    layer's input after ReLU (which keeps the layout), is there without a copy. `weight` is the dense W, or the
    vector of its kept weights where the lists point into one (kept.py's layer): its gradient is shaped alike.
    Where layer.want_dense_gradient is set, the backward also leaves the dense gradient of W in
    layer.dense_gradient: RigL's growth criterion, on the steps it moves the mask."""

    @staticmethod
    def forward(ctx, x, weight, by_row, by_column, kernel, layer=None):
        h = x.T.contiguous()
        out = torch.empty(by_row.shape[0], h.shape[1], dtype=torch.float32)
        run(kernel.masked_product, by_row, weight, h, out)
        ctx.save_for_backward(h, weight)
        ctx.lists, ctx.kernel, ctx.layer = (by_row, by_column), kernel, layer
        return out.T

    @staticmethod
    def backward(ctx, grad_out):
        h, weight = ctx.saved_tensors
        (by_row, by_column), kernel = ctx.lists, ctx.kernel
        g = grad_out.T.contiguous()
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_h = torch.empty(by_row.shape[1], g.shape[1], dtype=torch.float32)
            run(kernel.masked_product, by_column, weight, g, grad_h)
            grad_x = grad_h.T
        # The kernel writes every kept element, and clears a dense W's rows of the rest; a vector has no rest.
        grad_weight = torch.empty_like(weight)
        run(kernel.masked_gradient, by_row, g, h, grad_weight, 0 if by_row.weights else by_row.shape[1])
        if ctx.layer is not None and ctx.layer.want_dense_gradient:
            ctx.layer.dense_gradient = g @ h.T
        return grad_x, grad_weight, None, None, None, None


class MaskedLinear(nn.Module):
    """A Linear without bias that trains only the weights `mask` keeps (its buffer weight_mask, not saved with the
    net), by masked_kernel.c where it can. A mask changed in place takes effect at the next call. It does not zero
    the pruned weights: prune.hold_at_zero does, after each optimizer step, so that the net holds what it trains."""

    def __init__(self, weight, mask):
        super().__init__()
        self.weight = weight  # the same Parameter: an optimizer made before or after the swap trains it
        self.register_buffer("weight_mask", mask, persistent=False)
        self.lists, self.lists_version = None, None

    def forward(self, x):
        kernel = cpu_masked_kernel()
        if (kernel is None or x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 2 or
                self.weight.dtype != torch.float32 or not self.weight.is_contiguous()):  # the kernel reads W row-major
            return F.linear(x, self.weight)
        # Made again when the mask has changed in place: torch counts a tensor's in-place changes in _version.
        if self.lists_version != self.weight_mask._version:
            mask = self.weight_mask.bool()
            sparse = prunes_most(mask)
            self.lists = (nonzero_lists(mask), nonzero_lists(mask, by_column=True)) if sparse else None
            self.lists_version = self.weight_mask._version
        if self.lists is None:
            return F.linear(x, self.weight)
        return MaskedProduct.apply(x, self.weight, *self.lists, kernel)


def mask_hidden(model, masks):
    """Swap the hidden layers of the MLP `model` for MaskedLinear layers of the same weights, held by `masks`."""
    for i, mask in enumerate(masks):
        model.layers[i] = MaskedLinear(model.layers[i].weight, mask)


def unmask_hidden(model):
    """Put plain Linear layers back, holding the same weights."""
    for i, layer in enumerate(model.hidden):
        plain = nn.Linear(layer.weight.shape[1], layer.weight.shape[0], bias=False, device=layer.weight.device)
        plain.weight = layer.weight
        model.layers[i] = plain
