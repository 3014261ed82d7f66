"""Write the tables of README.md and of the pages in docs/ from what scripts/make.sh saved in docs/, so that
no number there is typed by hand.

A page marks each generated part with a pair of comments; everything between them is replaced:

    <!-- generated: accuracy -->
    ...
    <!-- end -->

A name is one of TABLES below, or file:<path>, which takes that file as it is. A table of results reads those of
MNIST, in docs/mnist/; name@fashion-mnist reads docs/fashion-mnist/ instead.

    python scripts/fill_readme.py
"""
import argparse
import csv
import json
import re
import statistics
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
sys.path.insert(0, str(DOCS.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # speed_tables, beside it
import results  # noqa: E402
import files  # noqa: E402
import utils  # noqa: E402
from speed_tables import (duration, first_batch, speed, speed_batches, speed_efficiency, speed_setup,  # noqa: E402
                          timing_info, timing_rows)
from prune import METHODS  # noqa: E402

SECTIONS = ["choices", "train", "sweeps", "retrain", "lenet", "speed", "rewind", "small-dense", "benchmarks", "sparse",
            "sparse-speed", "tests", "readme"]  # make.sh's
# those that time their commands
TIMED_SECTIONS = ["choices", "train", "sweeps", "retrain", "lenet", "rewind", "small-dense", "sparse", "tests"]
BLOCK = re.compile(r"(<!-- generated: ([\w:./@-]+) -->\n).*?(<!-- end -->)", re.S)
DATASETS = ["mnist", "fashion-mnist"]
DATA = DOCS / DATASETS[0]  # the data set whose results the tables read: generate() sets it for each


def read(name):
    """The rows of docs/<data set>/results/dense/<name>.csv by k."""
    path = DATA / "results" / "dense" / f"{name}.csv"
    try:
        return {row["k"]: row for row in results.read_rows(path)}
    except (OSError, ValueError) as e:
        raise utils.UserError(f"cannot read {path} ({e}): run scripts/make.sh")


def mean_std(row, column="accuracy"):
    std = row.get(f"{column}_std")
    return f"{row[column]:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def accuracy():
    """Test accuracy of every method against k: mean ± standard deviation over the checkpoints."""
    curves = {method: read(method) for method in METHODS}
    ks = sorted(set.intersection(*(set(rows) for rows in curves.values())))
    return results.markdown(["k %", *METHODS], [[k, *(mean_std(curves[m][k]) for m in METHODS)] for k in ks])


def per_checkpoint(name, k):
    """Each checkpoint's accuracy at k, in the order of the checkpoints."""
    info = json.loads((DATA / "results" / "dense" / f"{name}.json").read_text())
    return info["accuracy_per_checkpoint"][str(k)]


def paired(a, b):
    """mean ± std over the checkpoints of a - b, each pair from one checkpoint."""
    mean, std = results.mean_and_std([x - y for x, y in zip(a, b)])
    return f"{mean:+.2f} ± {std:.2f}"


def findings():
    """The comparisons the README draws, each paired within a seed."""
    unpruned = per_checkpoint("weight", 0)
    lines = [f"- unpruned: {mean_std(read('weight')[0])} %;"]
    for k in (90, 95, 97, 99):
        weight, glob = per_checkpoint("weight", k), per_checkpoint("global", k)
        lines.append(f"- at {k} %: per-layer weight pruning {paired(weight, unpruned)} points against unpruned, "
                     f"global {paired(glob, unpruned)}; global against per-layer {paired(glob, weight)};")
    lines.append(f"- random pruning at 90 % against weight pruning at 90 %: "
                 f"{paired(per_checkpoint('random', 90), per_checkpoint('weight', 90))} points.")
    return "\n".join(lines)


def quickstart():
    """What `python train.py` should print: the unpruned accuracy over the seeds, and how long training took here."""
    text = f"the unpruned net's test accuracy, {mean_std(read('weight')[0])} % over three seeds"
    took = "; ".join(f"{duration(statistics.median(s))} ({duration(min(s))}–{duration(max(s))}) on {machine}"
                     for machine, by_command in read_times(["train"]).items() for s in by_command.values())
    return f"Expect {text}. `bash scripts/make.sh` trained them in {took} (median, range)."


# The exercise this repo answers: its MNIST numbers (Adam, batch 1000), on a CPU it does not name.
EXERCISE = {"unpruned": 98.5, "weight 80": 97.8, "dense ms": 7.9, "sparse ms": 1.85}


def exercise():
    """The exercise's numbers beside this repo's at the same k and batch."""
    weight = read("weight")
    row = next(row for row in timing_rows("weight") if row["k"] == 90)
    info = timing_info()
    batch, machine = first_batch(info), info["machine"]
    dense = "numpy's" if row.get("dense_numpy_fastest", 0) >= 0.5 else "torch's"
    return results.markdown(["", "the exercise", "this repo"], text_columns=(0,), rows=[
        ["unpruned test accuracy, %", EXERCISE["unpruned"], mean_std(weight[0])],
        ["weight pruning at 80 %, test accuracy, %", EXERCISE["weight 80"], mean_std(weight[80])],
        [f"dense forward, batch {batch}, ms", EXERCISE["dense ms"],
         f"{spread(row, 'dense_ms', '.2f')}, {dense} on {machine}"],
        [f"sparse forward at 90 %, batch {batch}, ms", EXERCISE["sparse ms"], spread(row, "sparse_ms", ".3f")],
        ["speedup at 90 %", f"{EXERCISE['dense ms'] / EXERCISE['sparse ms']:.1f}x",
         f"{spread(row, 'sparse_speedup', '.1f', 'x')}, the ceiling {row['flop_ceiling']:.1f}x"]])


def spread(row, column, spec, unit=""):
    """A timing's median over the runs, and their range."""
    return f"{row[column]:{spec}}{unit} ({row[column + '_min']:{spec}}–{row[column + '_max']:{spec}})"


def global_layers():
    """The sparsity global pruning gives each hidden layer, against k (mean over the checkpoints)."""
    return results.markdown(["k %", "layer 1", "layer 2", "layer 3", "layer 4"],
                            [[k, *(f"{row[f'sparsity_layer{i}']:.1f}" for i in range(1, 5))]
                             for k, row in read("global").items() if k])


def finetuned():
    """One-shot → fine-tuned accuracy, for every method."""
    curves = {method: read(f"{method}-finetuned") for method in METHODS}
    ks = sorted(set.intersection(*(set(rows) for rows in curves.values())))
    return results.markdown(["k %", *METHODS], [[k, *(
        f"{mean_std(curves[m][k], 'one_shot_accuracy')} → {mean_std(curves[m][k])}" for m in METHODS)] for k in ks])


def retrained():
    """Per method and k: one-shot, fine-tuned, rewound and from-scratch accuracy."""
    lines = []
    for method in ("weight", "unit"):
        curves = {variant: read(f"{method}-{variant}") for variant in ("finetuned", "rewind", "scratch")}
        for k in sorted(curves["rewind"]):
            one_shot = mean_std(curves["rewind"][k], "one_shot_accuracy")
            lines.append([method, k, one_shot, *(mean_std(curves[v][k]) if k in curves[v] else "–" for v in curves)])
    return results.markdown(["method", "k %", "one-shot", "fine-tuned", "rewind", "scratch"], lines, text_columns=(0,))


def times():
    """Each command's wall time, one table per machine it ran on: the last run of each section there (make.sh)."""
    return "\n\n".join(f"On {machine}:\n\n{time_table(by_command)}"
                       for machine, by_command in read_times(TIMED_SECTIONS).items())


def read_times(sections):
    """{machine: {command: its seconds in each run}} from make.sh's times of `sections`; one not run yet is left out."""
    runs = {}
    for section in sections:
        path = DATA / "times" / f"{section}.csv"
        if path.exists():
            with open(path, newline="") as f:
                for name, seconds, machine in csv.reader(f):
                    runs.setdefault(machine, {}).setdefault(name, []).append(float(seconds))
    return runs


def sections():
    """Each scripts/make.sh section's wall time, one table per machine (its CPU and JOBS), and the sum of them all where
    every section has run there but readme, whose time is written after it has made these tables."""
    by_machine = {}
    path = DATA / "times" / "sections.csv"
    if path.exists():
        with open(path, newline="") as f:
            for section, seconds, machine in csv.reader(f):
                by_machine.setdefault(machine, {})[section] = float(seconds)
    tables = []
    for machine, seconds in by_machine.items():
        rows = [[f"`bash scripts/make.sh {section}`", duration(seconds[section])] for section in SECTIONS
                if section in seconds]
        if all(section in seconds for section in SECTIONS[:-1]):
            rows.append(["all of them", duration(sum(seconds.values()))])
        tables.append(f"On {machine}:\n\n" + results.markdown(["section", "wall time"], rows, text_columns=(0,)))
    return "\n\n".join(tables) or "No section has been timed yet: `bash scripts/make.sh` times each."


def time_table(by_command):
    """The median of each command's runs, and their range."""
    return results.markdown(["command", "median", "range", "runs"], text_columns=(0,), rows=[
        [command(name), duration(statistics.median(s)), f"{duration(min(s))}–{duration(max(s))}" if len(s) > 1 else "",
         len(s)]
        for name, s in by_command.items()])


def command(name):
    """`the command` (a note), from "the command (a note)"."""
    shell, _, note = name.partition(" (")
    return f"`{shell}`" + (f" ({note}" if note else "")


TABLES = {"accuracy": accuracy, "findings": findings, "quickstart": quickstart, "exercise": exercise,
          "global-layers": global_layers, "finetuned": finetuned, "retrained": retrained, "times": times,
          "sections": sections, "speed-setup": speed_setup,
          "speed-efficiency": speed_efficiency, "speed-batches": speed_batches,
          **{f"speed-{method}": (lambda method=method: speed(method)) for method in METHODS}}


def generate(block):
    global DATA
    name, _, dataset = block.partition("@")
    DATA = DOCS / (dataset or DATASETS[0])
    try:
        if name.startswith("file:"):
            return (DOCS.parent / name[len("file:"):]).read_text().strip()
        return TABLES[name]()
    except (OSError, ValueError, KeyError) as e:  # a file of docs/ missing, or from an older make.sh
        raise utils.UserError(f"cannot make the table {block!r} ({e}): run scripts/make.sh")


def known(block):
    name, at, dataset = block.partition("@")
    return (name in TABLES or name.startswith("file:") and not at) and (not at or dataset in DATASETS)


PAGES = [DOCS.parent / "README.md", *(DOCS / name for name in ("results.md", "sparse-training.md", "speed.md",
                                                                "fashion-mnist.md", "lenet.md"))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=Path, nargs="+", default=PAGES, help="the pages to fill (default: README.md "
                        "and docs/results.md, sparse-training.md, speed.md, fashion-mnist.md and lenet.md)")
    args = parser.parse_args(argv)

    filled = {}
    for page in args.pages:  # every page made before any is written: a missing table leaves all as they were
        try:
            text = page.read_text()
        except OSError as e:
            raise utils.UserError(f"cannot read {page} ({e.strerror})")
        unknown = [block for _, block, _ in BLOCK.findall(text) if not known(block)]
        if unknown:
            raise utils.UserError(f"{page} asks for a table this script does not make: {unknown[0]}")
        filled[page] = BLOCK.sub(lambda m: m[1] + generate(m[2]) + "\n" + m[3], text)
    for page, text in filled.items():
        files.write_atomic(page, lambda f, text=text: f.write(text.encode()))


if __name__ == "__main__":
    utils.run(main)
