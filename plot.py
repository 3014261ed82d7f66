"""Every net's results side by side: test accuracy (and speed) against the hidden-layer weights kept, a curve for
each net and method that eval.py wrote under --results-dir (<results-dir>/<net>/<method>.csv and .json). eval.py
draws it at the end of each sweep; this redraws it, from any folder of results:

    python plot.py                                              # results/ into plot.png
    python plot.py --results-dir docs/results --plot docs/plot.png

A net's results are left out, with one note, where its checkpoint has changed since they were made (the file's
sha256 is not the one they record). The unpruned accuracy is drawn for a dense net only: a net trained to be
sparse, or pruned already, has no unpruned accuracy of its own. Nets trained to a target (gmp-95.pt, gmp-99.pt),
each evaluated at its own target, join into one curve: the sweep over targets.
"""
import argparse
import hashlib
import json
import textwrap
from pathlib import Path

import files
import results
import utils

VARIANTS = {"one-shot": "-", "finetuned": "--", "rewind": "-.", "scratch": ":"}  # a curve's line style
MARKERS = "os^Dvp*hX<>"  # a net's marker: its curves share it


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="results",
                        help="where eval.py wrote its results, a folder per net (default: %(default)s)")
    parser.add_argument("--plot", default="plot.png", help="the picture to write (default: %(default)s)")
    args = parser.parse_args(argv)
    if not Path(args.results_dir).is_dir():
        raise utils.UserError(f"no folder {args.results_dir}: run eval.py first, or give --results-dir")
    files.check_outputs(files=[args.plot])
    nets = compare(Path(args.results_dir), args.plot)
    print(f"wrote {args.plot}: {nets}")


def compare(results_dir, path):
    """Draw every net's curves in results_dir into the PNG at `path`, after a note line for whatever is left out;
    return the nets drawn, in words."""
    curves, notes = read_all(results_dir)
    for note in notes:
        print(f"note: {note}")
    if not curves:
        raise utils.UserError(f"no results of eval.py in {results_dir} to plot")
    nets = {}
    for net, name, info, rows in curves:
        nets.setdefault(net, info)
    timed = [(net, name, info, rows) for net, name, info, rows in curves if "sparse_speedup" in rows[0]]
    described = "; ".join(f"{net} ({info['config']['dataset']}, {len(info['sha256'])} checkpoint"
                          f"{'s' * (len(info['sha256']) > 1)})" for net, info in nets.items())
    note = f"{results_dir}: {described}"
    if timed:
        config = timed[0][2]["config"]
        note += (f" | timing: batch {config['timing_batch'][0]}, {config['machine']}, {config['threads']} threads, "
                 f"each net's first checkpoint")
    unpruned = {net: sum(c["accuracy"] for c in info["checkpoints"]) / len(info["checkpoints"])
                for net, info in nets.items() if is_dense(info)}
    draw_plot(path, join_targets(curves), unpruned, note, timed)
    return described


def join_targets(curves):
    """Curves of one point each, from nets trained to be sparse to a target (gmp-90.pt, gmp-95.pt...) and measured
    at that target, joined into one curve per method and recipe: the sweep over targets, a point for each net."""
    sweeps, kept = {}, []
    for curve in curves:
        net, name, info, rows = curve
        trained = info["config"].get("checkpoint_config", {})
        if trained.get("target") is not None and len(rows) == 1 and rows[0]["k"] == trained["target"]:
            sweeps.setdefault((trained.get("sparse"), trained.get("dataset"), name), []).append(curve)
        else:
            kept.append(curve)
    for (sparse, _, name), members in sweeps.items():
        if len(members) == 1:
            kept += members
            continue
        members.sort(key=lambda curve: curve[3][0]["k"])
        nets = f"{sparse} to each target ({', '.join(net for net, *_ in members)})"
        kept.append((nets, name, members[0][2], [curve[3][0] for curve in members]))
    return kept


def is_dense(info):
    """Whether the results' checkpoints are dense nets as train.py saves them, which have an unpruned accuracy."""
    return all(c.get("dense", not info["config"].get("checkpoint_config", {}).get("sparse"))
               and c.get("accuracy") is not None for c in info["checkpoints"])


