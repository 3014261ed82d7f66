"""Nets trained to be sparse against pruning a dense net, at sparsities up to 99.8 %: the tables of docs/sparse.md.

Reads what scripts/make.sh's sparse section made: the record of each trained net in docs/sparse/runs/ (train.py
--sparse gmp, gmp-global, static, snip, synflow, set, rigl and rigl with ERK, one per target; vd, l0 and l0-unit;
RigL at 99 % in the dense recipe's wall time, for each seed; and the dense seeds: each checkpoint's numbers and
config without its weights, written by --record), rigl-torch's records (benchmarks/peer_rigl.py) in
docs/sparse/rigl-torch/ (torch's dense init) and rigl-torch-fan-in/ (--init sparse-fan-in), and eval.py's sweeps of the dense seeds and of vd and l0 in docs/sparse/. Every accuracy is
the mean ± standard deviation over the seeds found (their number is given where it is not 3); a sparsity is the
share of the hidden layers' weights that are zero. Writes one Markdown file, also printed.

    python benchmarks/sparse.py --record checkpoints/vd-seed0.pt      # after each training run
    python benchmarks/sparse.py --ks 90,95,98,99,99.5,99.8 --out docs/sparse.md
    python benchmarks/sparse.py --equal-time-epochs                   # RigL's epochs in a dense run's time
"""
import argparse
import csv
import json
import statistics
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import checkpoints  # noqa: E402
import files  # noqa: E402
import results  # noqa: E402
import utils  # noqa: E402
from eval import parse_ks  # noqa: E402
from retrain import FINETUNE  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)
# (row, its epochs of training, the results file in docs/sparse/, its column)
SWEPT = [
    ("weight, one-shot", "15", "dense/weight.csv", "accuracy"),
    ("global, one-shot", "15", "dense/global.csv", "accuracy"),
    ("weight + fine-tuning", f"15 + {FINETUNE['epochs']}", "dense/weight-finetuned.csv", "accuracy"),
    ("global + fine-tuning", f"15 + {FINETUNE['epochs']}", "dense/global-finetuned.csv", "accuracy"),
    ("vd (the ELBO), learned ranking", "15", "vd/learned.csv", "accuracy"),
    ("vd, magnitude (weight)", "15", "vd/weight.csv", "accuracy"),
    ("l0, learned ranking", "15", "l0/learned.csv", "accuracy"),
    ("l0, magnitude (weight)", "15", "l0/weight.csv", "accuracy"),
]
HEADLINE = {"weight, one-shot": "one-shot weight pruning", "weight + fine-tuning": "the same fine-tuned",
            "gmp to each target": "gmp", "vd (the ELBO), learned ranking": "vd",
            "l0, learned ranking": "l0", "static (a random mask, held) to each target": "a random mask held",
            "rigl to each target": "rigl"}
# (row, the nets' names) of the table of what each method zeroes on its own
NATURAL = [("vd (the ELBO)", "vd"), ("l0", "l0"), ("l0-unit", "l0-unit")]
# (row, the records' name before the target) of the nets trained to each target: from a dense net, then sparse
# from the first step
TRAINED = [("gmp to each target", "gmp"), ("gmp-global to each target", "gmp-global"),
           ("static (a random mask, held) to each target", "static"), ("snip to each target", "snip"),
           ("synflow to each target", "synflow"), ("set to each target", "set"), ("rigl to each target", "rigl"),
           ("rigl, erk, to each target", "rigl-erk")]
EQUAL_TIME = "rigl-equal-time99"  # RigL at 99 % for as many epochs as the dense recipe's wall time holds
DENSE_RUN, RIGL_RUN = "python train.py", "python train.py --sparse rigl --target 99"
STRUCTURED = [
    ("unit, one-shot", "15", "dense/unit-finetuned.csv", "one_shot_accuracy"),
    ("unit + fine-tuning", f"15 + {FINETUNE['epochs']}", "dense/unit-finetuned.csv", "accuracy"),
    ("l0-unit, learned ranking", "15", "l0-unit/learned.csv", "accuracy"),
]


