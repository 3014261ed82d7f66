"""Prune the trained MLP to sparsity k, each hidden layer on its own, and measure test accuracy per k."""
import argparse
import copy
import csv
import io
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch
from torch.nn.utils import prune as torch_prune

import utils

DEFAULT_KS = "0,25,50,60,70,80,90,95,97,99"


def mask_smallest(scores, n):
    """A 0/1 mask shaped like `scores`, with zeros at its n smallest entries.

    Ties go to the lower index (a stable sort), so the mask is the same on every run and device, and
    the mask for a larger n contains the one for a smaller n. torch.topk, behind torch.nn.utils.prune's
    l1_unstructured and ln_structured, promises neither: ln_structured gives masks that are not nested
    when rows have equal norms.
    """
    mask = torch.ones(scores.numel(), device=scores.device)
    mask[scores.flatten().argsort(stable=True)[:n]] = 0
    return mask.view_as(scores)


def weight_mask(weight, fraction):
    """Zero the round(fraction * numel) weights of the smallest magnitude."""
    return mask_smallest(weight.abs(), round(fraction * weight.numel()))


def unit_mask(weight, fraction):
    """Zero the round(fraction * out_features) output units (rows) of the smallest L2 norm."""
    rows = mask_smallest(weight.norm(dim=1), round(fraction * weight.shape[0]))
    return rows[:, None].expand_as(weight).contiguous()


# A pruning method maps a weight matrix and the fraction to remove to a 0/1 mask of the same shape.
METHODS = {"weight": weight_mask, "unit": unit_mask}


def prune(model, method, k):
    """A copy of `model` with each hidden layer pruned to k percent by `method`; the logits layer is kept whole.

    The mask goes through torch.nn.utils.prune, so the copy trains with pruned weights held at zero.
    """
    pruned = copy.deepcopy(model)
    for layer in pruned.hidden:
        torch_prune.custom_from_mask(layer, "weight", METHODS[method](layer.weight.detach(), k / 100))
    return pruned


def sparsity(model):
    """Percentage of zero weights in the hidden layers and in the whole network."""
    def zeros(layers):
        return 100 * sum(int((layer.weight == 0).sum()) for layer in layers) / sum(
            layer.weight.numel() for layer in layers)
    return {"sparsity": zeros(model.hidden), "total_sparsity": zeros(model.layers)}


def parse_ks(text):
    ks = []
    for item in text.split(","):
        if not item.strip().isdigit() or not 0 <= int(item) < 100:
            raise argparse.ArgumentTypeError(f"expected whole numbers from 0 to 99, got {item.strip()!r}")
        ks.append(int(item))
    return sorted(set(ks))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sparsity", choices=[*METHODS, "both"], required=True, help="the pruning method")
    parser.add_argument("--ks", type=parse_ks, default=DEFAULT_KS,
                        help="sparsities to try, in percent of each hidden layer's weights or units")
    parser.add_argument("--checkpoint", default="model.pt")
    utils.add_data_arguments(parser)
    parser.set_defaults(dataset=None)
    parser.add_argument("--results-dir", default="results", help="gets <method>.csv and <method>.json")
    parser.add_argument("--logdir", default="runs", help="TensorBoard logs go to <logdir>/<method>")
    parser.add_argument("--plot", default="plot.png", help="accuracy against k for every method in --results-dir")
    args = parser.parse_args(argv)
    methods = list(METHODS) if args.sparsity == "both" else [args.sparsity]

    device = utils.pick_device(args.device)
    for folder in (args.results_dir, args.logdir, Path(args.plot).resolve().parent):
        utils.check_writable(folder)
    model, checkpoint = utils.load_checkpoint(args.checkpoint, device)
    dataset = args.dataset or checkpoint.get("config", {}).get("dataset", "mnist")
    test_data = utils.load_data(dataset, args.data_dir, "test", not args.no_download, device)
    command = shlex.join(["python", "eval.py", *(sys.argv[1:] if argv is None else argv)])
    config = {"command": command, **vars(args), "dataset": dataset, "device": device,
              "checkpoint_config": checkpoint.get("config"), "checkpoint_accuracy": checkpoint.get("accuracy"),
              "torch": str(torch.__version__), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "threads": torch.get_num_threads()}

    for method in methods:
        start = time.perf_counter()
        rows = []
        for k in args.ks:
            pruned = prune(model, method, k)
            rows.append({"k": k, **sparsity(pruned), "accuracy": utils.evaluate(pruned, test_data)})
        print(f"\n{method} pruning of {args.checkpoint} on {dataset} ({time.perf_counter() - start:.1f} s)")
        print(markdown_table(rows))
        write_results(Path(args.results_dir), method, rows, config)
        write_tensorboard(Path(args.logdir) / method, rows)
    draw_plot(Path(args.results_dir), args.plot, dataset)
    print(f"\nwrote {args.results_dir}/, {args.logdir}/ and {args.plot}; see them with: tensorboard --logdir .")


# ---------------------------------------------------------------------------------------------------
# Output. Each file is written whole or not at all, so Ctrl-C or a crash mid-sweep keeps the last good one.

COLUMNS = {"k": "k %", "sparsity": "sparsity %", "total_sparsity": "whole net %", "accuracy": "accuracy %"}


def markdown_table(rows):
    lines = ["| " + " | ".join(COLUMNS[c] for c in rows[0]) + " |", "|" + "---:|" * len(rows[0])]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines)


def write_results(results_dir, method, rows, config):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows([{c: round(v, 4) if isinstance(v, float) else v for c, v in row.items()} for row in rows])
    utils.write_atomic(results_dir / f"{method}.csv", lambda f: f.write(text.getvalue().encode()))
    utils.write_atomic(results_dir / f"{method}.json",
                       lambda f: f.write(json.dumps({"method": method, **config}, indent=2).encode()))


def write_tensorboard(run_dir, rows):
    """Replace the TensorBoard run in `run_dir` by one point per k and column, so a re-run does not stack."""
    from torch.utils.tensorboard import SummaryWriter  # slow to import; only needed here

    new, old = (run_dir.with_name(f".{run_dir.name}.{os.getpid()}.{end}") for end in ("new", "old"))
    with SummaryWriter(new) as writer:
        for row in rows:
            for column, value in row.items():
                if column != "k":
                    writer.add_scalar(column, value, row["k"])
    if run_dir.exists():
        run_dir.rename(old)
    new.rename(run_dir)
    shutil.rmtree(old, ignore_errors=True)


def draw_plot(results_dir, path, dataset):
    """Accuracy against k for every method that has results, in one chart."""
    import matplotlib
    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for csv_path in sorted(results_dir.glob("*.csv")):
        with open(csv_path) as f:
            rows = list(csv.DictReader(f))
        ax.plot([int(r["k"]) for r in rows], [float(r["accuracy"]) for r in rows], marker="o", label=csv_path.stem)
    ax.set(xlabel="k: % of weights or units removed from each hidden layer", ylabel="test accuracy (%)",
           title=f"Magnitude pruning of the MLP on {dataset}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    utils.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


if __name__ == "__main__":
    utils.run(main)
