"""Prune the trained MLP to sparsity k, each hidden layer on its own; measure test accuracy and speed per k."""
import argparse
import copy
import csv
import ctypes
import functools
import io
import json
import logging
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.nn.utils import prune as torch_prune
from tqdm import tqdm

# torch.utils.benchmark pulls in cpp_extension, which logs a warning on machines without CUDA.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402

import utils

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")  # it works; the note is noise
DEFAULT_KS = "0,25,50,60,70,80,90,95,97,99"
CHECKPOINTS = "the checkpoint's"  # default --dataset and --data-dir: those the checkpoint was trained on


def mask_smallest(scores, n):
    """A 0/1 mask shaped like `scores`, with zeros at its n smallest entries.

    Ties go to the lower index (a stable sort), so the mask is the same on every run and device, and
    the mask for a larger n contains the one for a smaller n. torch.topk, behind torch.nn.utils.prune's
    l1_unstructured and ln_structured, promises neither: ln_structured gives masks that are not nested
    when rows have equal norms.
    """
    mask = torch.ones(scores.numel(), device=scores.device)
    mask[scores.flatten().argsort(stable=True)[:n]] = 0
    return mask.view_as(scores)


def weight_mask(weight, fraction):
    """Zero the round(fraction * numel) weights of the smallest magnitude."""
    return mask_smallest(weight.abs(), round(fraction * weight.numel()))


def unit_mask(weight, fraction):
    """Zero the round(fraction * out_features) output units (rows) of the smallest L2 norm."""
    rows = mask_smallest(weight.norm(dim=1), round(fraction * weight.shape[0]))
    return rows[:, None].expand_as(weight).contiguous()


# A pruning method maps a weight matrix and the fraction to remove to a 0/1 mask of the same shape.
METHODS = {"weight": weight_mask, "unit": unit_mask}


def prune(model, method, k):
    """A copy of `model` with each hidden layer pruned to k percent by `method`; the logits layer is kept whole.

    The mask goes through torch.nn.utils.prune, so the copy trains with pruned weights held at zero.
    """
    pruned = copy.deepcopy(model)
    for layer in pruned.hidden:
        torch_prune.custom_from_mask(layer, "weight", METHODS[method](layer.weight.detach(), k / 100))
    return pruned


def finetune(model, train_data, epochs, lr, batch_size, seed):
    """Train the surviving weights of a pruned model; its masks hold the pruned ones at exactly zero.

    Han et al. (2015) retrain the pruned net at a lower learning rate; here SGD from `lr` (a fifth of
    train.py's) down to 0 on a cosine, without L1: the mask already decides what is kept.
    """
    optimizer, scheduler = utils.sgd(model, lr, epochs * math.ceil(len(train_data[1]) / batch_size))
    shuffle = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        utils.train_epoch(model, train_data, optimizer, batch_size, shuffle, scheduler,
                          desc=f"fine-tune {epoch}/{epochs}")


def sparsity(model):
    """Percentage of zero weights in the hidden layers and in the whole network."""
    def zeros(layers):
        return 100 * sum(int((layer.weight == 0).sum()) for layer in layers) / sum(
            layer.weight.numel() for layer in layers)
    return {"sparsity": zeros(model.hidden), "total_sparsity": zeros(model.layers)}


# ---------------------------------------------------------------------------------------------------
# Speed. Every forward below maps the same images [batch, 784] to the same logits [batch, 10].


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


def time_forwards(weights, method, x):
    """Median and spread of the forward pass on x for every path, timed in one run, and the ceilings."""
    paths = {"dense": (dense_forward, transposed(weights)),
             "coo": (torch_sparse_forward, [w.to_sparse() for w in weights]),
             "csr": (torch_sparse_forward, [w.to_sparse_csr() for w in weights])}
    # The default sparse path: on the CPU the C kernel above, which beats torch's CSR (and COO, several times
    # over); on a GPU, or with no C compiler, torch's CSR (timed twice then, under both names).
    kernel = sparse_path(x.device) == "csr_kernel.c"
    paths["sparse"] = (csr_kernel_forward, [csr_panels(w) for w in weights]) if kernel else paths["csr"]
    if method == "unit":
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
    if method == "unit":
        row["compact_flop_ceiling"] = flop_ceiling(weights, smaller)
    return row


