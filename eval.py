"""Prune the trained MLP to each sparsity k and measure its test accuracy, and its speed dense against sparse."""
import argparse
import os
import re
import shlex
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

import checkpoints
import data
import files
import plot
import results
import retrain
import utils
from benchmarks.harness import BLAS_ENVIRONMENT, HOW, machine, peer_libraries, time_net
from fastpath.plan import cpu_kernel, sparse_path
from model import sizes_of
from prune import METHODS, SCORE_METHODS, apply_masks, mask_seed, masks, sparsity

DEFAULT_KS = "0,25,50,60,70,80,90,95,97,99"
DEFAULT_TIMING_BATCH = [100]
CHECKPOINTS = "the checkpoint's"  # default --dataset and --data-dir: those the checkpoint was trained on
SHORTHANDS = {"both": ["weight", "unit"], "all": list(METHODS)}
# Flags that are gone, and what says the same now.
RENAMED = {"finetune_epochs": "--retrain finetune --retrain-epochs N", "finetune_lr": "--retrain finetune --retrain-lr LR"}


def choices():
    return [*METHODS, *SCORE_METHODS]  # read when asked: a method added to prune.METHODS is one at once


def parse_methods(text):
    names = SHORTHANDS.get(text, text.split(","))
    if all(re.fullmatch(r"[\d.]+", name.strip()) for name in names):  # --sparsity 90, meant as the sparsity
        raise argparse.ArgumentTypeError(f"{text!r} is a sparsity: give it to --ks (--ks {text}); --sparsity takes the "
                                         f"method, one of {', '.join(choices())}, a list of them, both or all")
    unknown = [name for name in names if name not in choices()]
    if unknown:
        raise argparse.ArgumentTypeError(f"invalid choice: {unknown[0]!r} (choose from {', '.join(choices())}, "
                                         f"a comma-separated list of them, both or all)")
    return list(dict.fromkeys(names))