def cell(values):
    if not values:
        return "–"
    mean, std = results.mean_and_std(values)
    if len(values) == 1:
        return f"{mean:.2f} (n=1)"
    return f"{mean:.2f} ± {std:.2f}" + (f" (n={len(values)})" if len(values) != len(SEEDS) else "")


def swept_row(name, epochs, path, column, ks, docs):
    """A row of accuracies at each k from an eval.py sweep: the mean ± std over the checkpoints it swept."""
    path = docs / "sparse" / path
    if not path.exists():
        return [name, epochs, *("–" for _ in ks)]
    rows = {row["k"]: row for row in results.read_rows(path)}
    line = [name, epochs]
    for k in ks:
        row = rows.get(k)
        if row is None:
            line.append("–")
            continue
        std = row.get(f"{column}_std")
        line.append(f"{row[column]:.2f}" + (f" ± {std:.2f}" if std is not None else " (n=1)"))
    return line


RECORDED = ("accuracy", "natural_sparsity", "natural_accuracy", "config", "sha256")


def record(checkpoint, runs):
    """The checkpoint's numbers and config, without its weights, to <runs>/<its name>.json: small enough to keep
    beside the tables they make."""
    saved = checkpoints.load(checkpoint)[1]
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / f"{Path(checkpoint).stem}.json"
    files.write_atomic(path, lambda f: f.write(json.dumps({k: saved[k] for k in RECORDED if k in saved},
                                                          indent=2).encode()))
    print(f"wrote {path}")


def load(path):
    return json.loads(path.read_text()) if path.exists() else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--ks", type=parse_ks, default="90,95,98,99,99.5,99.8", help="the sparsities compared, in percent")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where scripts/make.sh put the sweeps and times")
    parser.add_argument("--record", nargs="+", default=None, metavar="CHECKPOINT",
                        help="only write these checkpoints' records to <docs>/sparse/runs/")
    parser.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    parser.add_argument("--headline", default=None,
                        help="write the main rows at the two highest sparsities, as a sentence, to this file")
    parser.add_argument("--equal-time-epochs", action="store_true",
                        help="only print how many epochs of train.py --sparse rigl --target 99 fit in the dense "
                             "recipe's median wall time, from <docs>/times/train.csv and sparse.csv")
    args = parser.parse_args(argv)
    runs = args.docs / "sparse" / "runs"
    if args.equal_time_epochs:
        print(equal_time_epochs(args.docs))
        return
    if args.record:
        for checkpoint in args.record:
            record(checkpoint, runs)
        return
    if args.out or args.headline:
        files.check_outputs(files=[path for path in (args.out, args.headline) if path])

    header = ["method", "epochs", *(f"{k:g} %" for k in args.ks)]
    trained = [[name, "15", *(cell([c["accuracy"] for c in (load(runs / f"{method}{k:g}-seed{s}.json") for s in SEEDS)
                                     if c]) for k in args.ks)] for name, method in TRAINED]
    equal = [c for c in (load(runs / f"{EQUAL_TIME}-seed{s}.json") for s in SEEDS) if c]
    if equal:
        trained.append(["rigl in the dense recipe's wall time", f"{equal[0]['config']['epochs']}",
                        *(cell([c["accuracy"] for c in equal]) if k == 99 else "" for k in args.ks)])
    for folder, init in (("rigl-torch", "torch's dense init"), ("rigl-torch-fan-in", "the sparse fan-in init")):
        peer = [c for c in (load(args.docs / "sparse" / folder / f"seed{s}.json") for s in SEEDS) if c]
        if peer:
            hidden = statistics.mean(c["hidden_sparsity"] for c in peer)
            trained.append([f"rigl-torch, {init} (its first layer dense: {hidden:.1f} % of the hidden weights pruned)",
                            f"{peer[0]['config']['epochs']}",
                            *(cell([c["accuracy"] for c in peer]) if k == 99 else "" for k in args.ks)])
    unstructured = [swept_row(*row, args.ks, args.docs) for row in SWEPT[:4]] + trained + \
                   [swept_row(*row, args.ks, args.docs) for row in SWEPT[4:]]
    structured = [swept_row(*row, args.ks, args.docs) for row in STRUCTURED]

    natural = []
    for name, method in NATURAL:
        found = [c for c in (load(runs / f"{method}-seed{s}.json") for s in SEEDS) if c]
        if found:
            natural.append([name, cell([c["natural_sparsity"] for c in found]),
                            cell([c["natural_accuracy"] for c in found]), cell([c["accuracy"] for c in found])])
    dense = [c for c in (load(runs / f"seed{s}.json") for s in SEEDS) if c]
    times = wall_times(args.docs)

    text = "\n\n".join([
        f"Test accuracy (%) at each share of the hidden weights pruned; the dense recipe unpruned: "
        f"{cell([c['accuracy'] for c in dense])}.",
        results.markdown(header, unstructured, text_columns=(0, 1)),
        "Structure: whole units (rows) removed, the share of the hidden weights they hold as above.",
        results.markdown(header, structured, text_columns=(0, 1)),
        "What each method zeroes on its own (vd: log α ≥ 3; l0: the gates shut), the accuracy there, and the "
        "accuracy of the saved values, unthresholded:",
        results.markdown(["method", "natural sparsity %", "accuracy there %", "unthresholded %"], natural,
                         text_columns=(0,)),
        "Wall time of each training command, as docs/times/ recorded it: the median over its runs (range). It "
        "depends on the CPU and on what else shared the machine; the step costs below compare the methods in one "
        "process:",
        *(f"On {machine}:\n\n" + results.markdown(["command", "median", "range", "runs"], rows, text_columns=(0,))
          for machine, rows in times.items()),
    ])
    print(text)
    if args.out:
        files.write_atomic(args.out, lambda f: f.write((text + "\n").encode()))
    if args.headline:
        sentence = headline(unstructured, args.ks)
        files.write_atomic(args.headline, lambda f: f.write((sentence + "\n").encode()))


