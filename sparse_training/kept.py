"""A hidden layer that holds only the weights it keeps: the layer of the methods that train sparse from the first
step (static, snip, synflow, set, rigl), of gmp once its masks are final, and of retraining a pruned net. Its
parameter is the vector of kept weights, in row-major order of their
positions in the dense W, so that the optimizer, the L1 term and weight decay pass over the nonzeros alone, and
nothing needs holding at zero: a pruned weight does not exist. Its three products run in masked_kernel.c over
the same lists of nonzeros as masked.py's layer, pointing into the vector instead of the dense W, so a step
costs the kept weights and the activations, never the dense matrix.

Where the kernel cannot run (no C compiler, a GPU, float64), the layer scatters its weights into a dense W and
multiplies that: the same values, at a dense cost.
"""
import torch
import torch.nn.functional as F
from torch import nn

from csrc import check
from sparse_training.masked import Lists, MaskedProduct, cpu_masked_kernel, starts


def kept_lists(positions, shape):
    """(by row, by column) Lists of the weights at the sorted flat `positions` of a [rows, columns] W, pointing into
    the vector of those weights (position p of W is element i where positions[i] = p)."""
    rows, columns = shape
    check.fits(rows * columns, 31, "a sparse layer's weights")  # int32 positions and indices
    n = len(positions)
    if n and not (bool((positions[1:] > positions[:-1]).all()) and 0 <= int(positions[0]) and
                  int(positions[-1]) < rows * columns):
        raise check.Refused(f"a sparse layer's positions must be increasing and within its {rows}x{columns} weights")
    row, column = positions // columns, positions % columns
    by_row = Lists(starts(row, rows), column.int(), torch.arange(n, dtype=torch.int32), shape, False, (n,))
    order = torch.argsort(column * rows + row)  # the same weights, column by column
    by_column = Lists(starts(column, columns), row[order].int(), order.int(), shape, True, (n,))
    return by_row, by_column


class KeptLinear(nn.Module):
    """A Linear without bias of `shape` [out, in] whose only parameter, `values`, holds the weights at the sorted
    flat `positions` of its W. The positions may change (move()), never their number."""

    def __init__(self, values, positions, shape):
        super().__init__()
        self.shape = tuple(shape)
        self.in_features, self.out_features = self.shape[1], self.shape[0]
        self.values = nn.Parameter(values.detach().clone().contiguous())
        self.register_buffer("positions", positions.clone())
        self.lists = kept_lists(positions.cpu(), self.shape) if positions.device.type == "cpu" else None
        self.want_dense_gradient, self.dense_gradient = False, None

    @classmethod
    def from_dense(cls, weight, mask):
        """The layer of `weight` [out, in] where `mask` keeps it."""
        positions = mask.flatten().nonzero().flatten()
        return cls(weight.detach().flatten()[positions], positions, weight.shape)

    def forward(self, x):
        kernel = cpu_masked_kernel()
        if (kernel is None or self.lists is None or x.device.type != "cpu" or x.dtype != torch.float32 or
                x.dim() != 2 or self.values.dtype != torch.float32):
            weight = self.dense_weight()
            if self.want_dense_gradient and weight.requires_grad:
                weight.register_hook(lambda grad: setattr(self, "dense_gradient", grad))
            return F.linear(x, weight)
        return MaskedProduct.apply(x, self.values, *self.lists, kernel, self)

    def dense_weight(self):
        """W [out, in]: the kept weights in place, zeros elsewhere (differentiable in the kept ones)."""
        flat = torch.zeros(self.shape[0] * self.shape[1], dtype=self.values.dtype, device=self.values.device)
        return flat.scatter(0, self.positions, self.values).view(self.shape)

    def kept(self):
        """The dense mask, True where a weight is kept."""
        mask = torch.zeros(self.shape[0] * self.shape[1], dtype=torch.bool, device=self.positions.device)
        mask[self.positions] = True
        return mask.view(self.shape)

    @torch.no_grad()
    def move(self, positions, values):
        """Hold `values` at the sorted `positions` from now on, as many as before: in place, so that the optimizer
        goes on training the same parameter."""
        if positions.shape != self.positions.shape:
            raise ValueError(f"a sparse layer keeps {len(self.positions)} weights, not {len(positions)}")
        self.lists = kept_lists(positions.cpu(), self.shape) if positions.device.type == "cpu" else None
        self.positions.copy_(positions)
        self.values.copy_(values)


def keep_hidden(model, masks):
    """Swap the hidden layers of the MLP `model` for KeptLinear layers holding their weights where `masks` keep
    them."""
    for i, mask in enumerate(masks):
        model.layers[i] = KeptLinear.from_dense(model.layers[i].weight, mask.bool())


def unkeep_hidden(model):
    """Put plain Linear layers back, holding the same weights, zero where they were not kept."""
    for i, layer in enumerate(model.hidden):
        plain = nn.Linear(layer.shape[1], layer.shape[0], bias=False, device=layer.values.device)
        with torch.no_grad():
            plain.weight.copy_(layer.dense_weight())
        model.layers[i] = plain


@torch.no_grad()
def keep_trained(model, masks, optimizer):
    """keep_hidden() in the middle of training by `optimizer`: each layer's kept weights take the dense weight's
    place in its parameter group, with its state (momentum, Adam's moments) where they are kept."""
    for i, mask in enumerate(masks):
        dense = model.layers[i].weight
        layer = KeptLinear.from_dense(dense, mask.bool())
        for group in optimizer.param_groups:
            group["params"] = [layer.values if p is dense else p for p in group["params"]]
        state = optimizer.state.pop(dense, {})
        optimizer.state[layer.values] = {key: value.flatten()[layer.positions].clone() if
                                         isinstance(value, torch.Tensor) and value.shape == dense.shape else value
                                         for key, value in state.items()}
        model.layers[i] = layer
