"""What a pruned layer's training step costs through masked_kernel.c (masked_layer.MaskedLinear) against torch's
dense products of the same masked weights: the forward pass, the gradient of the input and of the weights, at
batch 128, the batch train.py and retraining take, for each hidden layer of the MLP and share of weights pruned.

The kernel runs at every share here, below masked_layer.SPARSE_FROM too, to show where it starts to pay. Random
weights and masks: the cost depends on the shape and the number of nonzeros, not on their values. Times
are torch.utils.benchmark's medians, the two paths alternated --rounds times; the table gives the median of the
rounds' ratios and their range. Writes a Markdown table to --out (or stdout).

    python benchmarks/masked_layer.py --threads 1 --out docs/masked_layer.md
"""
import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.utils.benchmark as benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import files  # noqa: E402
from csrc import build  # noqa: E402
from sparse_training import masked as masked_layer  # noqa: E402
from eval import parse_ks  # noqa: E402
import utils  # noqa: E402
from model import SIZES  # noqa: E402
from benchmarks.harness import machine  # noqa: E402


def step(layer, x, weight):
    """The forward pass and both gradients of one layer, as a training step takes them."""
    x.grad = weight.grad = None
    layer(x).sum().backward()


def time_step(function, *args):
    timer = benchmark.Timer("function(*args)", globals={"function": function, "args": args})
    return timer.blocked_autorange(min_run_time=0.2).median


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=utils.positive_int, default=1,
                        help="torch's threads, and the kernel's (default: %(default)s, as make.sh trains two nets "
                             "at a time on one thread each)")
    parser.add_argument("--batch", type=utils.positive_int, default=128, help="default: %(default)s")
    parser.add_argument("--rounds", type=utils.positive_int, default=3, help="default: %(default)s")
    parser.add_argument("--ks", type=parse_ks, default="70,80,90,95,99",
                        help="the shares of each layer pruned, in percent; default: %(default)s")
    parser.add_argument("--out", help="the Markdown file to write (default: stdout)")
    args = parser.parse_args(argv)
    if args.out:
        files.check_outputs(files=[args.out])
    kernel = masked_layer.cpu_masked_kernel()
    if kernel is None:
        raise utils.UserError(f"no masked_kernel.c to time: {build.load('masked')[1]}")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        text = table(args, kernel)
    finally:
        torch.set_num_threads(threads)
    if args.out:
        files.write_atomic(args.out, lambda f: f.write(text.encode()))
        print(f"wrote {args.out}")
    else:
        print(text, end="")


def table(args, kernel):
    """The Markdown table: a row for each hidden layer, a column for each share pruned."""
    rounds = f"medians of {args.rounds} rounds" if args.rounds > 1 else "one round"
    lines = [f"{machine('cpu')}, {args.threads} thread{'s' * (args.threads > 1)}, batch {args.batch}: the "
             "forward pass and both gradients of one layer, dense time (ms) and how many times faster through "
             f"masked_kernel.c; {rounds}, the range in brackets.", "",
             "| layer | dense | " + " | ".join(f"{k} % pruned" for k in args.ks) + " |",
             "|---|---:|" + "---:|" * len(args.ks)]
    generator = torch.Generator().manual_seed(0)
    for n_in, n_out in zip(SIZES[:-2], SIZES[1:-1]):
        x = torch.randn(args.batch, n_in, generator=generator).requires_grad_()
        cells, dense_times = [], []
        for k in args.ks:
            mask = (torch.rand(n_out, n_in, generator=generator) >= k / 100).float()
            weight = torch.nn.Parameter(torch.randn(n_out, n_in, generator=generator) * mask)
            # MaskedProduct, as MaskedLinear calls it: at every share, below masked_layer.SPARSE_FROM too
            lists = (masked_layer.nonzero_lists(mask), masked_layer.nonzero_lists(mask, by_column=True))
            masked = lambda x: masked_layer.MaskedProduct.apply(x, weight, *lists, kernel)  # noqa: E731
            ratios = []
            for _ in range(args.rounds):
                dense = time_step(step, lambda x: F.linear(x, weight), x, weight)
                ratios.append(dense / time_step(step, masked, x, weight))
                dense_times.append(dense)
            cells.append(f"{statistics.median(ratios):.1f}x ({min(ratios):.1f}-{max(ratios):.1f})")
        lines.append(f"| {n_in} to {n_out} | {1e3 * statistics.median(dense_times):.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    utils.run(main)
