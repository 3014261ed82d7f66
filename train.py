"""Train the MLP on MNIST (or Fashion-MNIST) and save its weights, config and test accuracy."""
import argparse
import math
import os
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import checkpoints
import data
import files
import sparse_training
import utils
from model import HIDDEN, MLP, hidden_error, sizes

L1 = 5e-5  # the dense recipe's penalty: chosen on MNIST's validation split (python benchmarks/choices.py l1)


def parse_args(argv):
    """The flags, each default resolved for the recipe --sparse picks."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=utils.positive_int, default=15, help="passes over the training set")
    parser.add_argument("--hidden", type=hidden_sizes, default=",".join(map(str, HIDDEN)),
                        help="the hidden layers' units, comma-separated: 300,100 is the papers' LeNet-300-100")
    parser.add_argument("--batch-size", type=utils.positive_int, default=128, help="images per SGD step")
    parser.add_argument("--lr", type=utils.positive_float, default=argparse.SUPPRESS,
                        help="peak learning rate, annealed to 0 on a cosine (default: 0.05 for SGD with Nesterov "
                             "momentum 0.9; 0.001 for Adam, which vd, l0 and l0-unit train with, as their papers do)")
    parser.add_argument("--l1", type=utils.non_negative_float, default=argparse.SUPPRESS,
                        help="L1 penalty on the hidden layers' weights: the net learns to do without most of them "
                             f"(default: {L1}, chosen on MNIST's validation split, docs/results.md; vd, l0 and l0-unit "
                             "bring their own penalty instead)")
    parser.add_argument("--weight-decay", type=utils.non_negative_float, default=0.0, help="L2 penalty on every weight")
    parser.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the order of the images")
    parser.add_argument("--validation", type=utils.non_negative_int, default=0,
                        help="training images held out to choose on: the same ones every run (data.VALIDATION_SEED); "
                             "each epoch then reports their accuracy, and the test set only the final one")
    parser.add_argument("--sparse", choices=sparse_training.METHODS, default=argparse.SUPPRESS,
                        help="train the net to be sparse (sparse_training/). From a dense net: gmp, gradual magnitude "
                             "pruning of each hidden layer to --target percent (Zhu & Gupta 2017), or gmp-global, the "
                             "hidden layers together; vd, sparse variational dropout (Molchanov et al. 2017); l0, L0 "
                             "regularisation with a hard-concrete gate per weight, or l0-unit, per unit (Louizos et al. "
                             "2018). Sparse from the first step, at --target: static, a random mask held; snip (Lee et "
                             "al. 2019) and synflow (Tanaka et al. 2020), masks found at init and held; set (Mocanu et "
                             "al. 2018) and rigl (Evci et al. 2020), masks that move as the net trains. Without it: dense")
    parser.add_argument("--target", type=utils.percent_below_100, default=argparse.SUPPRESS,
                        help="the final sparsity of " + ", ".join(sparse_training.TARGETED) + ", in percent of the "
                             "hidden layers' weights, above 0 and below 100")
    parser.add_argument("--distribution", choices=sparse_training.DISTRIBUTIONS, default=argparse.SUPPRESS,
                        help="how the sparsity of " + ", ".join(sparse_training.DISTRIBUTED) + " is shared among "
                             "the hidden layers: uniform, each at --target; erk, each layer's density proportional "
                             "to (n_in + n_out) / (n_in n_out) (Evci et al. 2020) (default: uniform)")
    parser.add_argument("--strength", type=utils.non_negative_float, default=argparse.SUPPRESS,
                        help="how hard vd and l0 push to sparsity: vd's final weight of the KL term (default "
                             f"{sparse_training.DEFAULT_STRENGTH['vd']}; 1 is the ELBO); l0's λ, the cost of each open weight per training image (default "
                             f"{sparse_training.DEFAULT_STRENGTH['l0']})")
    data.add_data_arguments(parser)
    parser.add_argument("--out", default=argparse.SUPPRESS,
                        help="where to save the checkpoint (with the initial weights, for --retrain rewind); default: "
                             "named after the recipe, model.pt for the dense one, gmp-99.pt for --sparse gmp --target "
                             "99, vd.pt for --sparse vd")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out even where it holds a checkpoint of another recipe (another --sparse, "
                             "--target or --dataset), or a file that is not train.py's; the same recipe's is replaced "
                             "without it")
    parser.add_argument("--logdir", default="runs",
                        help="TensorBoard logs go to <logdir>/<--out's name>/train-<time>-<pid>, beside the runs "
                             "eval.py files under that name")
    args = parser.parse_args(argv)
    sparse = getattr(args, "sparse", None)
    targeted = ", ".join(sparse_training.TARGETED)
    if (sparse in sparse_training.TARGETED) != hasattr(args, "target"):
        parser.error(f"--sparse {sparse} needs --target, the final sparsity in percent" if sparse in
                     sparse_training.TARGETED else f"--target is the final sparsity of {targeted}: "
                     f"--sparse {sparse} finds its own" if sparse else
                     f"--target is the final sparsity of a net trained to be sparse: give it with --sparse {targeted}")
    if getattr(args, "target", None) == 0:
        parser.error("--target 0 keeps every weight: train without --sparse for the dense net")
    if hasattr(args, "distribution") and sparse not in sparse_training.DISTRIBUTED:
        parser.error(f"--distribution shares a --target among the hidden layers of "
                     f"{', '.join(sparse_training.DISTRIBUTED)}: " +
                     (f"--sparse {sparse} decides each layer's sparsity itself" if sparse else "the dense net has none"))
    if hasattr(args, "strength") and sparse not in sparse_training.DEFAULT_STRENGTH:
        parser.error("--strength is the penalty of vd, l0 and l0-unit: give it with --sparse vd, l0 or l0-unit")
    adam = sparse in sparse_training.DEFAULT_STRENGTH  # the methods that bring their own penalty
    if adam and hasattr(args, "l1"):
        parser.error(f"--l1 is the dense recipe's penalty; --sparse {sparse} brings its own: set it with --strength")
    args.lr = getattr(args, "lr", 1e-3 if adam else 0.05)
    args.l1 = getattr(args, "l1", 0.0 if adam else L1)
    if adam:
        args.strength = getattr(args, "strength", sparse_training.DEFAULT_STRENGTH[sparse])
    args.sparse = sparse
    if sparse in sparse_training.DISTRIBUTED:
        args.distribution = getattr(args, "distribution", "uniform")
    args.out = getattr(args, "out", default_out(sparse, getattr(args, "target", None), args.hidden, args.validation,
                                                getattr(args, "distribution", "uniform")))
    return args


def hidden_sizes(text):
    """--hidden: the units of each hidden layer, comma-separated, in order (1000,1000 is two layers)."""
    try:
        hidden = [int(item) for item in text.split(",")]
    except ValueError:
        hidden = []
    why_not = hidden_error(hidden)
    if why_not:
        raise argparse.ArgumentTypeError(f"expected {why_not}, comma-separated, got {text!r}")
    return hidden


def default_out(sparse, target, hidden=HIDDEN, validation=0, distribution="uniform"):
    """The checkpoint's default name, after its recipe: model.pt, gmp-99.pt, gmp-global-99.8.pt, vd.pt, l0.pt,
    rigl-99-erk.pt; model-300-100.pt, gmp-99-300-100.pt for other hidden sizes than the default;
    model-val5000.pt for a net trained with 5000 images held out."""
    name = "model" if sparse is None else f"{sparse}-{target:g}" if target is not None else sparse
    name += "-erk" if distribution == "erk" else ""
    name += "" if tuple(hidden) == HIDDEN else f"-{'-'.join(map(str, hidden))}"
    return f"{name}{f'-val{validation}' if validation else ''}.pt"


def recipe(config):
    """What makes two checkpoints the same recipe, as far as replacing one by the other goes."""
    return {"sparse": config.get("sparse"), "target": config.get("target"), "dataset": config.get("dataset", "mnist"),
            "hidden": list(config.get("hidden", HIDDEN)), "validation": config.get("validation", 0),
            # a checkpoint from before --distribution was trained uniform
            "distribution": config.get("distribution", "uniform" if config.get("sparse") in sparse_training.DISTRIBUTED
                                       else None)}


def check_replacing(args):
    """Refuse, before any training, to replace a checkpoint of another recipe (or a file that is not one of
    train.py's) at --out without --overwrite: a rerun of the same recipe replaces it."""
    path = Path(args.out)
    if args.overwrite or not path.is_file():
        return
    try:
        old = checkpoints.read(path)[0]
        held = recipe(old["config"]) if isinstance(old, dict) and "state_dict" in old else None
    except (utils.UserError, KeyError, TypeError, AttributeError):
        held = None
    if held == recipe(vars(args)):
        return
    what = (f"a checkpoint of another recipe ({describe(held)})" if held else
            "a file that is not a checkpoint train.py saved")
    raise utils.UserError(f"{path} holds {what}, not {describe(recipe(vars(args)))}: give another --out, or "
                          f"--overwrite to replace it")


def describe(recipe):
    method = recipe["sparse"] or "dense"
    target = f" to {recipe['target']:g} %" if recipe["target"] is not None else ""
    target += " (erk)" if recipe["distribution"] == "erk" else ""
    net = f" {'-'.join(map(str, sizes(recipe['hidden'])))}" if tuple(recipe["hidden"]) != HIDDEN else ""
    held = f", {recipe['validation']} images held out" if recipe["validation"] else ""
    return f"{method}{target}{net} on {recipe['dataset']}{held}"


def main(argv=None):
    args = parse_args(argv)
    sparse = args.sparse
    device = utils.pick_device(args.device)
    check_replacing(args)
    made = files.check_outputs(files=[args.out], folders=[args.logdir])  # before the training it would throw away
    torch.manual_seed(args.seed)
    try:
        train_data, validation_data = data.split_validation(
            data.load_data(args.dataset, args.data_dir, "train", not args.no_download, device), args.validation)
        test_data = data.load_data(args.dataset, args.data_dir, "test", not args.no_download, device)
    except utils.UserError:  # no data: a run that never started leaves no empty folders behind
        files.remove_empty(made)
        raise
    # Plain values only: a checkpoint loads with weights_only=True, which refuses any other type.
    command = shlex.join(["python", "train.py", *(sys.argv[1:] if argv is None else argv)])
    config = {**vars(args), "device": device, "command": command, "torch": str(torch.__version__),
              "validation_seed": data.VALIDATION_SEED, **kernel_path(sparse, device)}

    model = MLP(sizes(args.hidden)).to(device)
    steps = args.epochs * math.ceil(len(train_data[1]) / args.batch_size)  # the schedule moves every batch
    target, distribution = getattr(args, "target", None), getattr(args, "distribution", "uniform")
    if distribution == "erk" and (note := sparse_training.kept_counts(sparse_training.shapes(model), target, "erk")[1]):
        print(f"note: {note}")
    initial_state = sparse_training.initial_state(model)  # for rewinding
    # vd and l0 make the hidden layers their own, and add a term to the loss; the methods sparse from the first
    # step find their masks and keep only those weights
    penalty = sparse_training.prepare(sparse, model, steps, train_data, args.batch_size, target,
                                      getattr(args, "strength", None), distribution)
    if sparse in sparse_training.FROM_INIT:  # where rewinding goes back to: the sparse init
        initial_state = sparse_training.initial_state(model)
    loss_fn = (lambda logits, batch: F.cross_entropy(logits, train_data[1][batch]) + penalty()) if penalty else None
    optimizer, scheduler = sparse_training.optimizer(sparse, model, args.lr, steps, args.weight_decay)
    # gmp prunes after each step; SET and RigL move their masks
    after_step = sparse_training.after_step(sparse, model, optimizer, steps, target, distribution)

    print(f"training on {args.dataset} ({len(train_data[1])} images) on {device} for {args.epochs} epoch{'s' * (args.epochs > 1)}")
    start = time.perf_counter()
    # Each epoch is watched on the validation images where there are some, else on the test set, as before.
    watched = train(model, args, train_data, validation_data or test_data, optimizer, scheduler, loss_fn, after_step,
                    start)
    measured = {}
    if hasattr(after_step, "regrown"):
        config["regrown"] = after_step.regrown  # connections grown where none was, over the run
    if sparse:  # what the method zeroes on its own, and the test accuracy there, measured as it prunes
        accuracy = utils.evaluate(model, test_data) if validation_data else watched
        scores, natural_sparsity = sparse_training.finish(model)  # a plain MLP again, its values unthresholded
        measured = {"natural_sparsity": natural_sparsity, "natural_accuracy": accuracy}
        if scores is not None:
            measured["scores"] = scores
    accuracy = utils.evaluate(model, test_data) if sparse or validation_data else watched
    if validation_data:
        measured["validation_accuracy"] = utils.evaluate(model, validation_data)
    checkpoints.save(args.out, model, config, accuracy, initial_state, **measured)
    held = f", validation accuracy {measured['validation_accuracy']:.2f}%" if validation_data else ""
    print(f"saved {args.out}: test accuracy {accuracy:.2f}%{held} after {time.perf_counter() - start:.0f} s")


def kernel_path(sparse, device):
    """{"<method>_path": where vd's or l0's C kernel runs} for the config, with a note where it does not build: C
    or torch, the same formulas, rounded differently (and l0's noise drawn by another generator)."""
    if sparse not in sparse_training.KERNEL_PATHS:
        return {}
    path, why_not = sparse_training.KERNEL_PATHS[sparse](device)
    if why_not and device == "cpu":
        terms = "vd's σ² and KL" if sparse == "vd" else "l0's gates"
        print(f"note: {terms} run in torch, as {sparse}_kernel.c did not build: {why_not}")
    return {f"{sparse}_path": path}


def train(model, args, train_data, watched, optimizer, scheduler, loss_fn, after_step, start):
    """Train `model` for args.epochs, a line and a TensorBoard point each epoch with its accuracy on `watched` (the
    validation images, or the test set without them); the last epoch's."""
    on = "validation" if args.validation else "test"
    from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow, and bad flags fail first
    shuffle = torch.Generator().manual_seed(args.seed)
    # Under the net's name, as eval.py files its sweeps of it; two runs a second stay apart.
    log = Path(args.logdir) / Path(args.out).stem / time.strftime(f"train-%Y%m%d-%H%M%S-{os.getpid()}")
    with files.writing(log):
        writer = SummaryWriter(log)
    try:
        for epoch in range(1, args.epochs + 1):
            loss = utils.train_epoch(model, train_data, optimizer, args.batch_size, shuffle, scheduler, args.l1,
                                     desc=f"epoch {epoch}/{args.epochs}", loss_fn=loss_fn, after_step=after_step)
            accuracy = utils.evaluate(model, watched)  # of the net as a sparse method prunes it
            zeros = sparse_training.natural_sparsity(model) if args.sparse else None
            with files.writing(log):
                writer.add_scalar("train/loss", loss, epoch)
                writer.add_scalar(f"train/{on}_accuracy", accuracy, epoch)
                if args.sparse:
                    writer.add_scalar("train/natural_sparsity", zeros, epoch)
            print(f"epoch {epoch:3d}/{args.epochs}  train loss {loss:.4f}  {on} accuracy {accuracy:.2f}%"
                  f"{f'  natural sparsity {zeros:.2f}%' if args.sparse else ''}  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    finally:  # on Ctrl-C or an error too, so that the epochs done so far stay in TensorBoard
        with files.writing(log):
            writer.close()
    return accuracy


if __name__ == "__main__":
    utils.run(main)