def parse_ks(text):
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a comma-separated list such as 0,50,90, got nothing")
    ks = []
    for item in text.split(","):
        if not item.strip().isdigit() or not 0 <= int(item) < 100:
            raise argparse.ArgumentTypeError(f"expected whole numbers from 0 to 99, got {item.strip()!r}")
        ks.append(int(item))
    return sorted(set(ks))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sparsity", choices=[*METHODS, "both"], required=True, help="the pruning method")
    parser.add_argument("--ks", type=parse_ks, default=DEFAULT_KS,
                        help="sparsities to try, in percent of each hidden layer's weights or units")
    parser.add_argument("--checkpoint", default="model.pt", help="what train.py saved")
    parser.add_argument("--timing-batch", type=utils.positive_int, default=100,
                        help="images per forward pass when timing dense against sparse")
    parser.add_argument("--no-timing", action="store_true", help="measure accuracy only")
    parser.add_argument("--finetune-epochs", type=utils.non_negative_int, default=0,
                        help="epochs of training after pruning, pruned weights held at zero; results go to "
                             "<method>-finetuned (no timing: the nonzeros, so the speed, are the one-shot run's)")
    parser.add_argument("--finetune-lr", type=utils.positive_float, default=0.01,
                        help="peak learning rate of fine-tuning, annealed to 0 on a cosine")
    parser.add_argument("--seed", type=int, default=0, help="seeds the order of the images in fine-tuning")
    utils.add_data_arguments(parser)
    parser.set_defaults(dataset=CHECKPOINTS, data_dir=CHECKPOINTS)
    parser.add_argument("--results-dir", default="results", help="gets <method>.csv and <method>.json")
    parser.add_argument("--logdir", default="runs", help="TensorBoard logs go to <logdir>/<method>")
    parser.add_argument("--plot", default="plot.png", help="accuracy against k for every method in --results-dir")
    args = parser.parse_args(argv)
    methods = list(METHODS) if args.sparsity == "both" else [args.sparsity]

    device = utils.pick_device(args.device)
    model, checkpoint = utils.load_checkpoint(args.checkpoint, device)
    trained = checkpoint.get("config", {})
    dataset = trained.get("dataset", "mnist") if args.dataset == CHECKPOINTS else args.dataset
    data_dir = trained.get("data_dir", "data") if args.data_dir == CHECKPOINTS else args.data_dir
    test_data = utils.load_data(dataset, data_dir, "test", not args.no_download, device)
    for folder in (args.results_dir, args.logdir, Path(args.plot).resolve().parent):
        utils.check_writable(folder)  # after the inputs, so that bad inputs leave no trace
    timing = not (args.no_timing or args.finetune_epochs)
    sparse = sparse_path(device) if timing else None
    if sparse == "torch CSR" and torch.device(device).type == "cpu":
        print(f"note: the sparse path is torch CSR, as the C kernel did not build: {cpu_kernel()[1]}")
    command = shlex.join(["python", "eval.py", *(sys.argv[1:] if argv is None else argv)])
    config = {"command": command, **vars(args), "dataset": dataset, "data_dir": data_dir, "device": device,
              "checkpoint_config": checkpoint.get("config"), "checkpoint_accuracy": checkpoint.get("accuracy"),
              "torch": str(torch.__version__), "sparse_path": sparse,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "threads": torch.get_num_threads()}

    timing_images = test_data[0][:args.timing_batch]
    if timing and len(timing_images) < args.timing_batch:
        raise utils.UserError(f"--timing-batch {args.timing_batch} is more than the {len(timing_images)} test images")
    if args.finetune_epochs:
        train_data = utils.load_data(dataset, data_dir, "train", not args.no_download, device)
        batch_size = trained.get("batch_size", 128)
    for method in methods:
        name = f"{method}-finetuned" if args.finetune_epochs else method
        start = time.perf_counter()
        rows = []
        for k in tqdm(args.ks, desc=name, unit="k", leave=False, disable=None):
            pruned = prune(model, method, k)
            row = {"k": k}
            if args.finetune_epochs:
                row["one_shot_accuracy"] = utils.evaluate(pruned, test_data)
                finetune(pruned, train_data, args.finetune_epochs, args.finetune_lr, batch_size, args.seed)
            row |= {**sparsity(pruned), "accuracy": utils.evaluate(pruned, test_data)}
            if timing:
                with torch.no_grad():
                    row |= time_forwards([layer.weight.detach() for layer in pruned.layers], method, timing_images)
            rows.append(row)
        print(f"\n{name} pruning of {args.checkpoint} on {dataset} ({time.perf_counter() - start:.1f} s)")
        print(markdown_table(rows))
        write_results(Path(args.results_dir), name, rows, config)
        write_tensorboard(Path(args.logdir) / name, rows)
    draw_plot(Path(args.results_dir), args.plot, dataset)
    print(f"\nwrote {args.results_dir}/, {args.logdir}/ and {args.plot}; see them with: tensorboard --logdir .")