def headline(rows, ks):
    """The main rows' accuracy at the two highest sparsities, in two sentences."""
    by_name = {row[0]: row[2:] for row in rows}
    return " ".join(f"Test accuracy (%) with {k:g} % of the hidden weights pruned: " +
                    "; ".join(f"{label} {by_name[name][ks.index(k)]}" for name, label in HEADLINE.items()) + "."
                    for k in ks[-2:][::-1])


def times_of(path, name):
    """{machine: [seconds]} of the runs of command `name` in the times CSV at `path`."""
    found = {}
    if path.exists():
        with open(path, newline="") as f:
            for command, seconds, machine in csv.reader(f):
                if command == name:
                    found.setdefault(machine, []).append(float(seconds))
    return found


def equal_time_epochs(docs, epochs=15):
    """The epochs of RigL at 99 % that fit in the dense recipe's median wall time, both from the same machine,
    running as many at a time: its 15-epoch runs' median time scaled, start-up and all, so that it errs short."""
    dense, rigl = times_of(docs / "times" / "train.csv", DENSE_RUN), times_of(docs / "times" / "sparse.csv", RIGL_RUN)
    both = [machine for machine in rigl if machine in dense]
    if not both:
        raise utils.UserError(f"no machine has times of both `{DENSE_RUN}` ({docs}/times/train.csv) and `{RIGL_RUN}` "
                              f"({docs}/times/sparse.csv): run make.sh's train and sparse sections on this one")
    machine = both[-1]
    return max(epochs, int(epochs * statistics.median(dense[machine]) / statistics.median(rigl[machine])))


def wall_times(docs):
    """{machine: rows of the training commands' median wall times (range) on it}, from docs/times/sparse.csv:
    the runs of one queue, under the same load, the dense seeds among them."""
    runs = {machine: {DENSE_RUN: seconds}
            for machine, seconds in times_of(docs / "times" / "train.csv", DENSE_RUN).items()}
    path = docs / "times" / "sparse.csv"
    if path.exists():
        with open(path, newline="") as f:
            for name, seconds, machine in csv.reader(f):
                if name.startswith(("python train.py", "python benchmarks/peer_rigl.py")):
                    runs.setdefault(machine, {}).setdefault(name, []).append(float(seconds))
    return {machine: [[f"`{name}`", f"{statistics.median(s):.0f} s", f"{min(s):.0f}–{max(s):.0f} s", len(s)]
                      for name, s in by_name.items()] for machine, by_name in runs.items()}


if __name__ == "__main__":
    utils.run(main)
