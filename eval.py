"""Prune the trained MLP to each sparsity k and measure its test accuracy, and its speed dense against sparse."""
import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

import results
import utils
from prune import METHODS, finetune, prune, sparsity
from speed import cpu_kernel, machine, sparse_path, time_forwards

DEFAULT_KS = "0,25,50,60,70,80,90,95,97,99"
CHECKPOINTS = "the checkpoint's"  # default --dataset and --data-dir: those the checkpoint was trained on
SHORTHANDS = {"both": ["weight", "unit"], "all": list(METHODS)}


def parse_methods(text):
    names = SHORTHANDS.get(text, text.split(","))
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"invalid choice: {unknown[0]!r} (choose from {', '.join(METHODS)}, "
                                         f"a comma-separated list of them, both or all)")
    return list(dict.fromkeys(names))


def parse_ks(text):
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a comma-separated list such as 0,50,90, got nothing")
    ks = []
    for item in text.split(","):
        if not item.strip().isdigit() or not 0 <= int(item) < 100:
            raise argparse.ArgumentTypeError(f"expected whole numbers from 0 to 99, got {item.strip()!r}")
        ks.append(int(item))
    return sorted(set(ks))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sparsity", type=parse_methods, required=True, default=argparse.SUPPRESS,
                        help=f"the pruning method: one of {', '.join(METHODS)}, a comma-separated list of them, "
                             f"both (weight,unit) or all")
    parser.add_argument("--ks", type=parse_ks, default=DEFAULT_KS,
                        help="sparsities to try, comma-separated, in percent of the hidden layers' weights or units")
    parser.add_argument("--checkpoint", nargs="+", default=["model.pt"],
                        help="what train.py saved; several (the same recipe, other seeds) give the mean accuracy "
                             "and its standard deviation over them")
    parser.add_argument("--timing-batch", type=utils.positive_int, default=100,
                        help="images per forward pass when timing dense against sparse (the first checkpoint's net)")
    parser.add_argument("--no-timing", action="store_true", help="measure accuracy only")
    parser.add_argument("--finetune-epochs", type=utils.non_negative_int, default=0,
                        help="epochs of training after pruning, pruned weights held at zero; results go to "
                             "<method>-finetuned (no timing: the nonzeros, so the speed, are the one-shot run's)")
    parser.add_argument("--finetune-lr", type=utils.positive_float, default=0.01,
                        help="peak learning rate of fine-tuning, annealed to 0 on a cosine")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds random pruning and the order of the images in fine-tuning")
    utils.add_data_arguments(parser)
    parser.set_defaults(dataset=CHECKPOINTS, data_dir=CHECKPOINTS)
    parser.add_argument("--results-dir", default="results", help="gets <method>.csv and <method>.json")
    parser.add_argument("--logdir", default="runs", help="TensorBoard logs go to <logdir>/<method>")
    parser.add_argument("--plot", default="plot.png",
                        help="accuracy (and speed) against the weights kept, for every method in --results-dir "
                             "made from the same checkpoints")
    args = parser.parse_args(argv)

    device = utils.pick_device(args.device)
    models, checkpoints = zip(*(utils.load_checkpoint(path, device) for path in args.checkpoint))
    trained = checkpoints[0].get("config", {})
    dataset = trained.get("dataset", "mnist") if args.dataset == CHECKPOINTS else args.dataset
    data_dir = trained.get("data_dir", "data") if args.data_dir == CHECKPOINTS else args.data_dir
    if len({c.get("config", {}).get("dataset", "mnist") for c in checkpoints}) > 1:
        raise utils.UserError("the checkpoints were trained on different data sets; compare seeds of one recipe")
    test_data = utils.load_data(dataset, data_dir, "test", not args.no_download, device)
    for folder in (args.results_dir, args.logdir, Path(args.plot).resolve().parent):
        utils.check_writable(folder)  # after the inputs, so that bad inputs leave no trace
    timing = not (args.no_timing or args.finetune_epochs)
    sparse = sparse_path(device) if timing else None
    if sparse == "torch CSR" and torch.device(device).type == "cpu":
        print(f"note: the sparse path is torch CSR, as the C kernel did not build: {cpu_kernel()[1]}")
    command = shlex.join(["python", "eval.py", *(sys.argv[1:] if argv is None else argv)])
    info = {"sha256": [c["sha256"] for c in checkpoints],
            "checkpoints": [{"path": path, "seed": c.get("config", {}).get("seed"), "accuracy": c.get("accuracy")}
                            for path, c in zip(args.checkpoint, checkpoints)],
            "config": {"command": command, **vars(args), "dataset": dataset, "data_dir": data_dir, "device": device,
                       "checkpoint_config": trained, "torch": str(torch.__version__), "sparse_path": sparse,
                       "machine": machine(device), "threads": torch.get_num_threads()}}

    timing_images = test_data[0][:args.timing_batch]
    if timing and len(timing_images) < args.timing_batch:
        raise utils.UserError(f"--timing-batch {args.timing_batch} is more than the {len(timing_images)} test images")
    if args.finetune_epochs:
        train_data = utils.load_data(dataset, data_dir, "train", not args.no_download, device)
        batch_size = trained.get("batch_size", 128)
    variant = "finetuned" if args.finetune_epochs else "one-shot"
    for method in args.sparsity:
        name = method if variant == "one-shot" else f"{method}-{variant}"
        start = time.perf_counter()
        rows, accuracies = [], {}
        for k in tqdm(args.ks, desc=name, unit="k", leave=False, disable=None):
            pruned = [prune(model, method, k, args.seed) for model in models]
            row = {"k": k}
            if args.finetune_epochs:
                row |= spread("one_shot_accuracy", [utils.evaluate(net, test_data) for net in pruned])
                for net in pruned:
                    finetune(net, train_data, args.finetune_epochs, args.finetune_lr, batch_size, args.seed)
            accuracies[k] = [utils.evaluate(net, test_data) for net in pruned]
            row |= {column: statistics.mean(values) for column, values in
                    transpose([sparsity(net) for net in pruned]).items()}
            row |= spread("accuracy", accuracies[k])
            if timing:
                with torch.no_grad():
                    row |= time_forwards([layer.weight.detach() for layer in pruned[0].layers], timing_images)
            rows.append(row)
        print(f"\n{name} pruning of {', '.join(args.checkpoint)} on {dataset} ({time.perf_counter() - start:.1f} s)")
        print(results.markdown_table(rows))
        results.write_results(Path(args.results_dir), name, rows,
                              {"method": method, "variant": variant, "accuracy_per_checkpoint": accuracies, **info})
        results.write_tensorboard(Path(args.logdir) / name, rows)

    found, others = results.read_results(Path(args.results_dir), info["sha256"])
    if others:
        print(f"note: the plot leaves out {len(others)} file(s) in {args.results_dir} that eval.py did not make from "
              f"these checkpoints: {', '.join(others)}")
    timed = {info["method"]: rows for info, rows in found.values() if "sparse_speedup" in rows[0]}
    note = (f"{dataset}, {len(models)} checkpoint(s): {', '.join(args.checkpoint)}" +
            (f" | timing: batch {args.timing_batch}, {machine(device)}, {torch.get_num_threads()} threads, "
             f"the first checkpoint" if timed else ""))
    unpruned = statistics.mean(c.get("accuracy", float("nan")) for c in checkpoints)
    results.draw_plot(args.plot, found, unpruned, note, timed)
    print(f"\nwrote {args.results_dir}/, {args.logdir}/ and {args.plot}; see them with: tensorboard --logdir {args.logdir}")


def spread(column, values):
    """The mean of values, and their standard deviation where there are several (one has none)."""
    mean, std = results.mean_and_std(values)
    return {column: mean, f"{column}_std": std} if len(values) > 1 else {column: mean}


def transpose(dicts):
    """A list of dicts with the same keys as one dict of lists."""
    return {key: [d[key] for d in dicts] for key in dicts[0]}


if __name__ == "__main__":
    utils.run(main)
