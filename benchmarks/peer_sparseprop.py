"""A sparse training step's three products, layer by layer, against SparseProp's (Nikdan et al. 2023; pip install
sparseprop, a peer, not a requirement): y = W x, and the gradients of x and of the kept weights, at batch 128.

For each hidden layer of the MLP and each sparsity, one random mask (uniform, the same for both); each side's
forward and backward against torch's dense ones (F.linear, both gradients), timed with torch.utils.benchmark in
turns, --rounds rounds, the median (range) of the ratios in one process. Each thread count runs in a process of
its own, started with OMP_NUM_THREADS set: SparseProp's OpenMP takes its thread count from there, not from torch.
Before timing, each side's output and gradients are checked against the dense ones.

    python benchmarks/peer_sparseprop.py --out docs/peer_sparseprop.md
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import files  # noqa: E402
import results  # noqa: E402
import utils  # noqa: E402
from eval import parse_ks  # noqa: E402
from model import SIZES  # noqa: E402
from sparse_training.kept import KeptLinear, cpu_masked_kernel  # noqa: E402
from benchmarks.harness import machine  # noqa: E402


def step(layer, x, grad):
    """A forward and backward of `layer`: its output, the gradient of x and of its parameter."""
    x.grad = None
    for p in layer.parameters():
        p.grad = None
    layer(x).backward(grad)


def sides(weight, mask):
    """{name: layer} of the dense product and each sparse one of `weight` where `mask` keeps it."""
    from sparseprop.modules.linear import SparseLinear
    dense = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        dense.weight.copy_(weight * mask)
    return {"dense": dense, "this repo": KeptLinear.from_dense(weight, mask),
            "SparseProp": SparseLinear(dense_weight=(weight * mask).clone())}


def check(layers, x, grad):
    """Each sparse side's output and gradient of x equal the dense one's, to rounding."""
    outputs = {}
    for name, layer in layers.items():
        xi = x.detach().clone().requires_grad_()
        out = layer(xi)
        out.backward(grad)
        outputs[name] = (out.detach(), xi.grad)
    for name, (out, gx) in outputs.items():
        if not (torch.allclose(out, outputs["dense"][0], atol=1e-4) and torch.allclose(gx, outputs["dense"][1], atol=1e-4)):
            raise utils.UserError(f"{name}'s products differ from the dense ones: the comparison would be void")


def measure(ks, batch, rounds):
    """[{layer, k, side: [seconds by round]}] for every hidden layer and k, on this process's threads."""
    torch.manual_seed(0)
    rows = []
    for n_in, n_out in zip(SIZES[:-2], SIZES[1:-1]):
        for k in ks:
            weight = torch.randn(n_out, n_in) / n_in ** 0.5
            mask = torch.rand(n_out, n_in) >= k / 100
            layers = sides(weight, mask)
            x, grad = torch.randn(batch, n_in, requires_grad=True), torch.randn(batch, n_out)
            check(layers, x, grad)
            times = {name: [] for name in layers}
            for _ in range(rounds):
                for name, layer in layers.items():
                    timer = benchmark.Timer("step(layer, x, grad)", globals={"step": step, "layer": layer, "x": x,
                                                                             "grad": grad})
                    times[name].append(timer.blocked_autorange(min_run_time=0.05).median)
            rows.append({"layer": f"{n_in}→{n_out}", "k": k, **times})
    return rows


def table(by_threads, batch):
    rows = []
    for threads, measured in by_threads.items():
        for row in measured:
            ours = [d / s for d, s in zip(row["dense"], row["this repo"])]
            peer = [d / s for d, s in zip(row["dense"], row["SparseProp"])]
            ahead = [p / o for o, p in zip(row["this repo"], row["SparseProp"])]
            rows.append([row["layer"], f"{row['k']:g} %", threads, f"{1000 * statistics.median(row['dense']):.2f}",
                         f"{statistics.median(ours):.1f}x ({min(ours):.1f}–{max(ours):.1f})",
                         f"{statistics.median(peer):.1f}x ({min(peer):.1f}–{max(peer):.1f})",
                         f"{statistics.median(ahead):.2f}x"])
    return results.markdown(["layer", "sparsity", "threads", "dense ms", "this repo over dense",
                             "SparseProp over dense", "this repo over SparseProp"], rows, text_columns=(0, 1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--ks", type=parse_ks, default="90,95,99", help="the sparsities, in percent")
    parser.add_argument("--threads", type=utils.positive_ints, default="1,2", help="thread counts, one process each")
    parser.add_argument("--batch-size", type=utils.positive_int, default=128, help="as train.py's")
    parser.add_argument("--rounds", type=utils.positive_int, default=7, help="rounds of turns")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one thread count, JSON out
    args = parser.parse_args(argv)
    try:
        import sparseprop  # noqa: F401
    except ImportError as e:
        raise utils.UserError(f"SparseProp is not installed ({e}): pip install pybind11, then pip install "
                              f"--no-build-isolation sparseprop")
    if cpu_masked_kernel() is None:
        raise utils.UserError("the masked kernel does not build here: there is nothing of this repo's to time")
    if args.child:
        print(json.dumps(measure(args.ks, args.batch_size, args.rounds)))
        return
    if args.out:
        files.check_outputs(files=[args.out])
    by_threads = {}
    for threads in args.threads:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        command = [sys.executable, __file__, "--child", "--ks", ",".join(f"{k:g}" for k in args.ks),
                   "--batch-size", str(args.batch_size), "--rounds", str(args.rounds)]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            raise utils.UserError(f"the run on {threads} thread(s) failed: {done.stderr.strip().splitlines()[-1]}")
        by_threads[threads] = json.loads(done.stdout)
        print(f"{threads} thread(s) done", file=sys.stderr)
    text = (f"Forward and backward of one hidden layer at batch {args.batch_size}, {machine('cpu')}: speedup over "
            f"torch's dense products, median of {args.rounds} rounds (range), a random mask per layer and "
            f"sparsity (`python benchmarks/peer_sparseprop.py`).\n\n" + table(by_threads, args.batch_size))
    print(text)
    if args.out:
        files.write_atomic(args.out, lambda f: f.write((text + "\n").encode()))


if __name__ == "__main__":
    utils.run(main)
