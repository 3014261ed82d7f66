"""The timing harness: every forward path of a pruned net timed alike, in interleaved rounds, with the FLOP
ceilings beside; the libraries a user might try instead; the machine a timing ran on. eval.py times each k
with it, and the benchmarks their own paths.
"""
import functools
import time
import logging
import os
import platform

import torch

import results
from fastpath.compact import compact
from fastpath.paths import dense_forward, flop_ceiling, to_csr, torch_sparse_forward, transposed
from fastpath.plan import csr_kernel_forward, l1_bytes, sparse_path, sparse_plan


@functools.cache
def torch_benchmark():
    """torch.utils.benchmark, imported without the warning its import of cpp_extension logs on a machine without
    CUDA; the logger is left as it was."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        logger.setLevel(level)
    return benchmark


def scipy_forward(weights, x):
    """Weights as scipy.sparse CSR matrices (or sparse_dot_mkl's product, see peer_paths): the activations are
    numpy arrays [features, batch] between layers, as in torch_sparse_forward."""
    import numpy as np
    multiply, weights = weights
    h = np.ascontiguousarray(x.numpy().T)
    for weight in weights[:-1]:
        h = np.maximum(multiply(weight, h), 0)
    return torch.from_numpy(np.ascontiguousarray(multiply(weights[-1], h).T))


def peer_libraries():
    """({name: sparse times dense, as f(scipy CSR matrix, ndarray)}, notes): the libraries a user might try in
    place of this repo's kernel, those installed (scipy.sparse CSR, one thread; MKL's sparse BLAS through
    sparse_dot_mkl, its threads), and a note for each that is not."""
    try:
        import scipy.sparse  # noqa: F401
    except ImportError:
        return {}, ["scipy.sparse is not installed: pip install scipy"]
    products = {"scipy": lambda weight, h: weight @ h}
    try:
        from sparse_dot_mkl import dot_product_mkl
        products["mkl"] = dot_product_mkl
    except (ImportError, OSError) as e:  # OSError: the package is there, MKL's library is not
        return products, [f"MKL's sparse BLAS is not timed ({e}): pip install sparse_dot_mkl mkl (about 1 GB)"]
    return products, []


def peer_paths(weights):
    """({name: (forward, layers)}, notes): the installed peer libraries' forwards on `weights`."""
    products, notes = peer_libraries()
    if not products:
        return {}, notes
    import scipy.sparse
    csr = [scipy.sparse.csr_matrix(w.cpu().numpy()) for w in weights]
    return {name: (scipy_forward, (product, csr)) for name, product in products.items()}, notes


def numpy_dense_forward(weights_t, x):
    """The dense net by numpy's BLAS (OpenBLAS in numpy's wheels), `weights_t` as dense_forward takes them, as
    float32 arrays: the baseline a user's other library gives, which on some CPUs beats torch's MKL."""
    import numpy as np
    h = x.numpy()
    for weight_t in weights_t[:-1]:
        h = h @ weight_t
        np.maximum(h, 0, out=h)
    return torch.from_numpy(h @ weights_t[-1])


DENSE = ("dense_torch", "dense_numpy")  # every dense product timed; speedups are against the fastest


