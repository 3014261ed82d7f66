"""Compare training recipes by how well the trained net survives one-shot pruning.

Each recipe is a set of train.py flags; every one is trained with the same seed, then swept by
eval.py at a few k with both methods. Prints a Markdown table of test accuracies on stdout (the
scripts' own logs go to stderr).

    python benchmarks/recipes.py --dataset fashion-mnist      # a few minutes on 2 CPU cores
"""
import argparse
import contextlib
import csv
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import eval as eval_script  # noqa: E402
import train  # noqa: E402
import data  # noqa: E402
import utils  # noqa: E402

RECIPES = {  # name: train.py flags on top of its defaults
    "SGD + weight decay 5e-4, no L1": ["--l1", "0", "--weight-decay", "5e-4"],
    "L1 1e-5": ["--l1", "1e-5"],
    "L1 3e-5 (the default)": [],
    "L1 5e-5": ["--l1", "5e-5"],
}
COLUMNS = [("weight", 90), ("weight", 95), ("weight", 97), ("weight", 99), ("unit", 70), ("unit", 80), ("unit", 90)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=data.DATASETS, default="mnist", help="default: %(default)s")
    parser.add_argument("--data-dir", default="data", help="default: %(default)s")
    args = parser.parse_args(argv)

    header = "| recipe | unpruned | " + " | ".join(f"{m} {k} %" for m, k in COLUMNS) + " |"
    lines = [header, "|---|" + "---:|" * (len(COLUMNS) + 1)]
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):  # the scripts' logs: progress
        tmp = Path(tmp)
        for name, flags in RECIPES.items():
            common = ["--dataset", args.dataset, "--data-dir", args.data_dir, "--no-download"]
            train.main([*flags, *common, "--out", str(tmp / "model.pt"), "--overwrite", "--logdir", str(tmp / "runs")])
            accuracy = {}
            for method in ("weight", "unit"):
                ks = ",".join(["0"] + [str(k) for m, k in COLUMNS if m == method])
                eval_script.main(["--sparsity", method, "--ks", ks, "--no-timing", *common,
                                  "--checkpoint", str(tmp / "model.pt"), "--results-dir", str(tmp / "results"),
                                  "--logdir", str(tmp / "runs"), "--plot", str(tmp / "plot.png")])
                with open(tmp / "results" / "model" / f"{method}.csv") as f:  # eval.py files them by net
                    accuracy |= {(method, int(row["k"])): float(row["accuracy"]) for row in csv.DictReader(f)}
            cells = [accuracy[("weight", 0)]] + [accuracy[column] for column in COLUMNS]
            lines.append(f"| {name} | " + " | ".join(f"{a:.2f}" for a in cells) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    utils.run(main)
