"""Training a pruned net at the cost of its nonzeros: a hidden layer held by a mask (MaskedLinear) runs its three
matrix products, y = W x and the gradients of x and of W, over the weights its mask keeps (masked_kernel.c),
once the mask prunes at least SPARSE_FROM of them. gmp (sparse_training.py) and retraining (prune.retrain)
train through it.

The products are the dense ones without the terms that are zero, summed in another order, so a net trains to
the same weights up to rounding. Where the kernel cannot run (no C compiler, a GPU, float64) or the mask keeps
most weights, the layer is a plain Linear: there its weights, held at zero where pruned (prune.hold_at_zero),
give the dense products exactly.
"""
import ctypes
import functools
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from utils import build_library

KERNEL_FLAGS = ["-O3", "-funroll-loops", "-march=native", "-fopenmp", "-fPIC"]

# The share of a layer's weights its mask must prune for the kernel to run it. The three products of each hidden
# layer at batch 128 on one thread, autograd's calls included, against torch's dense ones (docs/masked_layer.md, AMD
# EPYC Zen 3): 0.9-1.0x as fast at 70 % pruned, 1.3-1.4x at 80 %, 1.9-2.5x at 90 %, 2.4-4.1x at 95 %, 3.1-8.7x at
# 99 % (the small last hidden layer gains least).
SPARSE_FROM = 0.75


@functools.cache
def masked_kernel(compiler, extra_flags=()):
    """masked_kernel.c built with `compiler` (extra_flags after -march=native): (the library, "") or (None, why
    not)."""
    sources = [Path(__file__).with_name("masked_kernel.c")]
    library, why_not = build_library(compiler, sources, [*KERNEL_FLAGS, *extra_flags], ["-fopenmp"])
    if library is not None:
        arguments = [ctypes.c_void_p] * 6 + [ctypes.c_long, ctypes.c_long, ctypes.c_int]
        library.masked_product.argtypes = arguments
        library.masked_gradient.argtypes = [*arguments, ctypes.c_long]  # and the columns of the gradient
        library.masked_product.restype = library.masked_gradient.restype = None
    return library, why_not


def cpu_masked_kernel():
    return masked_kernel(os.environ.get("CC", "cc"))[0]


def nonzero_lists(mask, by_column=False):
    """The nonzeros of `mask` as masked_kernel.c takes them: (start, index, at), by row (by column): the nonzeros of
    row (column) r are [start[r], start[r + 1]), each in column (row) index[p], at the flat position at[p]."""
    rows, columns = mask.shape
    major, minor = (mask.T if by_column else mask).nonzero(as_tuple=True)
    row, column = (minor, major) if by_column else (major, minor)
    start = torch.zeros((columns if by_column else rows) + 1, dtype=torch.int64)
    start[1:] = torch.bincount(major, minlength=len(start) - 1).cumsum(0)
    return start, minor.int(), (row * columns + column).int()


def run(function, lists, a, b, out, width, *more):
    """function(lists, a, b, out, ...) of masked_kernel.c, on torch's threads."""
    start, index, at = lists
    function(start.data_ptr(), index.data_ptr(), at.data_ptr(), a.data_ptr(), b.data_ptr(), out.data_ptr(),
             len(start) - 1, width, torch.get_num_threads(), *more)


class MaskedProduct(torch.autograd.Function):
    """x W^T over the nonzeros of W's mask, given by row and by column (nonzero_lists), and its gradients: the
    kernel works on x^T, so the output is the transpose of a [out][batch] tensor, and its transpose, the next
    layer's input after ReLU (which keeps the layout), is there without a copy."""

    @staticmethod
    def forward(ctx, x, weight, by_row, by_column, kernel):
        h = x.T.contiguous()
        out = torch.empty(weight.shape[0], h.shape[1])
        run(kernel.masked_product, by_row, weight, h, out, h.shape[1])
        ctx.save_for_backward(h, weight)
        ctx.lists, ctx.kernel = (by_row, by_column), kernel
        return out.T

    @staticmethod
    def backward(ctx, grad_out):
        h, weight = ctx.saved_tensors
        (by_row, by_column), kernel = ctx.lists, ctx.kernel
        g = grad_out.T.contiguous()
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_h = torch.empty(weight.shape[1], g.shape[1])
            run(kernel.masked_product, by_column, weight, g, grad_h, g.shape[1])
            grad_x = grad_h.T
        grad_weight = torch.empty_like(weight)  # the kernel writes every element: 0 where pruned
        run(kernel.masked_gradient, by_row, g, h, grad_weight, g.shape[1], weight.shape[1])
        return grad_x, grad_weight, None, None, None


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
            sparse = 1 - mask.float().mean().item() >= SPARSE_FROM
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
