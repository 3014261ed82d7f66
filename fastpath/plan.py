"""What the C kernels of the forward pass take (csrc/csr_kernel.c for a batch, samples in a vector's lanes;
csrc/column_kernel.c for one image, column by column, skipping the columns whose activation is zero), laid out
once per pruned net, and the call into them.

A plan is checked as it is made (its arrays' types, and that every index fits its width) and holds its arrays,
so a call only checks its input (csrc/check.py).
"""
import ctypes
from pathlib import Path

import torch

from csrc import build, check
from fastpath.compact import compact
from utils import UserError


class Layer(ctypes.Structure):
    """One layer, as csr_kernel.c's layer_t."""
    _fields_ = [*((name, ctypes.c_void_p) for name in ("start", "row", "offset", "val", "panel")),
                *((name, ctypes.c_int64) for name in ("rows", "columns", "panels", "dense"))]


class ColumnLayer(ctypes.Structure):
    """One layer, as column_kernel.c's clayer_t."""
    _fields_ = [*((name, ctypes.c_void_p) for name in ("start", "row", "val", "row_sum")),
                *((name, ctypes.c_int64) for name in ("rows", "columns", "dense"))]


def cpu_kernel():
    """(the forward kernels, "") or (None, why not)."""
    return build.load("forward")


def kernel_to_time():
    """The compiled kernels, for a benchmark that times them: without them, one line saying why."""
    kernel, why_not = cpu_kernel()
    if kernel is None:
        raise UserError(f"no C kernel to time: {why_not}")
    return kernel


def sparse_path(device):
    return "csr_kernel.c" if torch.device(device).type == "cpu" and cpu_kernel()[0] else "torch CSR"


