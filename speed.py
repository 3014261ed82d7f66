"""The forward pass's speed: dense, torch.sparse (COO, CSR), csr_kernel.c and compaction, timed alike.

Every forward below maps the same images [batch, 784] to the same logits [batch, 10], given the
pruned net's weight matrices (the logits layer's last).
"""
import ctypes
import functools
import logging
import os
import platform
import shlex
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import torch

# torch.utils.benchmark pulls in cpp_extension, which logs a warning on machines without CUDA.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")  # it works; the note is noise


def transposed(weights):
    """Weights as [in_features, out_features], contiguous: the layout dense_forward multiplies by."""
    return [w.T.contiguous() for w in weights]


def dense_forward(weights_t, x):
    # x @ W.T with W.T stored contiguous, and ReLU in place: the small GEMMs of a compacted net ran 5-10 %
    # faster so than through F.linear and a fresh ReLU output, measured here; the full-size ones as fast.
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


# csr_kernel.c, built with the machine's C compiler at first use. Why C and not numba: README, "Speed".
PANEL = 128  # columns per panel: 64 samples of 128 rows of activations fill the 32 KB L1 cache (100-160 measured best)
KERNEL_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]


@functools.cache
def compile_kernel(compiler):
    """(the compiled csr_kernel.c, "") or (None, why not)."""
    with tempfile.TemporaryDirectory() as build:  # a fresh build each run: nothing stale, nothing to clean up
        library = Path(build) / "csr_kernel.so"
        command = [compiler, *KERNEL_FLAGS, str(Path(__file__).with_name("csr_kernel.c")), "-o", str(library)]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
            kernel = ctypes.CDLL(str(library))  # loaded, the file can go
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", None) or str(e)
            return None, f"{shlex.join(command)} failed: {detail.strip().splitlines()[-1] if detail.strip() else e}"
    pointer = ctypes.c_void_p  # the arrays' types are checked where they are made (csr_panels), not per call
    kernel.csr_matmul.argtypes = [*[pointer] * 5, *[ctypes.c_long] * 3, ctypes.c_int, ctypes.c_int]
    kernel.csr_matmul.restype = None
    return kernel, ""


def cpu_kernel():
    return compile_kernel(os.environ.get("CC", "cc"))


def sparse_path(device):
    return "csr_kernel.c" if torch.device(device).type == "cpu" and cpu_kernel()[0] else "torch CSR"


def csr_panels(weight):
    """The arrays csr_kernel.c takes: W's nonzeros by column panel, then row, then column, and where each
    (panel, row) starts."""
    rows, columns = weight.shape
    row, column = weight.nonzero(as_tuple=True)  # row-major order: by row, then column
    panel_row = column // PANEL * rows + row
    order = torch.argsort(panel_row, stable=True)
    panels = -(-columns // PANEL)
    crow = torch.zeros(panels * rows + 1, dtype=torch.int64)
    crow[1:] = torch.bincount(panel_row, minlength=panels * rows).cumsum(0)
    arrays = (crow, column[order].int(), weight[row[order], column[order]].float().contiguous())
    return arrays, [a.data_ptr() for a in arrays], rows, panels  # the tensors keep their memory alive


def csr_kernel_forward(layers, x):
    """Each layer through csr_kernel.c, activations kept [features, batch], the batch padded to whole vectors."""
    kernel, threads = cpu_kernel()[0], torch.get_num_threads()
    batch, width = x.shape[0], -(-x.shape[0] // 8) * 8
    h = torch.zeros(x.shape[1], width)
    h[:, :batch] = x.T
    for i, (_, pointers, rows, panels) in enumerate(layers):
        out = torch.empty(rows, width)
        kernel.csr_matmul(*pointers, h.data_ptr(), out.data_ptr(), rows, panels, width, i < len(layers) - 1, threads)
        h = out
    return h[:, :batch].T


def compact(weights):
    """The pruned net without its dead units, as a smaller dense net with the same outputs.

    A unit whose weights are all zero outputs relu(0) = 0 (there are no biases), so its row, and the
    matching input column of the next layer, can go. One unit per layer always stays, so that
    every layer keeps a shape.
    """
    smaller, inputs = [], torch.arange(weights[0].shape[1], device=weights[0].device)
    for weight in weights[:-1]:
        weight = weight[:, inputs]
        alive = weight.ne(0).any(dim=1)
        alive[0] |= not alive.any()
        inputs = alive.nonzero().flatten()
        smaller.append(weight[inputs].contiguous())
    smaller.append(weights[-1][:, inputs].contiguous())
    return smaller


def flop_ceiling(weights, used):
    """Multiply-adds of the dense net over those left in `used`, counting only nonzero weights."""
    return sum(w.numel() for w in weights) / sum(int(w.count_nonzero()) for w in used)


def time_forwards(weights, x):
    """Median and spread of the forward pass on x for every path, timed in one run, and the ceilings.

    Compaction is timed for every method, not only unit pruning: weight pruning at 90 % leaves whole
    units dead too, and a smaller dense net can beat a sparse one.
    """
    paths = {"dense": (dense_forward, transposed(weights)),
             "coo": (torch_sparse_forward, [w.to_sparse() for w in weights]),
             "csr": (torch_sparse_forward, [w.to_sparse_csr() for w in weights])}
    # The default sparse path: on the CPU csr_kernel.c, which beats torch's CSR (and COO, several times
    # over); on a GPU, or with no C compiler, torch's CSR (timed twice then, under both names).
    kernel = sparse_path(x.device) == "csr_kernel.c"
    paths["sparse"] = (csr_kernel_forward, [csr_panels(w) for w in weights]) if kernel else paths["csr"]
    smaller = compact(weights)
    paths["compact"] = (dense_forward, transposed(smaller))
    timers, calls = {}, {}
    for name, (forward, layers) in paths.items():
        forward(layers, x)  # warm-up, which also compiles the kernel on first use
        start = time.perf_counter()
        forward(layers, x)
        calls[name] = max(1, round(0.005 / (time.perf_counter() - start)))  # blocks of about 5 ms
        timers[name] = benchmark.Timer("forward(layers, x)", globals={"forward": forward, "layers": layers, "x": x},
                                       num_threads=torch.get_num_threads())
    runs = {name: [] for name in paths}
    for _ in range(3):  # interleaved rounds: a slow spell of this shared machine hits every path alike
        for name, timer in timers.items():
            blocks = 3 if calls[name] > 1 else 1  # a path slower than 5 ms a call gets one block a round
            runs[name] += [timer.timeit(calls[name]) for _ in range(blocks)]
    row = {}
    for name, measurements in runs.items():
        merged = benchmark.Measurement.merge(measurements)[0]
        row[f"{name}_ms"], row[f"{name}_iqr_ms"] = 1e3 * merged.median, 1e3 * merged.iqr
    for name in list(paths)[1:]:
        row[f"{name}_speedup"] = row["dense_ms"] / row[f"{name}_ms"]
    row["flop_ceiling"] = flop_ceiling(weights, weights)
    row["compact_flop_ceiling"] = flop_ceiling(weights, smaller)
    return row


def machine(device):
    """The hardware a timing ran on, in words."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:  # not Linux
        cpu = ""
    return f"{cpu or platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
