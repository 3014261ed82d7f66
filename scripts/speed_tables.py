"""The speed tables of docs/speed.md, from what scripts/make.sh's speed section timed into docs/speed/ (the
machine's, whatever the data set): scripts/fill_readme.py fills them in."""
import csv
import json
import statistics
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
sys.path.insert(0, str(DOCS.parent))
import results  # noqa: E402
from model import HIDDEN, sizes  # noqa: E402


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
            f"{duration(statistics.median(seconds))} each "
            f"(median; {duration(min(seconds))}–{duration(max(seconds))}).")


def speed_efficiency():
    """Multiply-adds per second of dense and of the sparse path (only the nonzero weights it runs, those of the
    compacted net), and the sparse path's share of its ceiling, at the sparsities where pruning pays most."""
    info = timing_info()
    layers = sizes(info.get("checkpoint_config", {}).get("hidden", HIDDEN))  # the timed net's (older files: HIDDEN)
    dense_macs = sum(a * b for a, b in zip(layers, layers[1:])) * first_batch(info)
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


def duration(seconds):
    """Seconds, from 100 s minutes and seconds, from an hour hours and minutes: rounded before they are split, so that
    539.5 s is 9 min 00 s and not 8 min 60 s."""
    seconds = round(seconds)
    if seconds >= 3600:
        minutes = round(seconds / 60)
        return f"{minutes // 60} h {minutes % 60:02d} min"
    return f"{seconds} s" if seconds < 100 else f"{seconds // 60} min {seconds % 60:02d} s"