def read_all(results_dir):
    """([(net, name, info, rows)] for every result eval.py wrote under results_dir, a folder per net; and notes on
    what is left out: files that are not eval.py's results, and results whose checkpoint has changed since."""
    curves, strays, changed, hashes = [], [], [], {}
    for folder in sorted(p for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        net_curves = []
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file() or path.suffix not in (".json", ".csv"):
                continue  # temporary files of a write in progress, folders, notes of the user's own
            if path.suffix == ".csv" and path.with_suffix(".json").is_file():
                continue  # read with its JSON
            try:
                info = json.loads(path.read_text()) if path.suffix == ".json" else None
                if info is None or {k: info.get(k) for k in results.FORMAT} != results.FORMAT:
                    raise ValueError
                net_curves.append((folder.name, path.stem, info, results.read_rows(path.with_suffix(".csv"))))
            except (OSError, ValueError, TypeError, KeyError, AttributeError):
                strays += [str(p.relative_to(results_dir)) for p in (path, path.with_suffix(".csv")) if p.is_file()]
        now_changed = [c["path"] for _, _, info, _ in net_curves for c, sha in zip(info["checkpoints"], info["sha256"])
                       if Path(c["path"]).is_file() and sha256(Path(c["path"]), hashes) != sha]
        if now_changed:
            changed.append(f"{folder.name} ({', '.join(dict.fromkeys(now_changed))})")
        else:
            curves += net_curves
    strays += [p.name for p in sorted(results_dir.iterdir()) if p.is_file() and not p.name.startswith(".")]
    notes = []
    if changed:
        notes.append(f"the plot leaves out the results of {', '.join(changed)}: the checkpoint has changed since they "
                     f"were made (its sha256); run eval.py on it again")
    if strays:
        notes.append(f"the plot leaves out {len(strays)} file(s) in {results_dir} that are not eval.py's results of a "
                     f"net: {', '.join(strays)}")
    return curves, notes


def sha256(path, hashes):
    """The file's sha256, hashed once a drawing (`hashes`: those so far), as seeds share their files."""
    if path not in hashes:
        hashes[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes[path]


# x is the percentage of the hidden layers' weights kept, on a log scale, as pruning papers draw
# it: the range from 90 to 99 % sparsity, where methods part ways, gets as much room as 0 to 90 %.
KEPT_TICKS = [100, 50, 20, 10, 5, 3, 2, 1, 0.5, 0.2, 0.1]
FEWEST_KEPT = 0.05  # where 100 % sparsity is drawn: a log axis cannot show 0


def percent_kept(rows):
    return [max(100 - row["sparsity"], FEWEST_KEPT) for row in rows]


def plot_accuracy(ax, curves, unpruned):
    """Mean test accuracy against the weights kept, a band of ± one standard deviation over checkpoints: a color
    for each net and method, a marker for each net, a line style for each variant (one-shot, fine-tuned...), so
    that a method's variants share a color and another net's curves take others."""
    import matplotlib  # draw_plot chose its backend
    pairs = list(dict.fromkeys((net, info["method"]) for net, _, info, _ in curves))
    palette = matplotlib.colormaps["tab10" if len(pairs) <= 10 else "tab20"]
    markers = {net: MARKERS[i % len(MARKERS)] for i, net in enumerate(dict.fromkeys(net for net, *_ in curves))}
    for net, name, info, rows in curves:
        kept, mean = percent_kept(rows), [row["accuracy"] for row in rows]
        std = [row.get("accuracy_std", 0.0) for row in rows]
        color = palette(pairs.index((net, info["method"])) % 20)
        ax.plot(kept, mean, VARIANTS.get(info.get("variant"), "-"), marker=markers[net], markersize=4, color=color,
                label=f"{net}: {name}")
        ax.fill_between(kept, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=color,
                        alpha=0.2, linewidth=0)
    for shade, (net, accuracy) in enumerate(unpruned.items()):
        ax.axhline(accuracy, color=str(0.5 * shade / max(1, len(unpruned) - 1)), linewidth=0.8, linestyle=":",
                   label=f"{net}: unpruned, {accuracy:.2f} %")
    several = any("accuracy_std" in row for *_, rows in curves for row in rows)
    ax.set(ylabel="test accuracy (%)",
           title="Accuracy: mean, band ± 1 std over checkpoints" if several else "Accuracy")


def plot_speed(ax, timed):
    """Speedup over dense of the sparse path and the compacted net, each against its own FLOP ceiling.

    timed: [(net, name, info, rows)]; where rows have <column>_min and <column>_max, they are drawn as error bars.
    """
    colors = {(net, name): f"C{i % 10}" for i, (net, name, _, _) in enumerate(timed)}
    for net, name, _, rows in timed:
        method = f"{net}: {name}" if net else name  # benchmarks/timing.py's curves have no net
        kept = percent_kept(rows)
        for column, style, marker, label in (("sparse_speedup", "-", "o", "sparse"),
                                             ("compact_speedup", "--", "s", "compact")):
            values = [row[column] for row in rows]
            spread = None
            if f"{column}_min" in rows[0]:
                spread = [[v - row[f"{column}_min"] for v, row in zip(values, rows)],
                          [row[f"{column}_max"] - v for v, row in zip(values, rows)]]
            ax.errorbar(kept, values, yerr=spread, fmt=style, marker=marker, markersize=3, capsize=2,
                        color=colors[net, name], label=f"{method}, {label}")
        compact_ceiling = [row["compact_flop_ceiling"] for row in rows]
        if any(c > 1.1 * row["flop_ceiling"] for c, row in zip(compact_ceiling, rows)):  # else it hides under the grey one
            ax.plot(kept, compact_ceiling, ":", marker="_", color=colors[net, name], linewidth=1,
                    label=f"{method}, compact ceiling")
    rows = timed[0][3]
    ax.plot(percent_kept(rows), [row["flop_ceiling"] for row in rows], ":", marker="_", markersize=12, color="grey",
            linewidth=2, label="ceiling of the nonzeros")  # the marker: a net timed at one k is one point
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set(yscale="log", ylabel="speedup over dense (x)", title="Forward pass against dense")


def draw_plot(path, curves, unpruned, note, timed=None):
    """Accuracy against the weights kept for every curve in `curves` ([(net, name, info, rows)]), the unpruned
    accuracy of each dense net in `unpruned` ({net: accuracy}); beside it the speedups of `timed`, if any."""
    import matplotlib
    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    panels = [panel for panel in (curves and "accuracy", timed and "speed") if panel]
    every = [rows for *_, rows in [*curves, *(timed or [])]]
    least_kept = min(min(percent_kept(rows)) for rows in every) if every else 1
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5.5), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        if panel == "accuracy":
            plot_accuracy(ax, curves, unpruned)
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


if __name__ == "__main__":
    utils.run(main)
