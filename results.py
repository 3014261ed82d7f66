"""What a sweep writes and reads back: the console table, CSV and JSON, a TensorBoard run per curve, the plot.

Each file is written whole or not at all, so Ctrl-C or a crash mid-sweep keeps the last good one.
"""
import contextlib
import csv
import errno
import io
import json
import math
import os
import shutil
import statistics
import textwrap

import files

FORMAT = {"written_by": "eval.py", "format": 2}  # what marks a JSON file as one of eval.py's results
VARIANTS = {"one-shot": "-", "finetuned": "--", "rewind": "-.", "scratch": ":"}  # a curve's line style in the plot

# The console table: (column, heading); the CSV holds every column.
TABLE = [("k", "k %"), ("sparsity", "sparsity %"), ("total_sparsity", "whole net %"),
         ("one_shot_accuracy", "one-shot accuracy %"), ("one_shot_accuracy_std", "±"),
         ("accuracy", "accuracy %"), ("accuracy_std", "±"),
         ("dense_ms", "dense ms"), ("sparse_ms", "sparse ms"), ("sparse_speedup", "sparse x"),
         ("flop_ceiling", "ceiling x"), ("csr_speedup", "torch CSR x"), ("coo_speedup", "torch COO x"),
         ("compact_ms", "compact ms"), ("compact_speedup", "compact x"), ("compact_flop_ceiling", "compact ceiling x")]


def batch_column(name, batch, batches):
    """A timing's column: `name` for the first of eval.py's --timing-batch sizes, `name`_batch<size> for the others."""
    return name if batch == batches[0] else f"{name}_batch{batch}"


def mean_and_std(values):
    """The mean and the sample standard deviation (0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def spread(column, values):
    """{column: the mean of values, column_std: their standard deviation}; one value has none."""
    mean, std = mean_and_std(values)
    return {column: mean, f"{column}_std": std} if len(values) > 1 else {column: mean}


def mean_of(dicts):
    """The mean of each entry over dicts with the same keys."""
    return {key: statistics.mean(d[key] for d in dicts) for key in dicts[0]}


def markdown_table(rows):
    columns = [(c, heading) for c, heading in TABLE if c in rows[0]]
    return markdown([heading for _, heading in columns],
                    [[f"{row[c]:g}" if c == "k" else format_number(row[c]) for c, _ in columns] for row in rows])


TIMED = ("_ms", "_speedup")  # the columns of a timing; the sparsity and the ceilings are the same at every batch
PEER_COLUMNS = [("scipy_speedup", "scipy CSR x"), ("mkl_speedup", "MKL sparse x")]


def markdown(header, rows, text_columns=()):
    """A Markdown table, its columns aligned right but those named in text_columns (by index)."""
    lines = [header, ["---" if i in text_columns else "---:" for i in range(len(header))], *rows]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)


# A speed table, from rows where a timed column comes with <column>_min and <column>_max.
SPEED_COLUMNS = [("sparse_speedup", "sparse x"), ("flop_ceiling", "ceiling x"), ("csr_speedup", "torch CSR x"),
                 ("coo_speedup", "torch COO x"), ("compact_speedup", "compact x"),
                 ("compact_flop_ceiling", "compact ceiling x"), ("dense_ms", "dense ms")]


def speed_table(rows, suffix=""):
    """Per k, each timed column as its median (min–max), the ceilings as they are; a timed column of another
    batch than the first is <column><suffix> (batch_column). The peers' columns where they were timed."""
    def cell(row, column):
        timed = column + suffix if column.endswith(TIMED) else column
        if f"{timed}_min" not in row:
            return f"{row[timed]:.1f}" if timed in row else "–"
        return f"{row[timed]:.2f} ({row[timed + '_min']:.2f}–{row[timed + '_max']:.2f})"
    columns = [*SPEED_COLUMNS[:-1], *((c, h) for c, h in PEER_COLUMNS if c + suffix in rows[0]), SPEED_COLUMNS[-1]]
    return markdown(["k %", *(heading for _, heading in columns)],
                    [[f"{row['k']:g}", *(cell(row, c) for c, _ in columns)] for row in rows])


def format_number(value):
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 1000 else f"{value:.0f}"


