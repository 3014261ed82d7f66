"""Where the time of one batch goes on the sparse path: the call from Python, the C pass's costs that do not
grow with the batch, each vector of samples, and the padding of the batch to whole vectors.

csr_kernel.c gives each thread a slice of the batch in whole vectors (8 samples with AVX2, 16 with AVX-512)
and streams every nonzero of the net past each thread once, with one load and one multiply-add for each
vector of its slice. So the C pass takes about a + b x (vectors a thread): b is a vector's pass over the
nonzeros; a is what does not depend on the batch, mostly each nonzero's own weight, column and loop step,
then each row's sums, the threads' start and the end of each layer. Timing the bare C call (its arguments
made beforehand) on batches that fill 1, 2, ... vectors a thread gives a and b by a least-squares line,
and how far the batch itself lies from that line. The call as eval.py times it, through
kernel.csr_kernel_forward, less the bare call at the same batch, is Python's part (the wrapper, the ctypes
call, the logits' allocation). A batch is cut into whole vectors, and a vector costs its load whatever
it holds: at 100 on two threads with AVX2, 13 vectors of 8 (4 lanes empty), one thread takes 7 and the
other 6 and then waits, so the pass takes 7 vectors' time where 6.25 would hold the samples. The
"rounding to vectors" column is b times that difference.

Each time is the median of --repeats runs of benchmarks/harness.py's time_paths, each the median of interleaved rounds in one
process, so that a slow spell of a shared machine hits every batch alike.

    python benchmarks/batch_costs.py --checkpoint checkpoints/seed0.pt --out docs/speed/batch_costs.md
"""
import argparse
import ctypes
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import checkpoints  # noqa: E402
import files  # noqa: E402
import results  # noqa: E402
import utils  # noqa: E402
from eval import parse_ks  # noqa: E402
from fastpath.plan import TILE, csr_kernel_forward, kernel_to_time, sparse_plan  # noqa: E402
from fastpath.compact import compact  # noqa: E402
from prune import prune  # noqa: E402
from benchmarks.harness import machine, time_paths  # noqa: E402

HEADER = ["k %", "nonzeros", "the call µs", "C pass µs", "Python µs", "whatever the batch µs", "a vector a thread µs",
          "ns a nonzero and vector", "rounding to vectors µs", "line's error at the batch"]


def line_fit(xs, ys):
    """(intercept, slope) of the least-squares line through the points (xs, ys)."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


def bare_call(arguments, _x):
    """csr_kernel.c's pass with its arguments made beforehand (the batch's images among them): no Python but
    the call."""
    arguments[0](*arguments[1:])


def cell(value):
    """A table cell: a count with thousands separators, a time to 0.1 (0.01 below 1), text as it is."""
    if isinstance(value, int):
        return f"{value:,}"
    return value if isinstance(value, str) else f"{value:.{2 if abs(value) < 1 else 1}f}"


def costs(weights, batch, images, repeats, vector):
    """One row of HEADER for the pruned net `weights` at `batch`, laid out as eval.py lays it out for it; `vector`:
    the kernel's samples a vector."""
    plan = sparse_plan(weights, batch)
    threads = plan["threads"]
    slice_vectors = plan["width"] // vector  # the most vectors a thread takes at `batch`: the pass waits for it
    logits = torch.empty(len(images), plan["outputs"])

    def arguments(n):  # the bare call on the first n images
        return (plan["run"], ctypes.addressof(plan["layers"]), len(plan["layers"]), images.data_ptr(), n,
                logits.data_ptr(), plan["scratch"].data_ptr(), threads, plan["width"])
    full = {v: threads * v * vector for v in range(1, slice_vectors + 1)}  # batches that fill v vectors a thread
    paths = {"call": (csr_kernel_forward, plan), "bare": (bare_call, arguments(batch)),
             **{f"full {v}": (bare_call, arguments(n)) for v, n in full.items()}}
    timed = [time_paths(paths, images[:batch]) for _ in range(repeats)]
    times = {name: 1e3 * statistics.median(t[f"{name}_ms"] for t in timed) for name in paths}  # µs
    fixed, per_vector = line_fit(list(full), [times[f"full {v}"] for v in full])
    samples_a_thread = batch / threads  # the lanes a thread would fill, the batch shared evenly
    nonzeros = sum(int(w.count_nonzero()) for w in compact(weights))
    fitted = fixed + per_vector * slice_vectors
    return [nonzeros, times["call"], times["bare"], times["call"] - times["bare"], fixed, per_vector,
            1e3 * per_vector / nonzeros, per_vector * (slice_vectors - samples_a_thread / vector),
            f"{100 * (times['bare'] - fitted) / fitted:+.0f} %"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="model.pt", help="the net to prune; default: %(default)s")
    parser.add_argument("--ks", type=parse_ks, default="90,95,99",
                        help="weight pruning's k, comma-separated; default: %(default)s")
    parser.add_argument("--batch", type=utils.positive_int, default=100, help="default: %(default)s")
    parser.add_argument("--repeats", type=utils.positive_int, default=5,
                        help="runs of benchmarks/harness.py's time_paths per k, each of interleaved rounds; the median of their "
                             "medians is kept; default: %(default)s")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if args.out:
        files.check_outputs(files=[args.out])
    kernel = kernel_to_time()
    if args.batch > torch.get_num_threads() * TILE:  # a larger one goes in rounds, which the line does not model
        raise utils.UserError(f"--batch {args.batch}: at most {torch.get_num_threads() * TILE} on "
                              f"{torch.get_num_threads()} threads, one round of csr_kernel.c ({TILE} samples a thread)")
    smallest = torch.get_num_threads() * kernel.vector_width() + 1  # two vectors a thread, for a line
    if args.batch < smallest:
        raise utils.UserError(f"--batch {args.batch}: at least {smallest} here, so that a thread takes two vectors "
                              "of samples and the line has two points")
    model, _ = checkpoints.load(args.checkpoint)
    # Images whose values do not matter (the batch kernel skips nothing), as many as the largest batch timed.
    images = torch.rand(torch.get_num_threads() * TILE, 784, generator=torch.Generator().manual_seed(0))

    rows = []
    for k in args.ks:
        weights = [layer.weight.detach() for layer in prune(model, "weight", k).layers]
        rows.append([f"{k:g}", *map(cell, costs(weights, args.batch, images, args.repeats, kernel.vector_width()))])
        print(f"k {k:g} timed", file=sys.stderr)
    text = (f"Batch {args.batch}, weight pruning, {machine('cpu')}, {torch.get_num_threads()} threads "
            f"(`python benchmarks/batch_costs.py`): the median of {args.repeats} runs, each of interleaved rounds in one "
            f"process.\n\n"
            + results.markdown(HEADER, rows))
    print(text)
    if args.out:
        files.write_atomic(args.out, lambda f: f.write((text + "\n").encode()))


if __name__ == "__main__":
    utils.run(main)
