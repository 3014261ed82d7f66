"""RigL as the `rigl-torch` package trains it (pip install rigl-torch; a peer, not a requirement): the same net,
data, recipe and schedule as train.py --sparse rigl, its accuracy and wall time, to set beside this repo's.

rigl-torch keeps every weight dense and masks it: each step costs what a dense one does, plus the masking.
RigLScheduler(the hidden layers, optimizer, dense_allocation = 1 − target, T_end = 75 % of the steps, delta = 100,
alpha = 0.3, ignore_linear_layers = False), called after each backward as its README shows (the optimizer steps
unless the scheduler moved the masks). It is given the hidden layers, not the whole net, so that the logits layer
stays dense, as in train.py; given the net, it prunes the logits to the target too (20 of 2,000 weights at
99 %). Its only distribution, 'uniform', keeps the first layer dense where train.py prunes it: the record gives
each layer's sparsity, and the hidden layers' together.

rigl-torch leaves the init to the net: with torch's dense one, each layer at 99 % shrinks the signal about
tenfold. --init sparse-fan-in scales each kept weight as train.py's methods sparse from the first step start
(sparse_training/at_init.py), after rigl-torch draws its masks, so that the two differ in the scheduler alone.

    python benchmarks/peer_rigl.py --target 99 --seed 0 --out docs/mnist/sparse/rigl-torch/seed0.json
    python benchmarks/peer_rigl.py --init sparse-fan-in --target 99 --seed 0 --out rigl-torch-fan-in/seed0.json
"""
import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import data  # noqa: E402
import files  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402
from model import MLP  # noqa: E402
from sparse_training.at_init import sparse_fan_in  # noqa: E402
from sparse_training.regrow import REGROW_ALPHA, REGROW_END, REGROW_EVERY  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--target", type=utils.percent_below_100, default=99.0, help="sparsity, in percent")
    parser.add_argument("--seed", type=int, default=0, help="seeds the init, the masks and the order of the images")
    parser.add_argument("--epochs", type=utils.positive_int, default=15, help="as train.py's")
    parser.add_argument("--batch-size", type=utils.positive_int, default=128, help="as train.py's")
    parser.add_argument("--lr", type=utils.positive_float, default=0.05, help="as train.py's SGD")
    parser.add_argument("--init", choices=["dense", "sparse-fan-in"], default="dense",
                        help="torch's dense init, as rigl-torch leaves it, or the kept weights scaled by each unit's "
                             "sparse fan-in, as train.py's methods sparse from the first step start")
    data.add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="the JSON record to write")
    args = parser.parse_args(argv)
    if args.target == 0:
        parser.error("--target 0 keeps every weight: there is nothing for RigL to move")
    try:
        from rigl_torch.RigL import RigLScheduler
    except ImportError as e:
        raise utils.UserError(f"rigl-torch is not installed ({e}): pip install rigl-torch")
    files.check_outputs(files=[args.out])
    device = utils.pick_device(args.device)
    torch.manual_seed(args.seed)
    images, labels = data.load_data(args.dataset, args.data_dir, "train", not args.no_download, device)
    test = data.load_data(args.dataset, args.data_dir, "test", not args.no_download, device)

    start = time.perf_counter()
    model = MLP().to(device)
    steps = args.epochs * math.ceil(len(labels) / args.batch_size)
    optimizer, scheduler = utils.sgd(model, args.lr, steps)
    rigl = RigLScheduler(model.hidden, optimizer, dense_allocation=1 - args.target / 100, T_end=int(REGROW_END * steps),
                         delta=REGROW_EVERY, alpha=REGROW_ALPHA, ignore_linear_layers=False)
    if args.init == "sparse-fan-in":  # rigl-torch's masks, None for a layer it keeps dense
        sparse_fan_in(model, [torch.ones_like(w, dtype=torch.bool) if m is None else m.bool()
                              for w, m in zip(rigl.W, rigl.backward_masks)])
    shuffle = torch.Generator().manual_seed(args.seed)
    hidden = list(model.hidden.parameters())
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(labels), generator=shuffle).to(device)
        for first in range(0, len(labels), args.batch_size):
            batch = order[first:first + args.batch_size]
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for weight in hidden:  # train.py's L1, as its loop adds it
                weight.grad.add_(weight.detach().sign(), alpha=train.L1)
            if rigl():
                optimizer.step()
            with warnings.catch_warnings():  # rigl-torch wraps optimizer.step, which the scheduler takes for a misuse
                warnings.simplefilter("ignore", UserWarning)
                scheduler.step()
        print(f"epoch {epoch}/{args.epochs}: test accuracy {utils.evaluate(model, test):.2f}%", flush=True)
    seconds = time.perf_counter() - start
    accuracy = utils.evaluate(model, test)
    zeros = [100 * float((layer.weight == 0).float().mean()) for layer in model.layers]
    record = {"accuracy": accuracy, "seconds": seconds, "sparsity_by_layer": zeros,
              "hidden_sparsity": 100 * sum(float((w == 0).sum()) for w in hidden) / sum(w.numel() for w in hidden),
              "config": {**vars(args), "rigl_torch_layer_sparsity": [float(s) for s in rigl.S],
                         "rigl_steps": rigl.rigl_steps, "torch": str(torch.__version__)}}
    files.write_atomic(args.out, lambda f: f.write(json.dumps(record, indent=2).encode()))
    print(f"wrote {args.out}: test accuracy {accuracy:.2f}% after {seconds:.0f} s; zeros by layer "
          + ", ".join(f"{z:.1f} %" for z in zeros))


if __name__ == "__main__":
    utils.run(main)
