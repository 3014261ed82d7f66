"""What a sweep writes: the console table, CSV and JSON, a TensorBoard run per method, and the plot.

Each file is written whole or not at all, so Ctrl-C or a crash mid-sweep keeps the last good one.
"""
import csv
import io
import json
import os
import shutil
from pathlib import Path

import utils

# The console table: (column, heading); the CSV holds every column.
TABLE = [("k", "k %"), ("sparsity", "sparsity %"), ("total_sparsity", "whole net %"),
         ("one_shot_accuracy", "one-shot accuracy %"), ("accuracy", "accuracy %"),
         ("dense_ms", "dense ms"), ("sparse_ms", "sparse ms"), ("sparse_speedup", "sparse x"),
         ("flop_ceiling", "ceiling x"), ("csr_speedup", "torch CSR x"), ("coo_speedup", "torch COO x"),
         ("compact_ms", "compact ms"), ("compact_speedup", "compact x"), ("compact_flop_ceiling", "compact ceiling x")]


def markdown_table(rows):
    columns = [(c, heading) for c, heading in TABLE if c in rows[0]]
    return markdown([heading for _, heading in columns], [[format_number(row[c]) for c, _ in columns] for row in rows])


def markdown(header, rows):
    """A Markdown table, every column aligned right."""
    lines = [header, ["---:"] * len(header), *rows]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)


def format_number(value):
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 1000 else f"{value:.0f}"


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
    """Accuracy against k for every method that has results; beside it, the speedups if they were timed."""
    import matplotlib
    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    results = {}
    for csv_path in sorted(results_dir.glob("*.csv")):
        with open(csv_path) as f:
            results[csv_path.stem] = list(csv.DictReader(f))
    timed = {method: rows for method, rows in results.items() if "sparse_speedup" in rows[0]}
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(12 if timed else 7, 4.5), squeeze=False)
    accuracy_ax = axes[0, 0]
    # One colour per method in both panels; its fine-tuned curve dashed.
    bases = sorted({name.removesuffix("-finetuned") for name in results})
    color = {name: f"C{bases.index(name.removesuffix('-finetuned'))}" for name in results}
    for name, rows in results.items():
        accuracy_ax.plot([int(r["k"]) for r in rows], [float(r["accuracy"]) for r in rows], marker="o",
                         linestyle="--" if name.endswith("finetuned") else "-", color=color[name], label=name)
    accuracy_ax.set(xlabel="k: % of weights or units removed from each hidden layer", ylabel="test accuracy (%)",
                    title=f"Pruning the MLP on {dataset}")
    if timed:
        speed_ax = axes[0, 1]
        for method, rows in timed.items():
            ks = [int(r["k"]) for r in rows]
            for column, style in (("sparse_speedup", "-"), ("compact_speedup", "--")):
                if column in rows[0]:
                    label = f"{method}, {column.split('_')[0]}"
                    speed_ax.plot(ks, [float(r[column]) for r in rows], style, marker="o", color=color[method],
                                  label=label)
        rows = next(iter(timed.values()))
        speed_ax.plot([int(r["k"]) for r in rows], [float(r["flop_ceiling"]) for r in rows], ":", color="grey",
                      label="FLOP ceiling (nonzeros)")
        speed_ax.axhline(1, color="black", linewidth=0.8)
        speed_ax.set(yscale="log", xlabel="k (%)", ylabel="speedup over dense (x)",
                     title="Forward pass of the pruned net against dense")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    utils.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
