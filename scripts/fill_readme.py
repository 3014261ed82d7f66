"""Write the tables of README.md and of the pages in docs/ from what scripts/make.sh saved in docs/, so that
no number there is typed by hand.

A page marks each generated part with a pair of comments; everything between them is replaced:

    <!-- generated: accuracy -->
    ...
    <!-- end -->

A name is one of TABLES below, or file:<path>, which takes that file as it is.

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
import results  # noqa: E402
import files  # noqa: E402
import utils  # noqa: E402
from model import SIZES  # noqa: E402
from prune import METHODS  # noqa: E402

SECTIONS = ["train", "sweeps", "retrain", "small-dense", "speed", "benchmarks", "sparse", "tests", "readme"]  # make.sh's
TIMED_SECTIONS = ["train", "sweeps", "retrain", "small-dense", "sparse", "tests"]  # those that time their commands
BLOCK = re.compile(r"(<!-- generated: ([\w:./-]+) -->\n).*?(<!-- end -->)", re.S)


def read(name):
    """The rows of docs/results/<name>.csv by k."""
    path = DOCS / "results" / "dense" / f"{name}.csv"
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
    info = json.loads((DOCS / "results" / "dense" / f"{name}.json").read_text())
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


def timing_rows(method=None):
    """The rows of docs/speed/timing.csv, numbers as floats: those of `method`, or all."""
    with open(DOCS / "speed" / "timing.csv", newline="") as f:
        return [{c: v if c == "method" else float(v) for c, v in row.items()}
                for row in csv.DictReader(f) if method in (None, row["method"])]


def speed(method):
    """Median speedups over dense (min–max over the timing runs) for one method, against their ceilings."""
    return results.speed_table(timing_rows(method))


def timing_info():
    return json.loads((DOCS / "speed" / "timing.json").read_text())


def first_batch(info):
    batch = info["timing_batch"]
    return batch[0] if isinstance(batch, list) else batch


def baseline(rows, suffix=""):
    """What the speedups in `rows` are against, from what was timed: the faster of torch's and numpy's dense, or
    torch's where it alone was."""
    if f"dense_numpy_ms{suffix}" not in rows[0]:
        return "speedups against torch's dense (MKL on the CPU)"
    numpy = sum(row[f"dense_numpy_fastest{suffix}"] >= 0.5 for row in rows)
    return f"speedups against the faster of torch's and numpy's dense (numpy's in {numpy} of {len(rows)} rows)"


def speed_setup():
    """The machine the speed tables come from, their dense baseline, and how long each timed sweep took there."""
    info = timing_info()
    seconds = info["run_seconds"]
    return (f"Measured on: {info['machine']}, {info['threads']} threads, batch {first_batch(info)}, "
            f"{baseline(timing_rows())}; "
            f"`eval.py --sparsity {info['sparsity']}` ran {len(seconds)} times, "
            f"{duration(statistics.median(seconds))} each (median; {duration(min(seconds))}–{duration(max(seconds))}).")


def speed_efficiency():
    """Multiply-adds per second of dense and of the sparse path (only the nonzero weights it runs, those of the
    compacted net), and the sparse path's share of its ceiling, at the sparsities where pruning pays most."""
    dense_macs = sum(a * b for a, b in zip(SIZES, SIZES[1:])) * first_batch(timing_info())
    lines = []
    for method in ("weight", "unit"):
        for row in timing_rows(method):
            if row["k"] >= 90:
                sparse_macs = dense_macs / row["compact_flop_ceiling"]
                lines.append([method, f"{row['k']:g}", f"{dense_macs / row['dense_ms'] / 1e6:.0f}",
                              f"{sparse_macs / row['sparse_ms'] / 1e6:.0f}", f"{row['sparse_speedup']:.2f}",
                              f"{row['compact_flop_ceiling']:.1f}",
                              f"{100 * row['sparse_speedup'] / row['compact_flop_ceiling']:.0f} %"])
    return results.markdown(["method", "k %", "dense G multiply-adds/s", "sparse G multiply-adds/s", "sparse x",
                             "ceiling x (compacted)", "share of the ceiling"], lines, text_columns=(0,))


# The paths a user might take instead of the sparse kernel, with their columns' headings.
LIBRARIES = {"scipy": "scipy CSR x", "mkl": "MKL sparse x", "csr": "torch CSR x"}


def speed_batches():
    """A table for each CPU that make.sh timed at several batch sizes (docs/speed/batches/<cpu>/)."""
    folders = sorted(p.parent for p in (DOCS / "speed" / "batches").glob("*/timing.json"))
    if not folders:
        raise ValueError("no timings by batch in docs/speed/batches/")
    return "\n\n".join(batch_table(folder) for folder in folders)


