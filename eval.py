"""Prune the trained MLP to each sparsity k and measure its test accuracy, and its speed dense against sparse."""
import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

import results
import utils
from prune import METHODS, finetune, prune, sparsity
from speed import cpu_kernel, sparse_path, time_forwards

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
    parser.add_argument("--checkpoint", default="model.pt", help="what train.py saved")
    parser.add_argument("--timing-batch", type=utils.positive_int, default=100,
                        help="images per forward pass when timing dense against sparse")
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
    parser.add_argument("--plot", default="plot.png", help="accuracy against k for every method in --results-dir")
    args = parser.parse_args(argv)

    device = utils.pick_device(args.device)
    model, checkpoint = utils.load_checkpoint(args.checkpoint, device)
    trained = checkpoint.get("config", {})
    dataset = trained.get("dataset", "mnist") if args.dataset == CHECKPOINTS else args.dataset
    data_dir = trained.get("data_dir", "data") if args.data_dir == CHECKPOINTS else args.data_dir
    test_data = utils.load_data(dataset, data_dir, "test", not args.no_download, device)
    for folder in (args.results_dir, args.logdir, Path(args.plot).resolve().parent):
        utils.check_writable(folder)  # after the inputs, so that bad inputs leave no trace
    timing = not (args.no_timing or args.finetune_epochs)
    sparse = sparse_path(device) if timing else None
    if sparse == "torch CSR" and torch.device(device).type == "cpu":
        print(f"note: the sparse path is torch CSR, as the C kernel did not build: {cpu_kernel()[1]}")
    command = shlex.join(["python", "eval.py", *(sys.argv[1:] if argv is None else argv)])
    config = {"command": command, **vars(args), "dataset": dataset, "data_dir": data_dir, "device": device,
              "checkpoint_config": checkpoint.get("config"), "checkpoint_accuracy": checkpoint.get("accuracy"),
              "torch": str(torch.__version__), "sparse_path": sparse,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "threads": torch.get_num_threads()}

    timing_images = test_data[0][:args.timing_batch]
    if timing and len(timing_images) < args.timing_batch:
        raise utils.UserError(f"--timing-batch {args.timing_batch} is more than the {len(timing_images)} test images")
    if args.finetune_epochs:
        train_data = utils.load_data(dataset, data_dir, "train", not args.no_download, device)
        batch_size = trained.get("batch_size", 128)
    for method in args.sparsity:
        name = f"{method}-finetuned" if args.finetune_epochs else method
        start = time.perf_counter()
        rows = []
        for k in tqdm(args.ks, desc=name, unit="k", leave=False, disable=None):
            pruned = prune(model, method, k, args.seed)
            row = {"k": k}
            if args.finetune_epochs:
                row["one_shot_accuracy"] = utils.evaluate(pruned, test_data)
                finetune(pruned, train_data, args.finetune_epochs, args.finetune_lr, batch_size, args.seed)
            row |= {**sparsity(pruned), "accuracy": utils.evaluate(pruned, test_data)}
            if timing:
                with torch.no_grad():
                    row |= time_forwards([layer.weight.detach() for layer in pruned.layers], timing_images)
            rows.append(row)
        print(f"\n{name} pruning of {args.checkpoint} on {dataset} ({time.perf_counter() - start:.1f} s)")
        print(results.markdown_table(rows))
        results.write_results(Path(args.results_dir), name, rows, config)
        results.write_tensorboard(Path(args.logdir) / name, rows)
    results.draw_plot(Path(args.results_dir), args.plot, dataset)
    print(f"\nwrote {args.results_dir}/, {args.logdir}/ and {args.plot}; see them with: tensorboard --logdir .")


if __name__ == "__main__":
    utils.run(main)