def write_results(results_dir, name, rows, info):
    """<name>.csv (a row per k) and <name>.json (what made it: `info`, marked as eval.py's)."""
    write_csv(results_dir / f"{name}.csv", rows)
    files.write_atomic(results_dir / f"{name}.json",
                       lambda f: f.write(json.dumps({**FORMAT, "name": name, **info}, indent=2).encode()))


def write_csv(path, rows):
    """Rows of the same columns as a CSV file, numbers to 6 decimals (a timing of 0.02 ms keeps 4 digits)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows([{c: round(v, 6) if isinstance(v, float) else v for c, v in row.items()} for row in rows])
    files.write_atomic(path, lambda f: f.write(text.getvalue().encode()))


def read_results(results_dir, checkpoints):
    """{name: (info, rows)} for the results in results_dir that eval.py made from exactly `checkpoints`
    (the files' sha256), and the names of the other files there, which are left as they are."""
    found, others = {}, []
    for path in sorted(results_dir.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix not in (".json", ".csv"):
            continue  # temporary files of a write in progress, folders, notes of the user's own
        if path.suffix == ".csv" and path.with_suffix(".json").is_file():
            continue  # read with its JSON
        try:
            info = json.loads(path.read_text()) if path.suffix == ".json" else None
            rows = read_rows(path.with_suffix(".csv"))
            if info is None or {k: info.get(k) for k in FORMAT} != FORMAT or sorted(info["sha256"]) != sorted(checkpoints):
                raise ValueError
            found[path.stem] = info, rows
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            others += [p.name for p in (path, path.with_suffix(".csv")) if p.is_file() and p.name not in others]
    return found, others


def as_k(text):
    """A sparsity k as eval.py keeps it: an int where it is whole (95), a float where not (99.5)."""
    k = float(text)
    return int(k) if k.is_integer() else k


def read_rows(path):
    """The rows of a results CSV as numbers, k as as_k gives it; ValueError if it is not one."""
    with open(path, newline="") as f:
        rows = [{column: as_k(value) if column == "k" else float(value) for column, value in row.items()}
                for row in csv.DictReader(f)]
    if not rows or not {"k", "sparsity", "accuracy"} <= set(rows[0]) or not all(map(math.isfinite, rows[0].values())):
        raise ValueError(f"{path} is not a results table")
    return rows


def tensorboard_tag(column):
    """'accuracy' is the one tag at the top, so that every run overlays in TensorBoard's first chart."""
    if column == "accuracy":
        return column
    group = ("sparsity" if "sparsity" in column else "one_shot" if column.startswith("one_shot") else
             "seeds" if column.startswith("accuracy") else "speed")
    return f"{group}/{column}"


def tensorboard_step(k):
    """TensorBoard's steps are whole numbers, so k goes in tenths of a percent: 950 is 95 %, 995 is 99.5 %."""
    return round(10 * k)


def write_tensorboard(run_dir, rows):
    """Replace the TensorBoard run in `run_dir` by one point per k and column, so a re-run does not stack.

    The run is written beside it and swapped in whole. Two sweeps swapping the same run at once each
    retry until theirs is in place, so the last one's run stays, whole.
    """
    from torch.utils.tensorboard import SummaryWriter  # slow to import; only needed here

    new = run_dir.with_name(f".{run_dir.name}.{os.getpid()}.new")
    olds = []
    try:
        with files.writing(run_dir):
            with SummaryWriter(new) as writer:
                for row in rows:
                    for column, value in row.items():
                        if column != "k":
                            writer.add_scalar(tensorboard_tag(column), value, tensorboard_step(row["k"]))
            while new.exists():
                olds.append(run_dir.with_name(f".{run_dir.name}.{os.getpid()}.old{len(olds)}"))
                with contextlib.suppress(FileNotFoundError):  # none yet, or another sweep moved it
                    run_dir.rename(olds[-1])
                try:
                    new.rename(run_dir)
                except OSError as e:  # another sweep's run came in between: once more
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
    finally:
        for leftover in (new, *olds):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:  # a file someone had put where the run goes
                leftover.unlink(missing_ok=True)


# The plot. x is the percentage of the hidden layers' weights kept, on a log scale, as pruning papers draw
# it: the range from 90 to 99 % sparsity, where methods part ways, gets as much room as 0 to 90 %.
KEPT_TICKS = [100, 50, 20, 10, 5, 3, 2, 1, 0.5, 0.2, 0.1]
FEWEST_KEPT = 0.05  # where 100 % sparsity is drawn: a log axis cannot show 0


def percent_kept(rows):
    return [max(100 - row["sparsity"], FEWEST_KEPT) for row in rows]


def plot_accuracy(ax, results, unpruned):
    """Mean test accuracy against the weights kept, a band of ± one standard deviation over checkpoints."""
    colors = {method: f"C{i}" for i, method in enumerate(sorted({info["method"] for info, _ in results.values()}))}
    for name, (info, rows) in sorted(results.items()):
        kept, mean = percent_kept(rows), [row["accuracy"] for row in rows]
        std = [row.get("accuracy_std", 0.0) for row in rows]
        color = colors[info["method"]]
        ax.plot(kept, mean, VARIANTS.get(info.get("variant"), "-"), marker="o", markersize=3, color=color, label=name)
        ax.fill_between(kept, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=color,
                        alpha=0.2, linewidth=0)
    ax.axhline(unpruned, color="black", linewidth=0.8, linestyle=":", label=f"unpruned, {unpruned:.2f} %")
    several = any("accuracy_std" in row for _, rows in results.values() for row in rows)
    ax.set(ylabel="test accuracy (%)",
           title="Accuracy: mean, band ± 1 std over checkpoints" if several else "Accuracy of one checkpoint")


def plot_speed(ax, timed):
    """Speedup over dense of the sparse path and the compacted net, each against its own FLOP ceiling.

    timed: {method: rows}; where rows have <column>_min and <column>_max, they are drawn as error bars.
    """
    colors = {method: f"C{i}" for i, method in enumerate(sorted(timed))}
    for method, rows in sorted(timed.items()):
        kept = percent_kept(rows)
        for column, style, marker, label in (("sparse_speedup", "-", "o", "sparse"),
                                             ("compact_speedup", "--", "s", "compact")):
            values = [row[column] for row in rows]
            spread = None
            if f"{column}_min" in rows[0]:
                spread = [[v - row[f"{column}_min"] for v, row in zip(values, rows)],
                          [row[f"{column}_max"] - v for v, row in zip(values, rows)]]
            ax.errorbar(kept, values, yerr=spread, fmt=style, marker=marker, markersize=3, capsize=2,
                        color=colors[method], label=f"{method}, {label}")
        compact_ceiling = [row["compact_flop_ceiling"] for row in rows]
        if any(c > 1.1 * row["flop_ceiling"] for c, row in zip(compact_ceiling, rows)):  # else it hides under the grey one
            ax.plot(kept, compact_ceiling, ":", color=colors[method], linewidth=1, label=f"{method}, compact ceiling")
    rows = next(iter(timed.values()))
    ax.plot(percent_kept(rows), [row["flop_ceiling"] for row in rows], ":", color="grey", linewidth=2,
            label="ceiling of the nonzeros")
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set(yscale="log", ylabel="speedup over dense (x)", title="Forward pass against dense")


def draw_plot(path, results, unpruned, note, timed=None):
    """Accuracy against the weights kept for every curve in `results`; beside it the speedups, if timed."""
    import matplotlib
    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    panels = [panel for panel in (results and "accuracy", timed and "speed") if panel]
    curves = [rows for _, rows in results.values()] + list((timed or {}).values())
    least_kept = min(min(percent_kept(rows)) for rows in curves) if curves else 1
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5.5), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        if panel == "accuracy":
            plot_accuracy(ax, results, unpruned)
        else:
            plot_speed(ax, timed)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(KEPT_TICKS))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t}" for t in KEPT_TICKS])
        ax.set_xlim(110, min(0.8, 0.8 * least_kept))  # pruning runs left to right, as far as the curves go
        ax.set_xlabel("hidden-layer weights kept (%, log scale)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, handlelength=4)  # long enough to tell a dashed line from a solid one
    fig.suptitle(textwrap.fill(note, 95 * len(panels)), fontsize=9)  # 95 characters of 9 pt fit 7 inches
    fig.tight_layout()
    files.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
