"""The door to C: a kernel reads raw memory, so every tensor is checked before its address is handed over.

C reads what it is given as float32 (or the index type it declares), row-major, in CPU memory, of the size the
layer has: a float64 buffer, a transposed view or a GPU tensor would give a wrong answer, or read past the end,
without an error. So each call site checks, and where the fix is a copy (an input of another float type, or
not contiguous) makes it; anything else is refused in one line.
"""
import torch


class Refused(ValueError):
    """A tensor that cannot go to a kernel: its message is one line that names it and what is wrong."""


def address(tensor, name, dtype, shape):
    """tensor.data_ptr() after checking it is a contiguous CPU tensor of `dtype` and `shape` (None in a place:
    any size there)."""
    if not isinstance(tensor, torch.Tensor):
        raise Refused(f"{name} is a {type(tensor).__name__}, not a tensor")
    if tensor.device.type != "cpu":
        raise Refused(f"{name} is on {tensor.device}: the C kernels run on the CPU")
    if tensor.dtype != dtype:
        raise Refused(f"{name} is {tensor.dtype}, where the kernel reads {dtype}")
    if tensor.dim() != len(shape) or any(want is not None and have != want for have, want in zip(tensor.shape, shape)):
        raise Refused(f"{name} is {list(tensor.shape)}, where the kernel reads {list(shape)}".replace("None", "any"))
    if not tensor.is_contiguous():
        raise Refused(f"{name} is not contiguous: the kernel reads it row-major")
    return tensor.data_ptr()


def as_input(x, name, columns):
    """x [batch, columns] as the kernels read it, float32 and contiguous: an input of another float type, or not
    contiguous (a transposed view), is copied so; an input that is not a float tensor on the CPU of that shape is
    refused."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise Refused(f"{name} must be a float tensor, not {getattr(x, 'dtype', type(x).__name__)}")
    if x.device.type != "cpu":
        raise Refused(f"{name} is on {x.device}: the C kernels run on the CPU")
    if x.dim() != 2 or x.shape[1] != columns:
        raise Refused(f"{name} is {list(x.shape)}, where the net takes [batch, {columns}]")
    return x.to(torch.float32).contiguous()


def fits(count, bits, what):
    """Refuse a layer whose `count` (its rows, its nonzeros) does not fit the kernel's unsigned `bits`-bit index."""
    if count >= 2 ** bits:
        raise Refused(f"{what} is {count}: the kernel indexes it in {bits} bits, up to {2 ** bits - 1}")
