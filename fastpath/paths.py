"""The forward pass of a pruned net by each path, as forward(layers, x): dense, torch.sparse (COO, CSR), the
compacted net dense, and the C kernels (plan.py); fastest_path picks the one a machine runs best.

Every forward maps the same images [batch, 784] to the same logits [batch, 10], given the pruned net's weight
matrices (the logits layer's last).
"""
import warnings

import torch

from fastpath.compact import compact
from fastpath.plan import cpu_kernel, csr_kernel_forward, sparse_plan


def transposed(weights):
    """Weights as [in_features, out_features], contiguous: the layout dense_forward multiplies by."""
    return [w.T.contiguous() for w in weights]


def dense_forward(weights_t, x):
    # x @ W.T with W.T stored contiguous, and ReLU in place: one copy of W.T when the plan is made, none a call,
    # and no new tensor for the ReLU.
    for weight_t in weights_t[:-1]:
        x = torch.mm(x, weight_t).relu_()
    return torch.mm(x, weights_t[-1])


def torch_sparse_forward(weights, x):
    """Weights in a torch.sparse layout (COO or CSR). The activations stay [features, batch]
    between layers, so each layer is one sparse @ dense product with no transpose in between."""
    h = x.T
    for weight in weights[:-1]:
        h = torch.relu(torch.sparse.mm(weight, h))
    return torch.sparse.mm(weights[-1], h).T


def fastest_path(weights, device, batch=100):
    """(name, forward, layers) of the fastest path for the pruned net `weights` on `device`: csr_kernel.c on
    the CPU, laid out for `batch` (any other runs too). Without it, the compacted net, dense: on the CPU,
    torch CSR only where under a tenth of the compacted net's weights are nonzero, as it beat dense from
    there (docs/speed.md, "torch CSR x"). A GPU gets the compacted net dense, as cuBLAS runs it."""
    if torch.device(device).type == "cpu" and cpu_kernel()[0]:
        return "csr_kernel.c", csr_kernel_forward, sparse_plan(weights, batch)
    smaller = compact(weights)
    if torch.device(device).type == "cpu" and flop_ceiling(smaller, smaller) > 10:
        return "torch CSR", torch_sparse_forward, to_csr(weights)
    return "compact", dense_forward, transposed(smaller)


def flop_ceiling(weights, used):
    """Multiply-adds of the dense net over those left in `used`, counting only nonzero weights."""
    return sum(w.numel() for w in weights) / sum(int(w.count_nonzero()) for w in used)


def to_csr(weights):
    """The weights in torch's CSR layout, without torch's note that CSR support is in beta: it works, and the
    note is noise (silenced here only, not for the code that imports this)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return [w.to_sparse_csr() for w in weights]