def time_forwards(weights, x, peers=False):
    """Median and spread of the forward pass on x for every path, timed in one run, the ceilings, and each path's
    rate; with peers, the libraries of peer_paths too, on the same weights.

    Dense is timed by every product at hand (DENSE), and dense_ms is the fastest of them: a speedup against a
    slower dense would credit the sparse path with the baseline's slowness (a speedup over the FLOP ceiling says
    so). Compaction is timed for every method, not only unit pruning: weight pruning at 90 % leaves whole units
    dead too, and a smaller dense net can beat a sparse one.
    """
    on_cpu = x.device.type == "cpu"
    dense_t = transposed(weights)
    paths = {"dense_torch": (dense_forward, dense_t),
             **({"dense_numpy": (numpy_dense_forward, [w.cpu().numpy() for w in dense_t])} if on_cpu else {}),
             "coo": (torch_sparse_forward, [w.to_sparse() for w in weights]),
             "csr": (torch_sparse_forward, to_csr(weights))}
    # The default sparse path: on the CPU csr_kernel.c, which beats torch's CSR (and COO, several times
    # over); on a GPU, or with no C compiler, torch's CSR (timed twice then, under both names).
    kernel = sparse_path(x.device) == "csr_kernel.c"
    paths["sparse"] = (csr_kernel_forward, sparse_plan(weights, len(x))) if kernel else paths["csr"]
    smaller = compact(weights)
    paths["compact"] = (dense_forward, transposed(smaller))
    if peers and on_cpu:
        paths |= peer_paths(weights)[0]
    row = time_paths(paths, x)
    fastest = min((name for name in DENSE if name in paths), key=lambda name: row[f"{name}_ms"])
    row["dense_ms"], row["dense_numpy_fastest"] = row[f"{fastest}_ms"], float(fastest == "dense_numpy")
    for name in paths:
        if name not in DENSE:
            row[f"{name}_speedup"] = row["dense_ms"] / row[f"{name}_ms"]
    row["flop_ceiling"] = flop_ceiling(weights, weights)
    row["compact_flop_ceiling"] = flop_ceiling(weights, smaller)
    # Multiply-adds a second, in billions: the dense net's all, the sparse path's its nonzeros, as a kernel runs.
    row["dense_gmacs"] = len(x) * sum(w.numel() for w in weights) / row["dense_ms"] / 1e6
    row["sparse_gmacs"] = len(x) * sum(int(w.count_nonzero()) for w in weights) / row["sparse_ms"] / 1e6
    return row


# What sets the dense baselines' threads and kernels, recorded with every timing (numpy's OpenBLAS reads the first
# three; benchmarks/timing.py runs without the two for old OpenBLAS builds, which slow a current one).
BLAS_ENVIRONMENT = ("OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
ROUNDS, BLOCKS = 3, 3  # each path's time: the median of its blocks of about 5 ms, ROUNDS rounds of BLOCKS each
SLOW = 0.02  # seconds a call: a path slower than this (torch COO at low sparsity) gets one block a round
FAR = 2  # a block more than FAR times its path's median, or under 1 / FAR of it, is counted in <path>_far_blocks
HOW = (f"a time: the median of {ROUNDS * BLOCKS} blocks of ~5 ms in one process ({ROUNDS} if over {SLOW * 1e3:g} ms "
       f"a call), paths interleaved; *: a block over {FAR}x or under 1/{FAR} of it")


def time_paths(paths, x):
    """The median and IQR, in ms, of each forward in paths = {name: (forward, layers)} on x, timed in
    interleaved rounds, so that a slow spell of a shared machine hits every path alike; and how many of its blocks
    lie far from that median (<name>_far_blocks), as a spell that long moves a median too."""
    benchmark = torch_benchmark()
    timers, calls, blocks = {}, {}, {}
    for name, (forward, layers) in paths.items():
        forward(layers, x)  # warm-up, which also compiles the kernel on first use
        start = time.perf_counter()
        forward(layers, x)
        seconds = time.perf_counter() - start
        calls[name] = max(1, round(0.005 / seconds))  # blocks of about 5 ms
        # One block a round for a slow path, so that it does not stretch the sweep; dense on a slow machine (5 ms a
        # call) keeps its three.
        blocks[name] = BLOCKS if seconds < SLOW else 1
        timers[name] = benchmark.Timer("forward(layers, x)", globals={"forward": forward, "layers": layers, "x": x},
                                       num_threads=torch.get_num_threads())
    runs = {name: [] for name in paths}
    for _ in range(ROUNDS):
        for name, timer in timers.items():
            runs[name] += [timer.timeit(calls[name]) for _ in range(blocks[name])]
    row = {}
    for name, measurements in runs.items():
        merged = benchmark.Measurement.merge(measurements)[0]
        row[f"{name}_ms"], row[f"{name}_iqr_ms"] = 1e3 * merged.median, 1e3 * merged.iqr
        row[f"{name}_far_blocks"] = sum(not merged.median / FAR <= block.median <= FAR * merged.median
                                        for block in measurements)
    return row


def time_net(net, images, batches, peers):
    """The timing columns of one pruned net (an MLP), at each batch size (results.batch_column names them)."""
    row = {}
    for batch in batches:
        with torch.no_grad():
            timed = time_forwards([layer.weight.detach() for layer in net.layers], images[:batch], peers)
        row |= {results.batch_column(column, batch, batches): value for column, value in timed.items()
                if batch == batches[0] or column.endswith(results.TIMED)}
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
