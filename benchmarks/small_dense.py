"""A large sparse net against a small dense one with as many weights, and distillation against pruning.

Zhu & Gupta (2017) found that, at an equal number of nonzero weights, a large pruned net beats a small
dense one; Hinton et al. (2015) train a small net to match a large one's outputs (distillation). Both
give a small net without sparse computation. For each sparsity S, at the weights left by weight pruning
to S (the hidden layers' (1 - S) share, plus the whole logits layer), this trains and times:

- weight pruning + fine-tuning: each checkpoint weight-pruned to S, fine-tuned --finetune-epochs at
  eval.py's fine-tuning rate, run through the sparse path;
- unit pruning + fine-tuning, compacted: each hidden layer unit-pruned to the widths of the small dense
  net below, fine-tuned alike, then its dead units removed: itself a small dense net, as many weights;
- small dense, from scratch: an MLP of the same depth, every hidden width scaled by one factor so that
  its weights number the pruned net's nonzeros (at 90 %: 784-213-213-107-43-10), trained with the
  checkpoint's recipe (epochs, rate, schedule, batch, L1, weight decay), init and order from its seed;
- small dense, distilled: the same net and recipe, its loss
  alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * cross-entropy(labels),
  with T = 4 and alpha = 0.9, the teacher the checkpoint's full net, the recipe's learning rate divided
  by T. T softens the teacher's outputs so that the small net learns how it ranks the wrong classes
  too; T^2 keeps the soft term's gradients from shrinking as 1/T^2 (Hinton et al.), but leaves them up
  to T times the hard term's. At the recipe's own rate, T = 4 diverged in the first epoch, and T = 2
  left two of three nets at 99 % dead (10 %). The rate divided by T trains most, not all: at 99 % on
  make.sh's seeds, seed 1's net kept one live unit of the 6 in its narrowest layer and ended at 20 %.

Accuracy is the mean ± standard deviation over the checkpoints; time is the forward pass at batch 100
on the first checkpoint's nets, the median of interleaved rounds in this run, as a speedup over the
full dense net by the faster of torch's product (MKL) and numpy's (its BLAS). Every small net runs as fast as this repo can run it: through csr_kernel.c in one
call, which runs the sparse net's layers as nonzeros and the dense nets' as dense blocks; without a C
compiler, the dense nets through torch (MKL) and the sparse one untimed. Prints a Markdown table, also
written to --out.

    python benchmarks/small_dense.py --checkpoint seed0.pt seed1.pt seed2.pt --out small_dense.md
    python benchmarks/small_dense.py --quick      # one sparsity, one epoch each: a smoke run
"""
import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import results  # noqa: E402
import data  # noqa: E402
import checkpoints  # noqa: E402
import files  # noqa: E402
import utils  # noqa: E402
from model import MLP, SIZES  # noqa: E402
from prune import apply_masks, prune, unit_mask  # noqa: E402
from retrain import retrain  # noqa: E402
from fastpath.plan import cpu_kernel, csr_kernel_forward, sparse_plan  # noqa: E402
from fastpath.compact import compact  # noqa: E402
from fastpath.paths import dense_forward, transposed  # noqa: E402
from benchmarks.harness import machine, numpy_dense_forward, time_paths  # noqa: E402

TEMPERATURE, ALPHA = 4.0, 0.9
HEADER = ["S %", "net", "sizes", "nonzero weights", "epochs", "accuracy %", "forward vs full dense"]


def count_weights(sizes):
    return sum(n_in * n_out for n_in, n_out in zip(sizes, sizes[1:]))


def small_dense_sizes(target, sizes=SIZES):
    """The layer sizes of an MLP like `sizes`, every hidden width scaled by one factor (found by
    bisection; widths rounded), whose weights come closest to `target`."""
    def scaled(factor):
        return (sizes[0], *(max(1, round(width * factor)) for width in sizes[1:-1]), sizes[-1])
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if count_weights(scaled(middle)) < target else (low, middle)
    return min(scaled(low), scaled(high), key=lambda s: abs(count_weights(s) - target))


