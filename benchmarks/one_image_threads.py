"""One image on one thread against two, timed again and again: how steady the second core's help is.

column_kernel.c runs one image on two threads where the net is large (fastpath/plan.py's TWO_THREADS_FROM): each takes
half of every layer's active columns, with a barrier after each layer, so the pass waits for the slower
core at every layer. On a shared VM the second core's speed comes and goes with the neighbours' load, so
a single timing of two threads is an anecdote. This alternates short blocks of the pass on one thread and
on two, for --seconds per k, and reports each one's median and spread over the blocks: one thread's spread
is the machine's noise, and what two threads add beyond it is the second core's.

    python benchmarks/one_image_threads.py --checkpoint checkpoints/seed0.pt --out docs/speed/one_image_threads.md
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import checkpoints  # noqa: E402
import data  # noqa: E402
import files  # noqa: E402
import results  # noqa: E402
import utils  # noqa: E402
from eval import parse_ks  # noqa: E402
from fastpath.plan import column_plan, csr_kernel_forward, kernel_to_time, sparse_plan  # noqa: E402
from fastpath.compact import compact  # noqa: E402
from prune import prune  # noqa: E402
from benchmarks.harness import machine  # noqa: E402
from torch.utils import benchmark  # noqa: E402

PASSES = 200  # a block: a few ms, short enough to catch a spell of the second core, long enough to time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="model.pt", help="the net to prune; default: %(default)s")
    parser.add_argument("--ks", type=parse_ks, default="90,95",
                        help="weight pruning's k, comma-separated; default: %(default)s")
    parser.add_argument("--seconds", type=utils.positive_float, default=40.0, help="per k; default: %(default)s")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if args.out:
        files.check_outputs(files=[args.out])
    kernel_to_time()
    if torch.get_num_threads() < 2:
        raise utils.UserError("torch has one thread here: there is no second core to measure")
    model, checkpoint = checkpoints.load(args.checkpoint)
    config = checkpoint["config"]  # the checkpoint's own test set: the image decides which columns are skipped
    image = data.load_data(config["dataset"], config["data_dir"], "test", download=False)[0][:1].contiguous()

    rows = []
    for k in args.ks:
        weights = [layer.weight.detach() for layer in prune(model, "weight", k).layers]
        batch_plan, smaller = sparse_plan(weights, 1), compact(weights)
        # one image runs on the plan's "one" alone: the same plan but for that, on one thread and on two
        plans = {threads: {**batch_plan, "one": column_plan(smaller, threads)} for threads in (1, 2)}
        for each in plans.values():
            csr_kernel_forward(each, image)  # warm-up
        timers = {t: benchmark.Timer("forward(plan, x)", globals={"forward": csr_kernel_forward, "plan": plan,
                                                                  "x": image}) for t, plan in plans.items()}
        blocks, end = {1: [], 2: []}, time.perf_counter() + args.seconds
        while time.perf_counter() < end:  # blocks of a few ms, the two taking turns
            for threads, timer in timers.items():
                blocks[threads].append(1e6 * timer.timeit(PASSES).median)
        one, two = (sorted(blocks[t]) for t in (1, 2))
        decile = lambda b, q: b[round(q * (len(b) - 1))]  # noqa: E731
        ratios = [a / b for a, b in zip(blocks[1], blocks[2])]
        spread = lambda b: f"{statistics.median(b):.1f} ({decile(b, .1):.1f}–{decile(b, .9):.1f})"  # noqa: E731
        rows.append([f"{k:g}", len(one), spread(one), spread(two),
                     f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f}x)"])
        print(f"k {k:g}: {len(one)} blocks each", file=sys.stderr)
    text = (f"One image, weight pruning, {machine('cpu')}: blocks of {PASSES} passes, one thread and two taking turns "
            f"for {args.seconds:g} s per k (`python benchmarks/one_image_threads.py`). µs a pass, median (10th–90th "
            f"percentile of the blocks), and one thread's time over two's in each pair of blocks:\n\n" +
            results.markdown(["k %", "blocks", "one thread µs", "two threads µs", "two threads' speedup (min–max)"],
                             rows, text_columns=()))
    print(text)
    if args.out:
        files.write_atomic(args.out, lambda f: f.write((text + "\n").encode()))


if __name__ == "__main__":
    utils.run(main)
