"""LeNet-300-100 on MNIST, this repo's methods at the papers' sparsities, beside the numbers the papers publish.

Reads the sweeps that scripts/make.sh's lenet section filed in --results (eval.py's <name>/<method>.csv, each
the mean ± standard deviation over three seeds) and prints one Markdown table of test error, in %.

    python benchmarks/papers.py --results docs/mnist/lenet --out docs/mnist/lenet.md
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import files  # noqa: E402
import results  # noqa: E402
import utils  # noqa: E402

KS = [92, 95, 98.2, 98.5, 99]  # the papers' sparsities: 8, 5, 1.8, 1.5 and 1 % of the weights kept
# (row, how it was pruned, results file under --results: gmp's one per k, each net trained to its k)
OURS = [
    ("one-shot, per layer", "pruned once", "dense/weight.csv"),
    ("one-shot, global", "pruned once", "dense/global.csv"),
    ("fine-tuned, per layer", "pruned once, then fine-tuned", "dense/weight-finetuned.csv"),
    ("fine-tuned, global", "pruned once, then fine-tuned", "dense/global-finetuned.csv"),
    ("gmp", "pruned while training, one net per k", "gmp{k:g}/weight.csv"),
    ("vd", "sparse VD, then ranked by -log α", "vd/learned.csv"),
    ("l0", "L0 gates, then ranked by them", "l0/learned.csv"),
]
# (row, training as the paper gives it, {k: test error %}), as published
PAPERS = [
    ("Han et al. 2015, pruning and retraining", "dense, then pruned and retrained in rounds",
     {"unpruned": "1.64", 92: "1.59"}),
    ("Guo et al. 2016, DNS", "pruning and splicing while retraining", {98.2: "~2.0"}),
    ("Molchanov et al. 2017, sparse VD", "sparse VD", {98.5: "~1.9"}),
    ("Dettmers & Zettlemoyer 2019, sparse momentum", "sparse from the first step", {95: "1.53", 99: "2.36"}),
]


def error_cell(row):
    """'e ± s' in % error from a results row's accuracy and its spread over seeds."""
    std = row.get("accuracy_std")
    return f"{100 - row['accuracy']:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def read(path):
    """{k: row} of a results CSV; a UserError naming it and the command that makes it where it is missing."""
    try:
        return {row["k"]: row for row in results.read_rows(path)}
    except (OSError, ValueError) as e:
        raise utils.UserError(f"cannot read {path} ({e}): run bash scripts/make.sh lenet")


def budget(path):
    """Its checkpoints' training epochs, and fine-tuning's where it was fine-tuned, from the results' JSON."""
    config = json.loads(path.with_suffix(".json").read_text())["config"]
    epochs = config["checkpoint_config"]["epochs"]
    text = f"{epochs} epoch{'s' * (epochs != 1)}"
    if config.get("retrain"):
        epochs = config["retrain_recipe"]["epochs"]
        text += f" + {epochs} epoch{'s' * (epochs != 1)} at each k"
    return text


def table(folder):
    lines = [f"| method | training | unpruned | {' | '.join(f'{100 - k:g} % kept' for k in KS)} |",
             "|---|---|" + "---:|" * (len(KS) + 1)]
    for name, how, path in OURS:
        paths = {k: folder / path.format(k=k) for k in KS}
        cells = [error_cell(read(paths[k])[k]) for k in KS]
        # the dense nets' own error, not that of a fine-tuned unpruned net, nor one trained sparse
        unpruned = read(paths[KS[0]]).get(0) if path in ("dense/weight.csv", "dense/global.csv") else None
        lines.append(f"| this repo, {name} | {how}; {budget(paths[KS[0]])} | "
                     f"{error_cell(unpruned) if unpruned else ''} | {' | '.join(cells)} |")
    for name, training, errors in PAPERS:
        lines.append(f"| {name} | {training} | {' | '.join(errors.get(k, '') for k in ['unpruned', *KS])} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="the lenet section's --results-dir")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if args.out:
        files.check_outputs(files=[args.out])
    text = table(args.results)
    if args.out:
        files.write_atomic(args.out, lambda f: f.write(text.encode()))
    print(text, end="")


if __name__ == "__main__":
    utils.run(main)
