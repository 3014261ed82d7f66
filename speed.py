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
KERNEL_FLAGS = ["-O3", "-funroll-loops", "-march=native", "-fopenmp", "-shared", "-fPIC"]


class Layer(ctypes.Structure):
    """One layer, as csr_kernel.c's layer_t."""
    _fields_ = [*((name, ctypes.c_void_p) for name in ("start", "row", "offset", "val", "panel")),
                *((name, ctypes.c_int64) for name in ("rows", "columns", "panels", "dense"))]


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
    pointer = ctypes.c_void_p  # the arrays' types are checked where they are made (sparse_plan), not per call
    kernel.csr_forward.argtypes = [pointer, ctypes.c_int, pointer, ctypes.c_long, pointer, pointer, ctypes.c_int,
                                   ctypes.c_long]
    kernel.csr_forward.restype = None
    return kernel, ""


def cpu_kernel():
    return compile_kernel(os.environ.get("CC", "cc"))


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
# net pruned to 3/4 ran 13 % faster stored dense than as nonzeros here, one pruned to 1/2 19 % slower.
DENSE_FROM = 0.75


def sparse_plan(weights, batch=100):
    """What csr_kernel.c takes for the pruned net `weights`, laid out for `batch`: the dead units removed
    (compact), then each layer either dense or as its nonzeros by column panel, segment (a row's part of a
    panel) and column. Any batch runs on any plan; a larger one than `batch` goes in rounds."""
    threads = torch.get_num_threads()
    width = padded_width(-(-batch // threads))  # one thread's slice of the batch, the rows of its activations
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
            # loads and stores of sums than the L1 cache saves (measured at 50-99 % sparsity).
            panels = max(1, min(l1_panels, -(-nonzeros // (20 * rows))))
            arrays.append(segments(weight, panels, every_row_last=number < len(smaller), row_bytes=4 * width))
            layers.append(Layer(**{name: a.data_ptr() for name, a in arrays[-1].items()}, rows=rows, columns=columns,
                                panels=panels, dense=0))
    features = max(max(w.shape) for w in smaller)
    return {"layers": (Layer * len(layers))(*layers), "arrays": arrays, "threads": threads,  # arrays: keeps the memory
            "width": width, "scratch": torch.empty(2 * threads * features * width),  # each thread's two activations
            "outputs": weights[-1].shape[0], "run": cpu_kernel()[0].csr_forward}


def segments(weight, panels, every_row_last, row_bytes):
    """weight's nonzeros as csr_kernel.c's segments: by column panel, then segment (a row's part of the panel),
    shortest first, then column, each column given as the offset of its row of activations, row_bytes apart.
    The first panel has a segment for every row, as it sets the sums; so does the last where ReLU follows
    (every_row_last), as it applies it."""
    rows, columns = weight.shape
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


def csr_kernel_forward(plan, x):
    """The whole forward pass in one call to csr_kernel.c. One call at a time per plan: they share its scratch."""
    x = x.contiguous()
    logits = torch.empty(len(x), plan["outputs"])
    plan["run"](plan["layers"], len(plan["layers"]), x.data_ptr(), len(x), logits.data_ptr(),
                plan["scratch"].data_ptr(), plan["threads"], plan["width"])
    return logits


def fastest_path(weights, device, batch=100):
    """(name, forward, layers) of the fastest path for the pruned net `weights` on `device`: csr_kernel.c on
    the CPU, laid out for `batch` (any other runs too). Without it, the compacted net, dense: on the CPU,
    torch CSR only where under a tenth of the compacted net's weights are nonzero, as it beat dense from
    there (README, "Speed"). A GPU, not timed here, gets the compacted net dense, as cuBLAS runs it."""
    if torch.device(device).type == "cpu" and cpu_kernel()[0]:
        return "csr_kernel.c", csr_kernel_forward, sparse_plan(weights, batch)
    smaller = compact(weights)
    if torch.device(device).type == "cpu" and flop_ceiling(smaller, smaller) > 10:
        return "torch CSR", torch_sparse_forward, [w.to_sparse_csr() for w in weights]
    return "compact", dense_forward, transposed(smaller)


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
    paths["sparse"] = (csr_kernel_forward, sparse_plan(weights, len(x))) if kernel else paths["csr"]
    smaller = compact(weights)
    paths["compact"] = (dense_forward, transposed(smaller))
    row = time_paths(paths, x)
    for name in list(paths)[1:]:
        row[f"{name}_speedup"] = row["dense_ms"] / row[f"{name}_ms"]
    row["flop_ceiling"] = flop_ceiling(weights, weights)
    row["compact_flop_ceiling"] = flop_ceiling(weights, smaller)
    return row


def time_paths(paths, x):
    """The median and IQR, in ms, of each forward in paths = {name: (forward, layers)} on x, timed in
    interleaved rounds: a slow spell of a shared machine hits every path alike."""
    timers, calls, blocks = {}, {}, {}
    for name, (forward, layers) in paths.items():
        forward(layers, x)  # warm-up, which also compiles the kernel on first use
        start = time.perf_counter()
        forward(layers, x)
        seconds = time.perf_counter() - start
        calls[name] = max(1, round(0.005 / seconds))  # blocks of about 5 ms
        # Three blocks a round, but one for a path slower than 20 ms a call (torch COO at low sparsity), so that
        # it does not stretch the sweep. Dense on a slow machine (5 ms a call) keeps its three.
        blocks[name] = 3 if seconds < 0.02 else 1
        timers[name] = benchmark.Timer("forward(layers, x)", globals={"forward": forward, "layers": layers, "x": x},
                                       num_threads=torch.get_num_threads())
    runs = {name: [] for name in paths}
    for _ in range(3):
        for name, timer in timers.items():
            runs[name] += [timer.timeit(calls[name]) for _ in range(blocks[name])]
    row = {}
    for name, measurements in runs.items():
        merged = benchmark.Measurement.merge(measurements)[0]
        row[f"{name}_ms"], row[f"{name}_iqr_ms"] = 1e3 * merged.median, 1e3 * merged.iqr
    return row


def machine(device):
    """The hardware a timing ran on, in words."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            info = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in f if ":" in line)}
        cpu, flags = info.get("model name", ""), info.get("flags", "").split()
    except OSError:  # not Linux
        cpu, flags = "", []
    # What csr_kernel.c's speed turns on: the vectors -march=native gives it, and the L1 its panels are sized to.
    vectors = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    return ", ".join([cpu or platform.processor() or platform.machine(), f"{os.cpu_count()} CPUs",
                      *([vectors] if vectors else []), f"{l1_bytes() // 1024} KB L1d per core"])