def batch_table(folder):
    """For each batch size, the sparse path and the libraries a user might try, as speedups over dense (median,
    min–max over the runs), and the sparse path's share of its (compacted) ceiling, on the CPU of `folder`."""
    info = json.loads((folder / "timing.json").read_text())
    with open(folder / "timing.csv", newline="") as f:
        rows = [{c: v if c == "method" else float(v) for c, v in row.items()} for row in csv.DictReader(f)]
    batches = info["timing_batch"]
    paths = [("sparse", "sparse x"), *LIBRARIES.items(), ("compact", "compact x")]
    lines, ahead = [], {}  # ahead: method -> the sparse path over the best peer, in each row
    for batch in sorted(batches):
        suffix = results.batch_column("", batch, batches)
        for row in rows:
            peers = [row[c] for c in (f"{path}_speedup{suffix}" for path in LIBRARIES) if c in row]
            if peers:
                ahead.setdefault(row["method"], []).append(row[f"sparse_speedup{suffix}"] / max(peers))
            cells = [f"{row[c]:.2f} ({row[c + '_min']:.2f}–{row[c + '_max']:.2f})" if c in row else "–"
                     for c in (f"{path}_speedup{suffix}" for path, _ in paths)]
            lines.append([batch, row["method"], f"{row['k']:g}", *cells, f"{row['compact_flop_ceiling']:.1f}",
                          f"{100 * row['sparse_speedup' + suffix] / row['compact_flop_ceiling']:.0f} %",
                          f"{row['dense_ms' + suffix]:.3g}"])
    code = f", code at commit {info['code']}" if "code" in info else ""
    setup = (f"Measured on: **{info['machine']}**, {info['threads']} threads{code}; `{info['command']}`: "
             f"{len(info['runs'])} runs of eval.py, each timing every path in one process; {baseline(rows)}. Median "
             f"speedup over dense (min–max):")
    versus = "; ".join(f"{method} pruning {min(r):.1f}–{max(r):.1f}x" for method, r in ahead.items())
    table = results.markdown(["batch", "method", "k %", *(heading for _, heading in paths), "ceiling x (compacted)",
                              "share of the ceiling", "dense ms"], lines, text_columns=(1,))
    return f"{setup}\n\n{table}\n\nThe sparse path over the fastest of the libraries, row by row: {versus}."


def times():
    """Each command's wall time, one table per machine it ran on: the last run of each section there (make.sh)."""
    runs = {}  # machine -> command -> its seconds
    for section in TIMED_SECTIONS:
        path = DOCS / "times" / f"{section}.csv"
        if path.exists():  # a section not run yet is left out
            with open(path, newline="") as f:
                for name, seconds, machine in csv.reader(f):
                    runs.setdefault(machine, {}).setdefault(name, []).append(float(seconds))
    return "\n\n".join(f"On {machine}:\n\n{time_table(by_command)}" for machine, by_command in runs.items())


def sections():
    """Each scripts/make.sh section's wall time, one table per machine (its CPU and JOBS), and the sum of them all where
    every section has run there but readme, whose time is written after it has made these tables."""
    by_machine = {}
    path = DOCS / "times" / "sections.csv"
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


def duration(seconds):
    """Seconds, from 100 s minutes and seconds, from an hour hours and minutes: rounded before they are split, so that
    539.5 s is 9 min 00 s and not 8 min 60 s."""
    seconds = round(seconds)
    if seconds >= 3600:
        minutes = round(seconds / 60)
        return f"{minutes // 60} h {minutes % 60:02d} min"
    return f"{seconds} s" if seconds < 100 else f"{seconds // 60} min {seconds % 60:02d} s"


TABLES = {"accuracy": accuracy, "findings": findings, "global-layers": global_layers, "finetuned": finetuned,
          "retrained": retrained, "times": times, "sections": sections, "speed-setup": speed_setup,
          "speed-efficiency": speed_efficiency, "speed-batches": speed_batches,
          **{f"speed-{method}": (lambda method=method: speed(method)) for method in METHODS}}


def generate(name):
    try:
        if name.startswith("file:"):
            return (DOCS.parent / name[len("file:"):]).read_text().strip()
        return TABLES[name]()
    except (OSError, ValueError, KeyError) as e:  # a file of docs/ missing, or from an older make.sh
        raise utils.UserError(f"cannot make the table {name!r} ({e}): run scripts/make.sh")


PAGES = [DOCS.parent / "README.md", *(DOCS / name for name in ("results.md", "sparse-training.md", "speed.md"))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=Path, nargs="+", default=PAGES, help="the pages to fill (default: README.md "
                        "and docs/results.md, sparse-training.md and speed.md)")
    args = parser.parse_args(argv)

    filled = {}
    for page in args.pages:  # every page made before any is written: a missing table leaves all as they were
        try:
            text = page.read_text()
        except OSError as e:
            raise utils.UserError(f"cannot read {page} ({e.strerror})")
        unknown = [name for _, name, _ in BLOCK.findall(text) if name not in TABLES and not name.startswith("file:")]
        if unknown:
            raise utils.UserError(f"{page} asks for a table this script does not make: {unknown[0]}")
        filled[page] = BLOCK.sub(lambda m: m[1] + generate(m[2]) + "\n" + m[3], text)
    for page, text in filled.items():
        files.write_atomic(page, lambda f, text=text: f.write(text.encode()))


if __name__ == "__main__":
    utils.run(main)
