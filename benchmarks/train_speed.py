"""The cost of training to be sparse: a training step of each method of train.py --sparse against the dense
recipe's, in one process.

Each method trains its own net, set up as train.py sets it up (sparse_training.prepare, .optimizer and
.after_step), on the same batches of random images (the cost of a step does not depend on what the pixels are).
The methods take turns, --steps steps each per round, in an order drawn anew each round, so that a slow spell of a
shared machine, or the cold caches after another method, hit them alike;
each round gives each method's time per step over the dense recipe's in that round, and the table shows the
median over --rounds rounds (and their range), with the median time per step. Where vd_kernel.c builds, vd
runs twice: its σ² and KL in C, as train.py takes them, and in torch, as where there is no C compiler; so does
l0, its gates in C (l0_kernel.c) and in torch.

The methods with a --target run at each of --targets. gmp and gmp-global are timed with their masks at the
target from the first step, as the last 30 % of their run trains: until their masks prune 75 %, a step costs
what a dense one does. static stands for snip and synflow too: the three hold a mask found at init, and their
steps are the same. set and rigl move their masks every 100 steps of a schedule that spans the whole timing,
RigL's dense gradient on those steps included.

    python benchmarks/train_speed.py --out docs/train_speed.md
"""
import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import files  # noqa: E402
import results  # noqa: E402
import sparse_training  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402
from eval import parse_ks  # noqa: E402
from model import MLP  # noqa: E402
from sparse_training.l0 import GatedLinear, l0_path  # noqa: E402
from sparse_training.vd import VariationalLinear, vd_path  # noqa: E402
from benchmarks.harness import machine  # noqa: E402

VD_IN_TORCH = "vd, σ² and KL in torch"
L0_IN_TORCH = "l0, gates in torch"
TIMED = ["gmp", "gmp-global", "static", "set", "rigl"]  # the targeted methods timed: static's step is snip's, synflow's


def trainer(method, batches, steps, target=None, in_c=True):
    """One training step of `method` as a function of (images, labels), on its own freshly built net; in_c=False
    keeps vd's σ² and KL, or l0's gates, to torch."""
    model = MLP()
    # gmp on a schedule of one step: its masks at the target from the first step on (the module's docstring)
    schedule = 1 if method in sparse_training.GMP else steps
    images, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    penalty = sparse_training.prepare(method, model, schedule, (images, labels), len(batches[0][1]), target,
                                      sparse_training.DEFAULT_STRENGTH.get(method))
    for layer in model.hidden:
        if isinstance(layer, (VariationalLinear, GatedLinear)):
            layer.in_c = layer.in_c and in_c  # l0-unit's gates are in torch either way
    optimizer, scheduler = sparse_training.optimizer(method, model, 1e-3 if penalty else 0.05, steps)
    after_step = sparse_training.after_step(method, model, optimizer, schedule, target)
    model.train()

    def step(images, labels):
        loss = F.cross_entropy(model(images), labels) + (penalty() if penalty else 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if penalty is None:  # the dense recipe's L1, as train.py's loop adds it, on what the net holds
            for weight in model.hidden.parameters():
                weight.grad.add_(weight.detach().sign(), alpha=train.L1)
        optimizer.step()
        scheduler.step()
        if after_step:
            after_step()
    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batch-size", type=utils.positive_int, default=128, help="images per step, as train.py's")
    parser.add_argument("--steps", type=utils.positive_int, default=50, help="steps of each method per round")
    parser.add_argument("--rounds", type=utils.positive_int, default=9, help="rounds, the methods taking turns in each")
    parser.add_argument("--targets", type=parse_ks, default="90,95,99",
                        help="the sparsities, in percent, of the methods trained to a target")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if args.out:
        files.check_outputs(files=[args.out])

    torch.manual_seed(0)
    batches = [(torch.randn(args.batch_size, 784), torch.randint(0, 10, (args.batch_size,))) for _ in range(10)]
    total = args.steps * (args.rounds + 1)  # set's and rigl's masks move every 100 steps: their schedule spans the run
    steps = {"dense": trainer(None, batches, total)}
    for method in sparse_training.METHODS:
        if method in TIMED:
            steps.update({f"{method} at {target:g} %": trainer(method, batches, total, target) for target in args.targets})
        elif method not in sparse_training.TARGETED:
            steps[method] = trainer(method, batches, total)
    if vd_path("cpu")[0] == "vd_kernel.c":
        steps[VD_IN_TORCH] = trainer("vd", batches, total, in_c=False)
    if l0_path("cpu")[0] == "l0_kernel.c":
        steps[L0_IN_TORCH] = trainer("l0", batches, total, in_c=False)
    methods = list(steps)
    seconds = {m: [] for m in methods}
    order = random.Random(0)
    for round_ in range(args.rounds + 1):  # the first round warms up, and is not counted
        # in an order drawn anew each round: a method's first steps after another's (vd's, say, which fills the
        # caches with its 2.4 M variances) run slower, and a fixed order would give the same methods that penalty
        # in every round (python benchmarks/train_speed.py gave gmp 0.31x and static 0.44x at 90 % in a fixed
        # order, where alone, in one process, the two steps took 4.3 ms each)
        for method in order.sample(methods, len(methods)):
            start = time.perf_counter()
            for i in range(args.steps):
                steps[method](*batches[i % len(batches)])
            if round_:
                seconds[method].append((time.perf_counter() - start) / args.steps)
        print(f"round {round_}/{args.rounds}", file=sys.stderr)
    rows = []
    for method in methods:
        ratios = [s / d for s, d in zip(seconds[method], seconds["dense"])]
        rows.append([method, f"{1000 * statistics.median(seconds[method]):.1f}",
                     f"{statistics.median(ratios):.2f}x", f"{min(ratios):.2f}–{max(ratios):.2f}x"])
    threads = torch.get_num_threads()
    text = (f"A training step at batch {args.batch_size}, {machine('cpu')}, {threads} thread{'s' * (threads != 1)}: "
            f"median of {args.rounds} rounds of {args.steps} steps each (`python benchmarks/train_speed.py`).\n\n" +
            results.markdown(["method", "ms a step", "over dense", "range"], rows, text_columns=(0,)))
    print(text)
    if args.out:
        files.write_atomic(args.out, lambda f: f.write((text + "\n").encode()))


if __name__ == "__main__":
    utils.run(main)
