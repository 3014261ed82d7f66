"""What a sweep writes and reads back: the console table, CSV and JSON, a TensorBoard run per curve (the plot:
plot.py).

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

import files

FORMAT = {"written_by": "eval.py", "format": 2}  # what marks a JSON file as one of eval.py's results

# The console table: (column, heading); the CSV holds every column (torch's CSR and COO, the compacted net's ms
# and ceiling, each time's IQR and far blocks).
TABLE = [("k", "k %"), ("sparsity", "sparsity %"), ("total_sparsity", "whole net %"),
         ("one_shot_accuracy", "one-shot accuracy %"), ("one_shot_accuracy_std", "±"),
         ("accuracy", "accuracy %"), ("accuracy_std", "±"),
         ("dense_ms", "dense ms"), ("sparse_ms", "sparse ms"), ("sparse_speedup", "sparse x"),
         ("flop_ceiling", "ceiling x"), ("compact_speedup", "compact x")]
LEGEND = ("dense: the fastest of torch's and numpy's products (named); sparse x = dense ms / sparse ms; ceiling x = "
          "the dense net's multiply-adds / the nonzero weights'; compact x: the net without its dead units, dense")


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
    """The console table of a sweep, a time with a block far from its median marked * (harness.time_paths)."""
    columns = [(c, heading) for c, heading in TABLE if c in rows[0]]
    return markdown([heading for _, heading in columns],
                    [[f"{row[c]:g}" if c == "k" else format_number(row[c]) + "*" * (row.get(far_blocks(c, row), 0) > 0)
                      + (f" {dense_by(row)}" if c == "dense_ms" else "") for c, _ in columns] for row in rows])


def dense_by(row):
    """Which product gave a row's dense time, the fastest of those timed."""
    return "numpy" if row.get("dense_numpy_fastest") else "torch"


def far_blocks(column, row):
    """The column counting the blocks far from a time's median: sparse_far_blocks for sparse_ms; dense_ms is the
    fastest dense, whose blocks are counted under its product (dense_torch_far_blocks, dense_numpy_far_blocks)."""
    if column == "dense_ms":
        return f"dense_{dense_by(row)}_far_blocks"
    return column[:-len("_ms")] + "_far_blocks" if column.endswith("_ms") else None


TIMED = ("_ms", "_speedup", "_far_blocks", "_gmacs", "_fastest")  # a timing's columns; the sparsity and ceilings are the same at every batch
PEER_COLUMNS = [("scipy_speedup", "scipy CSR x"), ("mkl_speedup", "MKL sparse x")]
RATE_COLUMNS = [("sparse_gmacs", "sparse GMAC/s"), ("dense_gmacs", "dense GMAC/s")]  # where a table has them


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
    columns = [*SPEED_COLUMNS[:-1], *((c, h) for c, h in PEER_COLUMNS if c + suffix in rows[0]), SPEED_COLUMNS[-1],
               *((c, h) for c, h in RATE_COLUMNS if c + suffix in rows[0])]
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
    """TensorBoard's x axis for k: the fraction of weights kept on a log scale, 1000 · log10(100 / (100 − k)), as a
    whole number (steps are): 0 at k = 0, 301 at 50 %, 1000 at 90 %, 2000 at 99 %, 2699 at 99.8 %. On a linear
    axis of k, 90 to 99.8 % would take the last tenth of the chart, where the methods part ways."""
    return round(1000 * math.log10(100 / (100 - k)))


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
                        if column != "k" and "_far_blocks" not in column:  # a count of noise, not a measurement
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
