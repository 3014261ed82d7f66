"""Make the recipe's choices on a validation split, never on the test set that the README reports.

A choice is a few candidates. Each is trained on the training images less a validation split (train.py
--validation 5000 by default: the same images every run), pruned, and scored on that split (eval.py --split validation).
A candidate's score is its mean validation accuracy over the choice's columns; the highest score is the
choice. No test accuracy takes part (train.py reports one; it is not read). Prints one Markdown table, the
chosen row in bold, to --out.

    python benchmarks/choices.py l1 --out docs/mnist/choices/l1.md     # MNIST in data/, as train.py finds it

The choices, and what their columns are (each a sweep of eval.py at those k):
    l1            the dense recipe's L1 penalty: unpruned, and one-shot weight and unit pruning
    finetune      fine-tuning's rate and epochs, on the dense recipe's net: weight 95 and 99 %, unit 80 %
    gmp-schedule  where gmp's sparsity starts and stops rising, as shares of training, at --target 99
    vd-strength   vd's final weight of the KL term: its net pruned by -log α (learned) at 99, 99.5, 99.8 %
    l0-gate-rate  l0's gates' learning rate, as a multiple of the weights': learned at 99, 99.5, 99.8 %
"""
import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import eval as eval_script  # noqa: E402
import data  # noqa: E402
import files  # noqa: E402
import results  # noqa: E402
import retrain  # noqa: E402
import sparse_training  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402
from sparse_training import gmp  # noqa: E402

# name: (candidates, columns). A candidate is (train.py flags, eval.py flags, module constants to set while it
# trains); a column is (eval.py method, k). The current default is the candidate named "(default)".
CHOICES = {
    "l1": ({
        "no L1, weight decay 5e-4": (["--l1", "0", "--weight-decay", "5e-4"], [], {}),
        **{f"L1 {l1:.0e}".replace("e-0", "e-") + " (default)" * (l1 == train.L1): (["--l1", str(l1)], [], {})
           for l1 in (1e-5, 3e-5, 5e-5, 1e-4, 2e-4)},
    }, [("weight", 0), ("weight", 90), ("weight", 95), ("weight", 97), ("weight", 99),
        ("unit", 70), ("unit", 80), ("unit", 90)]),
    "finetune": ({
        f"rate {lr}, {epochs} epoch{'s' * (epochs > 1)}"
        f"{' (default)' * ((float(lr), epochs) == (retrain.FINETUNE['lr'], retrain.FINETUNE['epochs']))}":
            ([], ["--retrain", "finetune", "--retrain-lr", lr, "--retrain-epochs", str(epochs)], {})
        for lr in ("0.003", "0.01", "0.03") for epochs in (1, 3)
    }, [("weight-finetuned", 95), ("weight-finetuned", 99), ("unit-finetuned", 80)]),
    "gmp-schedule": ({
        f"from {start:.0%} to {end:.0%} of training{' (default)' * ((start, end) == (gmp.GMP_START, gmp.GMP_END))}":
            (["--sparse", "gmp", "--target", "99"], [], {(gmp, "GMP_START"): start, (gmp, "GMP_END"): end})
        for start, end in ((0.0, 0.5), (0.1, 0.7), (0.2, 0.9))
    }, [("weight", 99)]),
    "vd-strength": ({
        f"{strength}{' (default)' * (strength == sparse_training.DEFAULT_STRENGTH['vd'])}":
            (["--sparse", "vd", "--strength", str(strength)], [], {})
        for strength in (0.1, 1.0)
    }, [("learned", 99), ("learned", 99.5), ("learned", 99.8)]),
    "l0-gate-rate": ({
        f"{rate:g} x{' (default)' * (rate == sparse_training.L0_GATE_LR)}":
            (["--sparse", "l0"], [], {(sparse_training, "L0_GATE_LR"): rate})
        for rate in (10.0, 30.0, 100.0, 300.0)
    }, [("learned", 99), ("learned", 99.5), ("learned", 99.8)]),
}


def score(choice, candidate, common, folder, trained, validation, epochs=None):
    """{column: validation accuracy} of one candidate, trained (once for candidates that train alike: `trained`
    maps their training to its checkpoint) and swept in `folder`."""
    train_flags, eval_flags, constants = CHOICES[choice][0][candidate]
    columns = CHOICES[choice][1]
    logdir = str(folder / "runs")
    recipe = (tuple(train_flags), tuple((module.__name__, name, value) for (module, name), value in constants.items()))
    if recipe not in trained:
        trained[recipe] = str(folder / f"net{len(trained)}.pt")
        with contextlib.ExitStack() as stack:
            for (module, name), value in constants.items():
                stack.enter_context(mock.patch.object(module, name, value))
            train.main([*train_flags, *common, *(["--epochs", str(epochs)] if epochs else []),
                        "--validation", str(validation), "--out", trained[recipe], "--overwrite", "--logdir", logdir])
    results_dir = folder / f"results{len(list(folder.glob('results*')))}"
    for method in dict.fromkeys(column.split("-")[0] for column, _ in columns):
        ks = ",".join(f"{k:g}" for column, k in columns if column.split("-")[0] == method)
        eval_script.main(["--sparsity", method, "--ks", ks, "--no-timing", "--split", "validation", *eval_flags,
                          *common, "--checkpoint", trained[recipe], "--name", "net", "--results-dir",
                          str(results_dir), "--logdir", logdir, "--plot", str(folder / "plot.png")])
    rows = {column: {row["k"]: row["accuracy"] for row in results.read_rows(results_dir / "net" / f"{column}.csv")}
            for column in dict.fromkeys(column for column, _ in columns)}
    return {(column, k): rows[column][k] for column, k in columns}


def table(choice, scores):
    """The Markdown table of every candidate's columns and mean, the highest mean in bold."""
    columns = CHOICES[choice][1]
    means = {candidate: statistics.mean(row.values()) for candidate, row in scores.items()}
    best = max(means, key=means.get)
    header = ["candidate", *(f"{column} {k:g} %" for column, k in columns), "mean"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for candidate, row in scores.items():
        cells = [candidate, *(f"{row[column]:.2f}" for column in columns), f"{means[candidate]:.2f}"]
        if candidate == best:
            cells = [f"**{cell}**" for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("choice", choices=CHOICES)
    parser.add_argument("--dataset", choices=data.DATASETS, default="mnist", help="default: %(default)s")
    parser.add_argument("--data-dir", default="data", help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="every candidate's seed (default: %(default)s)")
    parser.add_argument("--validation", type=utils.positive_int, default=5000,
                        help="training images held out to score on (default: %(default)s)")
    parser.add_argument("--epochs", type=utils.positive_int, default=None,
                        help="every candidate's training epochs (default: train.py's)")
    parser.add_argument("--out", type=Path, required=True, help="the Markdown table")
    args = parser.parse_args(argv)
    files.check_outputs(files=[args.out])

    common = ["--dataset", args.dataset, "--data-dir", args.data_dir, "--no-download", "--seed", str(args.seed)]
    scores, trained = {}, {}
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory() as folder:  # their logs: progress
        for candidate in CHOICES[args.choice][0]:
            scores[candidate] = score(args.choice, candidate, common, Path(folder), trained, args.validation,
                                      args.epochs)
    text = table(args.choice, scores)
    files.write_atomic(args.out, lambda f: f.write(text.encode()))
    print(text, end="")


if __name__ == "__main__":
    utils.run(main)
