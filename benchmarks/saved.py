"""What keeping the pruned nets costs: the file size at each k, the time to load a file and build its fast
path, and what eval.py --save adds to a sweep.

The sweep runs --runs times with --save and --runs times without, alternating, each in its own process
(as a user runs it), so that a slow spell of the machine falls on both; the last --save run's files give
the sizes. Saving and loading are timed in this process, --repeats times a file: checkpoints.save_pruned
(the net written again), checkpoints.load (the file read, every part of it checked, the MLP filled in)
and inference.load (the same, plus the fast path's plan).
Prints a Markdown table and notes, also written to --out.

    python benchmarks/saved.py --checkpoint checkpoints/seed0.pt --out docs/saved.md   # about 5 minutes here
"""
import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import checkpoints  # noqa: E402
import files  # noqa: E402
import inference  # noqa: E402
import results  # noqa: E402
from benchmarks.harness import machine  # noqa: E402
from fastpath import plan  # noqa: E402
import utils  # noqa: E402
from model import SIZES  # noqa: E402
from prune import METHODS  # noqa: E402

DENSE_BYTES = 4 * sum(n_in * n_out for n_in, n_out in zip(SIZES, SIZES[1:]))  # float32 weights, no biases
TIMED_KS = (90, 95, 99)


def median_range(values, unit="s", scale=1, digits=1):
    """The median of `values` and their range, in `unit` (`scale` of them a second)."""
    low, mid, high = (scale * v for v in (min(values), statistics.median(values), max(values)))
    return f"{mid:.{digits}f} {unit} ({low:.{digits}f}-{high:.{digits}f})"


def sweep(checkpoint, ks, work, save):
    """Seconds of one eval.py sweep of every method, untimed, in its own process, its outputs in `work`."""
    command = [sys.executable, str(REPO / "eval.py"), "--sparsity", "all", "--no-timing", "--ks", ks,
               "--checkpoint", checkpoint, "--results-dir", str(work / "results"), "--logdir", str(work / "runs"),
               "--plot", str(work / "plot.png"), *(["--save", str(work / "nets")] if save else [])]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise utils.UserError(f"{shlex.join(command)} failed: {(done.stderr.strip() or 'no message').splitlines()[-1]}")
    return seconds


def save_and_load_times(path, repeats):
    """Seconds of saving the net of `path` again, of checkpoints.load and of inference.load, each `repeats` times."""
    wrote, read, planned = [], [], []
    model, record = checkpoints.load(path)
    weights = [layer.weight.detach() for layer in model.layers]
    for _ in range(repeats):
        start = time.perf_counter()
        checkpoints.save_pruned(path.with_name("again.pt"), weights, record["accuracy"], record["dataset"]["name"],
                                record["pruned"], record["config"])
        wrote.append(time.perf_counter() - start)
        start = time.perf_counter()
        checkpoints.load(path)
        read.append(time.perf_counter() - start)
        start = time.perf_counter()
        inference.load(path, "cpu")
        planned.append(time.perf_counter() - start)
    return wrote, read, planned


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="model.pt", help="what train.py saved; default: %(default)s")
    parser.add_argument("--ks", default="0,25,50,60,70,80,90,95,97,99", help="default: %(default)s")
    parser.add_argument("--runs", type=utils.positive_int, default=5,
                        help="sweeps with --save and as many without; default: %(default)s")
    parser.add_argument("--repeats", type=utils.positive_int, default=20,
                        help="loads of each file timed; default: %(default)s")
    parser.add_argument("--out", default="docs/saved.md", help="default: %(default)s")
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        raise utils.UserError(f"{args.checkpoint} not found: train one with train.py")
    files.check_outputs(files=[args.out])

    with tempfile.TemporaryDirectory() as tmp:
        with_save, without = [], []
        for run in range(args.runs):
            for save, times in ((True, with_save), (False, without)):
                work = Path(tmp) / f"{run}-{save}"
                times.append(sweep(args.checkpoint, args.ks, work, save))
                print(f"sweep {run + 1}/{args.runs} {'with' if save else 'without'} --save: {times[-1]:.1f} s",
                      file=sys.stderr)
        nets = Path(tmp) / f"{args.runs - 1}-True" / "nets"
        sizes = {path.stem: path.stat().st_size for path in nets.glob("*.pt")}
        methods = [method for method in METHODS if any(stem.startswith(f"{method}-") for stem in sizes)]
        ks = sorted({float(stem.rsplit("-", 1)[1]) for stem in sizes})
        rows = [[f"{k:g}", *(f"{sizes[f'{m}-{k:g}'] / 1e6:.3f} ({100 * sizes[f'{m}-{k:g}'] / DENSE_BYTES:.1f} %)"
                             for m in methods)] for k in ks]
        plan.cpu_kernel()  # built, or loaded from the cache, before the first plan is timed (load_time.py times it)
        timed = {k: save_and_load_times(nets / f"weight-{k}.pt", args.repeats) for k in TIMED_KS
                 if f"weight-{k}" in sizes}

    ratios = [a / b for a, b in zip(with_save, without)]
    lines = [f"File size in MB (and as a share of the dense weights' {DENSE_BYTES / 1e6:.2f} MB) of each net "
             f"`eval.py --save` keeps, pruned from `{Path(args.checkpoint).name}` by each method:", "",
             results.markdown(["k %", *methods], rows), "",
             f"Saving and loading a weight-pruned net, median of {args.repeats} times each (range), "
             f"{machine('cpu')}, {torch.get_num_threads()} threads:", ""]
    lines += [results.markdown(["k %", "checkpoints.save_pruned", "checkpoints.load: read and check",
                                "inference.load: and build the plan"],
                               [[k, *(median_range(times, "ms", 1e3, 0) for times in measured)]
                                for k, measured in timed.items()]), ""]
    lines += [f"A sweep of every method at k = {args.ks}, one checkpoint, untimed, median of {args.runs} runs "
              f"each (range): {median_range(without)} without --save, {median_range(with_save)} with it; "
              f"with over without, run by run: {statistics.median(ratios):.3f}x "
              f"({min(ratios):.3f}-{max(ratios):.3f}).", ""]
    text = "\n".join(lines)
    print(text)
    files.write_atomic(args.out, lambda f: f.write(text.encode()))


if __name__ == "__main__":
    utils.run(main)
