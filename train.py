"""Train the MLP on MNIST (or Fashion-MNIST) and save its weights, config and test accuracy."""
import argparse
import math
import os
import shlex
import sys
import time
from pathlib import Path

import torch

import data
import checkpoints
import files
import sparse_training
import utils
from model import MLP
from prune import sparsity


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=utils.positive_int, default=15, help="passes over the training set")
    parser.add_argument("--batch-size", type=utils.positive_int, default=128, help="images per SGD step")
    parser.add_argument("--lr", type=utils.positive_float, default=0.05,
                        help="peak learning rate of SGD with Nesterov momentum 0.9, annealed to 0 on a cosine")
    parser.add_argument("--l1", type=utils.non_negative_float, default=3e-5,
                        help="L1 penalty on the hidden layers' weights: the net learns to do without most of them")
    parser.add_argument("--weight-decay", type=utils.non_negative_float, default=0.0, help="L2 penalty on every weight")
    parser.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the order of the images")
    parser.add_argument("--sparse", choices=["gmp"], default=argparse.SUPPRESS,
                        help="train the net to be sparse: gmp, gradual magnitude pruning of each hidden layer to "
                             "--target percent (Zhu & Gupta 2017; sparse_training.py). Without it: dense")
    parser.add_argument("--target", type=utils.percent_below_100, default=argparse.SUPPRESS,
                        help="gmp's final sparsity, in percent of each hidden layer's weights, from 0 to below 100")
    data.add_data_arguments(parser)
    parser.add_argument("--out", default="model.pt", help="where to save the checkpoint (with the initial weights, for --retrain rewind)")
    parser.add_argument("--logdir", default="runs", help="TensorBoard logs go to <logdir>/train-<time>-<pid>")
    args = parser.parse_args(argv)
    sparse = getattr(args, "sparse", None)
    if (sparse == "gmp") != hasattr(args, "target"):
        parser.error("--sparse gmp needs --target, the final sparsity in percent" if sparse else
                     "--target is gmp's final sparsity: give it with --sparse gmp")

    device = utils.pick_device(args.device)
    files.check_outputs(files=[args.out], folders=[args.logdir])  # before the training it would throw away
    torch.manual_seed(args.seed)
    train_data = data.load_data(args.dataset, args.data_dir, "train", not args.no_download, device)
    test_data = data.load_data(args.dataset, args.data_dir, "test", not args.no_download, device)
    # Plain values only: a checkpoint loads with weights_only=True, which refuses any other type.
    command = shlex.join(["python", "train.py", *(sys.argv[1:] if argv is None else argv)])
    config = {**vars(args), "sparse": sparse, "device": device, "command": command, "torch": str(torch.__version__)}

    model = MLP().to(device)
    initial_state = {name: weight.clone() for name, weight in model.state_dict().items()}  # for rewinding
    steps = args.epochs * math.ceil(len(train_data[1]) / args.batch_size)  # the schedule moves every batch
    optimizer, scheduler = utils.sgd(model, args.lr, steps, args.weight_decay)
    shuffle = torch.Generator().manual_seed(args.seed)
    after_step = sparse_training.gradual_magnitude_pruning(model, args.target, steps) if sparse == "gmp" else None

    from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow, and bad flags fail first
    print(f"training on {args.dataset} ({len(train_data[1])} images) on {device} for {args.epochs} epoch{'s' * (args.epochs > 1)}")
    start = time.perf_counter()
    log = Path(args.logdir) / time.strftime(f"train-%Y%m%d-%H%M%S-{os.getpid()}")  # two runs a second stay apart
    with files.writing(log):
        writer = SummaryWriter(log)
    try:
        for epoch in range(1, args.epochs + 1):
            loss = utils.train_epoch(model, train_data, optimizer, args.batch_size, shuffle, scheduler, args.l1,
                                     desc=f"epoch {epoch}/{args.epochs}", after_step=after_step)
            accuracy = utils.evaluate(model, test_data)
            with files.writing(log):
                writer.add_scalar("train/loss", loss, epoch)
                writer.add_scalar("train/test_accuracy", accuracy, epoch)
            print(f"epoch {epoch:3d}/{args.epochs}  train loss {loss:.4f}  test accuracy {accuracy:.2f}%  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    finally:  # on Ctrl-C or an error too, so that the epochs done so far stay in TensorBoard
        with files.writing(log):
            writer.close()
    natural = {}
    if sparse:  # what the method zeroes on its own, and the accuracy there: gmp's target, reached at the last step
        sparse_training.remove_masks(model)  # folded into the weights: the checkpoint holds a plain MLP
        natural = {"natural_sparsity": sparsity(model)["sparsity"], "natural_accuracy": accuracy}
    checkpoints.save(args.out, model, config, accuracy, initial_state, **natural)
    print(f"saved {args.out}: test accuracy {accuracy:.2f}% after {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    utils.run(main)