# ---------------------------------------------------------------------------------------------------
# Output. Each file is written whole or not at all, so Ctrl-C or a crash mid-sweep keeps the last good one.

# The console table: (column, heading); the CSV holds every column.
TABLE = [("k", "k %"), ("sparsity", "sparsity %"), ("total_sparsity", "whole net %"),
         ("one_shot_accuracy", "one-shot accuracy %"), ("accuracy", "accuracy %"),
         ("dense_ms", "dense ms"), ("sparse_ms", "sparse ms"), ("sparse_speedup", "sparse x"),
         ("flop_ceiling", "ceiling x"), ("csr_speedup", "torch CSR x"), ("coo_speedup", "torch COO x"),
         ("compact_ms", "compact ms"), ("compact_speedup", "compact x"), ("compact_flop_ceiling", "ceiling x")]


def markdown_table(rows):
    columns = [(c, heading) for c, heading in TABLE if c in rows[0]]
    lines = ["| " + " | ".join(heading for _, heading in columns) + " |", "|" + "---:|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format_number(row[c]) for c, _ in columns) + " |")
    return "\n".join(lines)


def format_number(value):
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 1000 else f"{value:.0f}"


def write_results(results_dir, method, rows, config):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows([{c: round(v, 4) if isinstance(v, float) else v for c, v in row.items()} for row in rows])
    utils.write_atomic(results_dir / f"{method}.csv", lambda f: f.write(text.getvalue().encode()))
    utils.write_atomic(results_dir / f"{method}.json",
                       lambda f: f.write(json.dumps({"method": method, **config}, indent=2).encode()))


def write_tensorboard(run_dir, rows):
    """Replace the TensorBoard run in `run_dir` by one point per k and column, so a re-run does not stack."""
    from torch.utils.tensorboard import SummaryWriter  # slow to import; only needed here

    new, old = (run_dir.with_name(f".{run_dir.name}.{os.getpid()}.{end}") for end in ("new", "old"))
    with SummaryWriter(new) as writer:
        for row in rows:
            for column, value in row.items():
                if column != "k":
                    writer.add_scalar(column, value, row["k"])
    if run_dir.exists():
        run_dir.rename(old)
    new.rename(run_dir)
    shutil.rmtree(old, ignore_errors=True)


def draw_plot(results_dir, path, dataset):
    """Accuracy against k for every method that has results; beside it, the speedups if they were timed."""
    import matplotlib
    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    results = {}
    for csv_path in sorted(results_dir.glob("*.csv")):
        with open(csv_path) as f:
            results[csv_path.stem] = list(csv.DictReader(f))
    timed = {method: rows for method, rows in results.items() if "sparse_speedup" in rows[0]}
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(12 if timed else 7, 4.5), squeeze=False)
    accuracy_ax = axes[0, 0]
    # One colour per method in both panels; its fine-tuned curve dashed.
    bases = sorted({name.split("-")[0] for name in results})
    color = {name: f"C{bases.index(name.split('-')[0])}" for name in results}
    for name, rows in results.items():
        accuracy_ax.plot([int(r["k"]) for r in rows], [float(r["accuracy"]) for r in rows], marker="o",
                         linestyle="--" if name.endswith("finetuned") else "-", color=color[name], label=name)
    accuracy_ax.set(xlabel="k: % of weights or units removed from each hidden layer", ylabel="test accuracy (%)",
                    title=f"Magnitude pruning of the MLP on {dataset}")
    if timed:
        speed_ax = axes[0, 1]
        for method, rows in timed.items():
            ks = [int(r["k"]) for r in rows]
            for column, style in (("sparse_speedup", "-"), ("compact_speedup", "--")):
                if column in rows[0]:
                    label = f"{method}, {column.split('_')[0]}"
                    speed_ax.plot(ks, [float(r[column]) for r in rows], style, marker="o", color=color[method],
                                  label=label)
        rows = next(iter(timed.values()))
        speed_ax.plot([int(r["k"]) for r in rows], [float(r["flop_ceiling"]) for r in rows], ":", color="grey",
                      label="FLOP ceiling (nonzeros)")
        speed_ax.axhline(1, color="black", linewidth=0.8)
        speed_ax.set(yscale="log", xlabel="k (%)", ylabel="speedup over dense (x)",
                     title="Forward pass of the pruned net against dense")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    utils.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


if __name__ == "__main__":
    utils.run(main)