def distillation_loss(student_logits, teacher_logits, labels, temperature=TEMPERATURE, alpha=ALPHA):
    """alpha * T^2 * KL(teacher || student, both softened by T) + (1 - alpha) * cross-entropy with the labels."""
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1), log_target=True, reduction="batchmean")
    return alpha * temperature ** 2 * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def train_small(sizes, train_data, recipe, seed, teacher_logits=None):
    """A small dense MLP trained with `recipe` from an init drawn from `seed`; distilled if given the
    teacher's logits on the training images, at the recipe's learning rate divided by the temperature."""
    torch.manual_seed(seed)
    model = MLP(sizes)
    steps = recipe["epochs"] * math.ceil(len(train_data[1]) / recipe["batch_size"])
    lr = recipe["lr"] if teacher_logits is None else recipe["lr"] / TEMPERATURE
    optimizer, scheduler = utils.sgd(model, lr, steps, recipe.get("weight_decay", 0.0))
    shuffle = torch.Generator().manual_seed(seed)
    def distilled(logits, batch):
        return distillation_loss(logits, teacher_logits[batch], train_data[1][batch])
    for epoch in range(1, recipe["epochs"] + 1):
        utils.train_epoch(model, train_data, optimizer, recipe["batch_size"], shuffle, scheduler,
                          recipe.get("l1", 0.0), desc=f"small dense {epoch}/{recipe['epochs']}",
                          loss_fn=None if teacher_logits is None else distilled)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", nargs="+", default=["model.pt"], help="default: %(default)s")
    parser.add_argument("--ks", default="90,95,97,99", help="sparsities S, in %%; default: %(default)s")
    parser.add_argument("--finetune-epochs", type=utils.positive_int, default=3,
                        help="epochs of fine-tuning after pruning; default: %(default)s")
    parser.add_argument("--finetune-lr", type=utils.positive_float, default=0.01, help="default: %(default)s")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: the first sparsity only, one epoch of every training")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")][:1 if args.quick else None]
    if args.out:
        files.check_writable(Path(args.out).resolve().parent)

    loaded = [checkpoints.load(path) for path in args.checkpoint]
    config = loaded[0][1]["config"]
    train_data = data.load_data(config["dataset"], config["data_dir"], "train", download=False)
    test_data = data.load_data(config["dataset"], config["data_dir"], "test", download=False)
    recipe = {key: config[key] for key in ("epochs", "lr", "batch_size", "l1", "weight_decay")}
    finetune = {"epochs": args.finetune_epochs, "lr": args.finetune_lr, "batch_size": config["batch_size"]}
    if args.quick:
        recipe["epochs"] = finetune["epochs"] = 1
    with torch.no_grad():
        teachers = [torch.cat([model(train_data[0][i:i + 5000]) for i in range(0, len(train_data[1]), 5000)])
                    for model, _ in loaded]
    x = test_data[0][:100]
    kernel = cpu_kernel()[0] is not None

    lines = []
    for k in ks:
        target = count_weights(SIZES[:-1]) * (100 - k) // 100 + count_weights(SIZES[-2:])
        sizes = small_dense_sizes(target)
        nets = {"weight pruning + fine-tuning": [], "unit pruning + fine-tuning, compacted": [],
                "small dense, from scratch": [], "small dense, distilled": []}
        for (model, checkpoint), teacher in zip(loaded, teachers):
            seed = checkpoint["config"]["seed"]
            weight = prune(model, "weight", k)
            unit = apply_masks(model, [unit_mask(layer.weight.detach(), 1 - width / layer.out_features)
                                       for layer, width in zip(model.hidden, sizes[1:-1])])
            for net in (weight, unit):
                retrain(net, train_data, **finetune, seed=seed)
            nets["weight pruning + fine-tuning"].append(weight)
            nets["unit pruning + fine-tuning, compacted"].append(unit)
            nets["small dense, from scratch"].append(train_small(sizes, train_data, recipe, seed))
            nets["small dense, distilled"].append(train_small(sizes, train_data, recipe, seed, teacher))
        weights = {name: [layer.weight.detach() for layer in group[0].layers] for name, group in nets.items()}
        full = transposed([layer.weight.detach() for layer in loaded[0][0].layers])
        paths = {"full dense": (dense_forward, full)}
        for name, net_weights in weights.items():
            if kernel:
                paths[name] = (csr_kernel_forward, sparse_plan(net_weights))
            elif "pruning +" not in name or "compacted" in name:
                paths[name] = (dense_forward, transposed(compact(net_weights)))
        with torch.no_grad():
            times = time_paths(paths, x)
            # numpy's dense in a run of its own, after the others: its BLAS threads, which spin on after a call,
            # took the cores from the kernel timed beside them in one run (the same small net timed 6x and 12x)
            times |= time_paths({"full dense numpy": (numpy_dense_forward, [w.numpy() for w in full])}, x)
        for name, group in nets.items():
            accuracy, std = results.mean_and_std([utils.evaluate(net, test_data) for net in group])
            nonzeros = sum(int(w.count_nonzero()) for w in compact(weights[name]))
            trained = (f"{recipe['epochs']} + {finetune['epochs']}" if "pruning" in name else f"{recipe['epochs']}")
            dense_ms = min(times["full dense_ms"], times["full dense numpy_ms"])  # the faster dense: the baseline
            speedup = dense_ms / times[f"{name}_ms"] if f"{name}_ms" in times else math.nan
            lines.append([k, name, "-".join(map(str, sizes)) if "small" in name or "unit" in name else "-",
                          f"{nonzeros:,}", trained, f"{accuracy:.2f} ± {std:.2f}", f"{speedup:.1f}x"])
        print(results.markdown(HEADER, lines[-4:], text_columns=(1, 2)), flush=True)
    table = (results.markdown(HEADER, lines, text_columns=(1, 2)) + f"\n\nThe forward passes timed at batch {len(x)} on "
             f"{machine('cpu')}, {torch.get_num_threads()} threads.")
    print(f"\n{len(loaded)} checkpoint(s): {', '.join(args.checkpoint)}\n{table}")
    if args.out:
        files.write_atomic(args.out, lambda f: f.write((table + "\n").encode()))


if __name__ == "__main__":
    utils.run(main)