def parse_ks(text):
    """Sparsities in percent, from 0 to below 100 with at most one decimal (99.5); a whole one as an int."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a comma-separated list such as 0,50,90,99.5, got nothing")
    ks = []
    for item in text.split(","):
        if not re.fullmatch(r"\d+(\.\d)?", item.strip()) or not 0 <= float(item) < 100:
            raise argparse.ArgumentTypeError(f"expected numbers from 0 to below 100 with at most one decimal "
                                             f"(99.5), got {item.strip()!r}")
        ks.append(results.as_k(item))
    return sorted(set(ks))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sparsity", type=parse_methods, required=True, default=argparse.SUPPRESS,
                        help=f"the pruning method: one of {', '.join(choices())}, a comma-separated list of them, "
                             f"both (weight,unit) or all (all but learned, which ranks the weights by the scores "
                             f"that train.py --sparse vd, l0 or l0-unit learned, across the hidden layers)")
    parser.add_argument("--ks", type=parse_ks, default=DEFAULT_KS,
                        help="sparsities to try, comma-separated, in percent of the hidden layers' weights or units: from 0 to "
                             "below 100, with at most one decimal (99.5, 99.8)")
    parser.add_argument("--checkpoint", nargs="+", default=["model.pt"],
                        help="what train.py saved, or a pruned net that --save kept (pruned further at each k, its "
                             "zeros kept); several (the same recipe, other seeds) give the mean accuracy and its "
                             "standard deviation over them")
    parser.add_argument("--timing-batch", type=utils.positive_ints, default=argparse.SUPPRESS,
                        help="images per forward pass when timing dense against sparse (the first checkpoint's net); "
                             "several sizes, such as 1,100,1000, are each timed. The first gives the plot and the "
                             "columns dense_ms, sparse_speedup...; another size B gives dense_ms_batchB... (default: "
                             f"{','.join(map(str, DEFAULT_TIMING_BATCH))})")
    parser.add_argument("--timing-peers", action="store_true", default=argparse.SUPPRESS,
                        help="also time the libraries a user might try instead: scipy.sparse CSR, and MKL's sparse "
                             "BLAS where the sparse_dot_mkl package is installed")
    parser.add_argument("--no-timing", action="store_true", help="measure accuracy only")
    parser.add_argument("--retrain", choices=retrain.VARIANTS, default=argparse.SUPPRESS,
                        help="after pruning, train the kept weights (the pruned ones held at zero) as they are "
                             "(finetune), from their initial values (rewind) or from a fresh init (scratch); results "
                             "go to <method>-finetuned, -rewind or -scratch, untimed (the nonzeros are the one-shot "
                             "run's). Without it: one-shot pruning")
    parser.add_argument("--retrain-epochs", type=utils.positive_int, default=argparse.SUPPRESS,
                        help=f"epochs of --retrain (default: finetune {retrain.FINETUNE['epochs']}; rewind and scratch "
                             f"the checkpoint's)")
    parser.add_argument("--retrain-lr", type=utils.positive_float, default=argparse.SUPPRESS,
                        help=f"peak learning rate of --retrain, annealed to 0 on a cosine (default: finetune "
                             f"{retrain.FINETUNE['lr']}, without L1; rewind and scratch the checkpoint's, whose "
                             f"schedule, batch size, L1 and weight decay they always take)")
    for name in RENAMED:  # refused below, with the flag that replaces it
        parser.add_argument(f"--{name.replace('_', '-')}", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds random pruning, the order of the images in retraining, and scratch's init")
    parser.add_argument("--split", choices=("test", "validation"), default="test",
                        help="the images accuracy is measured on: the test set, or the validation images the "
                             "checkpoints held out (train.py --validation), to choose on; retraining never sees them")
    data.add_data_arguments(parser)
    parser.set_defaults(dataset=CHECKPOINTS, data_dir=CHECKPOINTS)
    parser.add_argument("--name", type=utils.folder_name, default=argparse.SUPPRESS,
                        help="what these checkpoints' results are filed under, in --results-dir and --logdir (default: "
                             "their file names, joined by +: model, or seed0+seed1+seed2); a rerun of the same name "
                             "and method replaces its results, any other adds to them")
    parser.add_argument("--results-dir", default="results",
                        help="gets <name>/<method>.csv and .json (<method>-finetuned, -rewind, -scratch with "
                             "--retrain); the plot draws every net's results found there")
    parser.add_argument("--logdir", default="runs", help="TensorBoard logs go to <logdir>/<name>/<method>")
    parser.add_argument("--save", metavar="DIR", default=argparse.SUPPRESS,
                        help="keep every pruned (and retrained) net as DIR/<method>-<k>.pt, its nonzeros only "
                             "(DIR/<checkpoint's file name>/<method>-<k>.pt for several checkpoints); load one with "
                             "inference.load, or give it to --checkpoint")
    parser.add_argument("--plot", default="plot.png",
                        help="accuracy (and speed) against the weights kept, for every net and method in "
                             "--results-dir (plot.py redraws it)")
    args = parser.parse_args(argv)
    for name, instead in RENAMED.items():
        if hasattr(args, name):
            parser.error(f"--{name.replace('_', '-')} is gone: say {instead}")
    given = [flag for flag in ("retrain_epochs", "retrain_lr") if hasattr(args, flag)]
    if given and not hasattr(args, "retrain"):
        parser.error(f"--{given[0].replace('_', '-')} sets --retrain's training: give it with --retrain "
                     f"finetune, rewind or scratch")
    given = [flag for flag in ("timing_batch", "timing_peers") if hasattr(args, flag)]
    if given and (args.no_timing or hasattr(args, "retrain")):
        parser.error(f"--{given[0].replace('_', '-')} sets the timing, which "
                     f"{'--no-timing turns off' if args.no_timing else 'a --retrain run does not do'}")
    args.timing_batch = getattr(args, "timing_batch", DEFAULT_TIMING_BATCH)
    args.name = getattr(args, "name", "+".join(Path(path).stem for path in args.checkpoint) +
                        ("-validation" if args.split == "validation" else ""))
    args.timing_peers = getattr(args, "timing_peers", False)
    return args


def main(argv=None):
    args = parse_args(argv)
    device = utils.pick_device(args.device)
    models, saved = load_checkpoints(args, device)
    trained = saved[0].get("config", {})
    dataset = trained.get("dataset", "mnist") if args.dataset == CHECKPOINTS else args.dataset
    data_dir = trained.get("data_dir", "data") if args.data_dir == CHECKPOINTS else args.data_dir
    variant = getattr(args, "retrain", None)
    recipe = retrain.recipe(variant, trained, getattr(args, "retrain_epochs", None),
                            getattr(args, "retrain_lr", None)) if variant else None
    starts = retrain.starting_points(variant, args.checkpoint, models, saved, args.seed, device)
    held, download = held_out(args, saved), not args.no_download
    test_data = data.load_split(dataset, data_dir, args.split, held, download, device)  # what accuracy is measured on
    train_data = data.load_split(dataset, data_dir, "train", held, download, device) if variant else None
    names = [f"{method}-{retrain.VARIANTS[variant]}" if variant else method for method in args.sparsity]
    save_dirs = save_folders(getattr(args, "save", None), args.checkpoint)
    results_dir, logdir = Path(args.results_dir) / args.name, Path(args.logdir) / args.name
    files.check_outputs(files=[args.plot, *(results_dir / f"{name}.{end}" for name in names for end in ("csv", "json")),
                               *(folder / net_name(name, k) for folder in save_dirs for name in names for k in args.ks)],
                        folders=[results_dir, logdir, *save_dirs])  # after the inputs: bad inputs leave no trace
    timing_images = images_to_time(args, variant, test_data, device)
    info = run_info(args, argv, saved, recipe, dataset, data_dir, device, timing_images is not None)

    for method, name in zip(args.sparsity, names):
        start = time.perf_counter()
        rows, accuracies = [], {}
        for k in tqdm(args.ks, desc=name, unit="k", leave=False, disable=None):
            row, pruned, measured, accuracies[k] = prune_and_measure(models, saved, starts, method, k, args.seed,
                                                                     test_data, train_data, recipe)
            save_nets(save_dirs, pruned, measured, accuracies[k], method, name, k, variant, args.checkpoint, saved,
                      dataset, data_dir, info["config"])
            if timing_images is not None:
                row |= time_net(pruned[0], timing_images, args.timing_batch, args.timing_peers)
            rows.append(row)
        print(f"\n{name} pruning of {', '.join(args.checkpoint)} on {dataset} ({time.perf_counter() - start:.1f} s)")
        print(results.markdown_table(rows))
        if timing_images is not None:
            print(f"{results.LEGEND}; {HOW}.")
        results.write_results(results_dir, name, rows, {
            "method": method, "variant": retrain.VARIANTS.get(variant, "one-shot"),
            "accuracy_per_checkpoint": accuracies, **info})
        results.write_tensorboard(logdir / name, rows)

    plot.compare(Path(args.results_dir), args.plot)
    kept = f", the pruned nets in {args.save}/" if save_dirs else ""
    print(f"\nwrote {results_dir}/, {logdir}/{kept} and {args.plot}; see them with: tensorboard --logdir "
          f"{args.logdir}")


def load_checkpoints(args, device):
    """(models, checkpoints) of every --checkpoint, refused where they cannot be compared or ranked."""
    models, saved = zip(*(checkpoints.load(path, device) for path in args.checkpoint))
    one_recipe([c.get("config", {}).get("dataset", "mnist") for c in saved], "were trained on different data sets")
    one_recipe(["-".join(map(str, sizes_of(model))) for model in models], "are nets of different sizes")
    twice = next((path for n, (path, c) in enumerate(zip(args.checkpoint, saved))
                  if c["sha256"] in [earlier["sha256"] for earlier in saved[:n]]), None)
    if twice:
        raise utils.UserError(f"{twice} is the same file as an earlier --checkpoint (the same sha256): a spread over "
                              f"checkpoints needs different seeds")
    no_scores = next((path for path, c in zip(args.checkpoint, saved) if "scores" not in c), None)
    if SCORE_METHODS.keys() & set(args.sparsity) and no_scores:
        raise utils.UserError(f"--sparsity learned: {no_scores} holds no learned scores; give a checkpoint of train.py "
                              f"--sparse vd, l0 or l0-unit")
    return models, saved


def held_out(args, saved):
    """The validation images the checkpoints held out, the same for all; refused where --split needs some."""
    held = one_recipe([c.get("config", {}).get("validation", 0) for c in saved], "held out different validation splits")
    if args.split == "validation" and not held:
        raise utils.UserError(f"--split validation: {args.checkpoint[0]} holds out no validation images; train it "
                              f"with train.py --validation N")
    return held


def one_recipe(values, differ):
    """The value every checkpoint shares: a spread over checkpoints is one over seeds of one recipe."""
    found = sorted(set(values))
    if len(found) > 1:
        raise utils.UserError(f"the checkpoints {differ} ({', '.join(map(str, found))}); compare seeds of one recipe")
    return found[0]


def images_to_time(args, variant, test_data, device):
    """The test images the speed is timed on (as many as the largest --timing-batch), or None for an untimed run;
    a note where a path a user might expect is not timed."""
    if args.no_timing or variant:
        return None
    images = test_data[0][:max(args.timing_batch)]
    if len(images) < max(args.timing_batch):
        raise utils.UserError(f"--timing-batch {max(args.timing_batch)} is more than the {len(images)} test images")
    if sparse_path(device) == "torch CSR" and torch.device(device).type == "cpu":
        print(f"note: the sparse path is torch CSR, as the C kernel did not build: {cpu_kernel()[1]}")
    if args.timing_peers:
        for note in peer_libraries()[1]:
            print(f"note: {note}")
    return images


def run_info(args, argv, saved, recipe, dataset, data_dir, device, timing):
    """What every result file records beside its numbers: the checkpoints and the resolved config."""
    command = shlex.join(["python", "eval.py", *(sys.argv[1:] if argv is None else argv)])
    return {"sha256": [c["sha256"] for c in saved],
            "checkpoints": [{"path": path, "seed": c.get("config", {}).get("seed"),
                             "accuracy": c.get("validation_accuracy" if args.split == "validation" else "accuracy"),
                             "dense": "pruned" not in c and not c.get("config", {}).get("sparse")}
                            for path, c in zip(args.checkpoint, saved)],
            "config": {"command": command, **vars(args), "retrain_recipe": recipe, "dataset": dataset,
                       "data_dir": data_dir, "device": device, "checkpoint_config": saved[0].get("config", {}),
                       "torch": str(torch.__version__), "sparse_path": sparse_path(device) if timing else None,
                       "machine": machine(device), "threads": torch.get_num_threads(), "timing": HOW if timing else None,
                       "blas_environment": {name: os.environ[name] for name in BLAS_ENVIRONMENT if name in os.environ}}}


def prune_and_measure(models, saved, starts, method, k, seed, test_data, train_data, recipe):
    """(the row of k: sparsity and accuracy, their mean over the checkpoints; the pruned nets; the sparsity of each;
    the accuracy of each), each net retrained first where there is a `recipe`."""
    kept = [masks(model, method, k, mask_seed(seed, checkpoint["sha256"]), checkpoint.get("scores"))
            for model, checkpoint in zip(models, saved)]
    pruned = [apply_masks(model, mask) for model, mask in zip(models, kept)]
    row = {"k": k}
    if recipe:
        row |= results.spread("one_shot_accuracy", [utils.evaluate(net, test_data) for net in pruned])
        pruned = [apply_masks(net, mask) for net, mask in zip(starts, kept)]
        for net in pruned:
            retrain.retrain(net, train_data, **recipe, seed=seed)
    accuracies = [utils.evaluate(net, test_data) for net in pruned]
    measured = [sparsity(net) for net in pruned]
    row |= results.mean_of(measured) | results.spread("accuracy", accuracies)
    return row, pruned, measured, accuracies


def save_nets(folders, pruned, measured, accuracies, method, name, k, variant, paths, saved, dataset, data_dir,
              eval_config):
    """Keep each checkpoint's pruned net at k in its --save folder (none without --save)."""
    for folder, net, zeros, accuracy, path, checkpoint in zip(folders, pruned, measured, accuracies, paths, saved):
        record = {"method": method, "k": k, "variant": retrain.VARIANTS.get(variant, "one-shot"),
                  "sparsity": zeros, "source": path, "source_sha256": checkpoint["sha256"],
                  "eval_config": eval_config}
        # The checkpoint's recipe, with the data this net was measured on: where a reload looks for it.
        config = {**checkpoint.get("config", {}), "dataset": dataset, "data_dir": data_dir}
        checkpoints.save_pruned(folder / net_name(name, k), [layer.weight.detach() for layer in net.layers],
                                accuracy, dataset, record, config)


def save_folders(folder, paths):
    """Where --save keeps each checkpoint's pruned nets: `folder`, or for several a folder each, named after it."""
    if folder is None or len(paths) == 1:
        return [Path(folder)] if folder is not None else []
    stems = [Path(path).stem for path in paths]
    if len(set(stems)) < len(stems):
        raise utils.UserError("--save keeps each checkpoint's nets in a folder named after its file: give the "
                              "checkpoints different file names")
    return [Path(folder) / stem for stem in stems]


def net_name(name, k):
    return f"{name}-{k:g}.pt"  # 95 as 95, 99.5 as 99.5


if __name__ == "__main__":
    utils.run(main)