def l1_bytes():
    """The L1 data cache of one core, where Linux says (in sysfs), else 32 KB."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == "1" and (index / "type").read_text().strip() != "Instruction":
                size = (index / "size").read_text().strip()
                return int(size[:-1]) * {"K": 1024, "M": 1024 ** 2}[size[-1]] if size[-1] in "KM" else int(size)
        except (OSError, ValueError):
            break
    return 32 * 1024


def padded_width(batch):
    """The batch rounded up to whole vectors of csr_kernel.c, as it lays out the activations."""
    vector = cpu_kernel()[0].vector_width()
    return -(-batch // vector) * vector


# A layer with at least this share of nonzero weights is stored dense (as a compacted unit-pruned net's are): a
# dense product streams its weights in vectors with no index to load, which beats skipping a quarter of them.
DENSE_FROM = 0.75
# The samples a thread takes in one round: a larger batch goes in rounds of tiles, so that a tile's activations
# (1000 rows x 64 x 4 bytes) stay in the L2 cache, where one slice of 500 samples a thread would not.
TILE = 64


def sparse_plan(weights, batch=100):
    """What csr_kernel.c takes for the pruned net `weights`, laid out for `batch`: the dead units removed
    (compact), then each layer either dense or as its nonzeros by column panel, segment (a row's part of a
    panel) and column. Any batch runs on any plan; a larger one than `batch` goes in rounds."""
    threads = torch.get_num_threads()
    width = padded_width(min(-(-batch // threads), TILE))  # one thread's slice of a round, the rows of its activations
    smaller, layers, arrays, l1 = compact(weights), [], [], l1_bytes()
    for number, weight in enumerate(smaller, 1):
        rows, columns = weight.shape
        nonzeros = int(weight.count_nonzero())
        l1_panels = -(-columns * 4 * width // l1)  # panels whose rows of activations fit the L1 cache
        if nonzeros >= DENSE_FROM * rows * columns:
            arrays.append({"val": weight.float().contiguous()})
            layers.append(Layer(val=arrays[-1]["val"].data_ptr(), rows=rows, columns=columns, panels=l1_panels,
                                dense=1))
        else:
            # Fewer panels where a row would have fewer than 20 nonzeros in one: short segments cost more in
            # loads and stores of sums than the L1 cache saves (docs/speed.md, "The kernel").
            panels = max(1, min(l1_panels, -(-nonzeros // (20 * rows))))
            arrays.append(segments(weight, panels, every_row_last=number < len(smaller), row_bytes=4 * width))
            layers.append(Layer(**{name: a.data_ptr() for name, a in arrays[-1].items()}, rows=rows, columns=columns,
                                panels=panels, dense=0))
    features = max(max(w.shape) for w in smaller)
    scratch = torch.empty(2 * threads * features * width, dtype=torch.float32)  # each thread's two activations
    return {"layers": (Layer * len(layers))(*layers), "arrays": arrays, "threads": threads,  # arrays: keeps the memory
            "width": width, "scratch": scratch, "inputs": smaller[0].shape[1], "outputs": weights[-1].shape[0],
            "run": cpu_kernel()[0].csr_forward, "one": column_plan(smaller)}


def segments(weight, panels, every_row_last, row_bytes):
    """weight's nonzeros as csr_kernel.c's segments: by column panel, then segment (a row's part of the panel),
    shortest first, then column, each column given as the offset of its row of activations, row_bytes apart.
    The first panel has a segment for every row, as it sets the sums; so does the last where ReLU follows
    (every_row_last), as it applies it."""
    rows, columns = weight.shape
    check.fits(columns * row_bytes, 31, "a layer's columns times a row of activations, in bytes")  # int32 offsets
    check.fits(rows, 31, "a layer's rows")
    row, column = weight.nonzero(as_tuple=True)
    panel = column * panels // columns
    counts = torch.bincount(panel * rows + row, minlength=panels * rows).view(panels, rows)
    segment_rows = []
    for q in range(panels):
        every_row = q == 0 or (q == panels - 1 and every_row_last)
        rows_q = torch.arange(rows) if every_row else counts[q].nonzero().flatten()
        segment_rows.append(rows_q[torch.argsort(counts[q, rows_q], stable=True)])
    segment_panel = torch.cat([torch.full((len(r),), q) for q, r in enumerate(segment_rows)])
    segment_row = torch.cat(segment_rows)
    start = torch.zeros(len(segment_row) + 1, dtype=torch.int64)
    start[1:] = counts[segment_panel, segment_row].cumsum(0)
    first = torch.zeros(panels + 1, dtype=torch.int64)
    first[1:] = torch.bincount(segment_panel, minlength=panels).cumsum(0)
    segment = torch.empty(panels * rows, dtype=torch.int64)  # each (panel, row)'s place among the segments
    segment[segment_panel * rows + segment_row] = torch.arange(len(segment_row))
    order = torch.argsort(segment[panel * rows + row] * columns + column)
    return {"start": start, "row": segment_row.int(), "offset": (column[order] * row_bytes).int(),
            "val": weight[row[order], column[order]].float().contiguous(), "panel": first}


# One image goes on two threads (or torch's, if fewer) where its work is at least this many nonzeros, and on
# one below, where the barrier after each layer costs as much as the second thread saves. A weight of a dense
# layer counts as an eighth of a nonzero, as vectorised it costs that much less. One thread against two, per k:
# python benchmarks/one_image_threads.py (docs/speed/one_image_threads.md).
TWO_THREADS_FROM = 50_000


def padded_features(smaller):
    """The widest layer's features, rounded up to 16 as column_kernel.c rounds them: whole cache lines."""
    return -(-max(max(w.shape) for w in smaller) // 16) * 16


def column_plan(smaller, threads=None):
    """What column_kernel.c takes for one image through the compacted net `smaller`: each layer dense, as above,
    column by column, or as its nonzeros by column; the first layer with its row sums. `threads`: by default,
    torch's, up to two, where the net's work reaches TWO_THREADS_FROM, else one."""
    layers, arrays = [], []
    for number, weight in enumerate(smaller):
        rows, columns = weight.shape
        check.fits(rows, 16, "a layer's rows")  # uint16 rows
        check.fits(int(weight.count_nonzero()), 31, "a layer's nonzeros")  # int32 starts
        weight = weight.float()
        arrays.append({"row_sum": weight.sum(dim=1).contiguous()} if number == 0 else {})
        if int(weight.count_nonzero()) >= DENSE_FROM * rows * columns:
            arrays[-1]["val"] = weight.T.contiguous()
        else:
            column, row = weight.T.nonzero(as_tuple=True)  # by column, then row
            start = torch.zeros(columns + 1, dtype=torch.int32)
            start[1:] = torch.bincount(column, minlength=columns).cumsum(0)
            arrays[-1] |= {"start": start, "row": row.to(torch.int16), "val": weight[row, column].contiguous()}
        layers.append(ColumnLayer(**{name: a.data_ptr() for name, a in arrays[-1].items()}, rows=rows, columns=columns,
                                  dense="start" not in arrays[-1]))
    layers = (ColumnLayer * len(layers))(*layers)
    if threads is None:
        work = sum(a["val"].numel() / (1 if "start" in a else 8) for a in arrays)  # a layer's nonzeros, or weights
        threads = min(torch.get_num_threads(), 2) if work >= TWO_THREADS_FROM else 1
    # each thread's: two layers' sums, its activations and its list of the nonzero ones, in whole cache lines
    scratch = torch.empty(4 * threads * padded_features(smaller), dtype=torch.float32)
    # The call's fixed arguments as plain ints, made once: csr_kernel_forward says why.
    return {"layers": layers, "arrays": arrays, "scratch": scratch, "threads": threads,
            "run": cpu_kernel()[0].column_forward,
            "arguments": (ctypes.addressof(layers), len(smaller), scratch.data_ptr(), threads)}


def csr_kernel_forward(plan, x):
    """The whole forward pass in one call to the kernels: column_kernel.c for one image, csr_kernel.c for more. One call
    at a time per plan: they share its scratch. x [batch, inputs]: of another float type, or not contiguous, it is
    copied to what the kernels read; not a float tensor on the CPU of that shape, it is refused (csrc/check.py)."""
    # One image at 99 % sparsity is a short pass, so the Python around it counts (python
    # benchmarks/one_image_threads.py times the call): an input the kernels can read as it is passes a few checks
    # on one read of its shape, which also gives the batch; any other goes through the door's full check.
    shape = x.shape if type(x) is torch.Tensor else None
    if (shape is None or len(shape) != 2 or shape[1] != plan["inputs"] or x.dtype is not torch.float32
            or not x.is_cpu or not x.is_contiguous()):
        x = check.as_input(x, "the images", plan["inputs"])
        shape = x.shape
    batch = shape[0]
    logits = torch.empty(batch, plan["outputs"])  # dtype=torch.float32 here would cost 0.2 us a call, so:
    if logits.dtype is not torch.float32:  # a default dtype other than float32 (torch.set_default_dtype)
        logits = logits.float()
    if batch == 1:
        layers, n_layers, scratch, threads = plan["one"]["arguments"]
        plan["one"]["run"](layers, n_layers, x.data_ptr(), logits.data_ptr(), scratch, threads)
        return logits
    plan["run"](plan["layers"], len(plan["layers"]), x.data_ptr(), batch, logits.data_ptr(),
                plan["scratch"].data_ptr(), plan["threads"], plan["width"])
    return logits
