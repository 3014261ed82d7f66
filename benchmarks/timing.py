"""Time the forward paths as a user's run would, several times over: the median speedup and its range.

A shared or busy machine moves a timing by ±20 % from one run to the next, so one run's figures are
an anecdote. This runs `eval.py` (which times every path in interleaved rounds, with
torch.utils.benchmark) in --runs separate processes, one after the other, and reports for every method,
path and k the median over the processes, with the lowest and highest value. Speedups are ratios
measured within one process, so a slow spell of the machine hits dense and sparse alike.

Writes <out>/timing.csv (a row per method and k: <column> is the median, <column>_min and <column>_max
the range), <out>/timing.json (the commands, the machine and each process's wall time) and
<out>/timing.png; prints one table per method.

    python benchmarks/timing.py --checkpoint model.pt              # a few minutes on 2 CPU cores
    python benchmarks/timing.py --checkpoint model.pt --sparsity weight,unit --ks 90,95,99 --timing-batch 1,100,1000

Each run also times the libraries a user might try instead (eval.py --timing-peers): scipy.sparse, and MKL's
sparse BLAS where sparse_dot_mkl is installed.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import plot  # noqa: E402
import results  # noqa: E402
import files  # noqa: E402
import utils  # noqa: E402



# Set on some machines for old OpenBLAS builds: they slow a current numpy's BLAS, which the timing takes as a dense
# baseline. The runs go without them, as a user's numpy runs.
OLD_OPENBLAS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def user_environment():
    """This process's environment without OLD_OPENBLAS, for the runs it times."""
    return {name: value for name, value in os.environ.items() if name not in OLD_OPENBLAS}


def code_version():
    """The commit the timed code is at, and whether the checkout has changes on top: a timing names its code.
    docs/ is left out: it holds what the timings write, not what they time (scripts/make.sh writes there as it goes)."""
    def git(*arguments):
        return subprocess.run(["git", *arguments], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} with uncommitted changes" if changed else commit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="model.pt", help="the net to prune and time; default: %(default)s")
    parser.add_argument("--sparsity", default="all", help="methods, as eval.py takes them; default: %(default)s")
    parser.add_argument("--ks", default="0,25,50,60,70,80,90,95,97,99", help="default: %(default)s")
    parser.add_argument("--runs", type=utils.positive_int, default=5, help="separate processes; default: %(default)s")
    parser.add_argument("--timing-batch", type=utils.positive_ints, default="100",
                        help="batch sizes, comma-separated (1,100,1000): a table for each; default: %(default)s")
    parser.add_argument("--out", default="results/timing", help="folder for the results; default: %(default)s")
    args = parser.parse_args(argv)
    batches = args.timing_batch
    out = Path(args.out)
    files.check_writable(out)

    code = code_version()  # before the runs: what they run
    runs, commands, seconds = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            run_dir = Path(tmp) / f"run{i}"
            command = [sys.executable, str(REPO / "eval.py"), "--sparsity", args.sparsity, "--ks", args.ks,
                       "--checkpoint", args.checkpoint, "--timing-batch", ",".join(map(str, batches)), "--timing-peers",
                       "--no-download",
                       "--name", "timed", "--results-dir", str(run_dir / "results"), "--logdir", str(run_dir / "runs"),
                       "--plot", str(run_dir / "plot.png")]
            print(f"run {i + 1}/{args.runs}: {shlex.join(['python', 'eval.py', *command[2:]])}", flush=True)
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=user_environment())
            seconds.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise utils.UserError(f"eval.py failed: {done.stderr.strip().splitlines()[-1]}")
            commands.append(shlex.join(["python", "eval.py", *command[2:]]))
            written = run_dir / "results" / "timed"
            runs.append({path.stem: results.read_rows(path) for path in sorted(written.glob("*.csv"))})
            config = json.loads(next(written.glob("*.json")).read_text())["config"]
            hardware, threads, net = config["machine"], config["threads"], config["checkpoint_config"]

    rows = []
    for method in runs[0]:
        for i, first in enumerate(runs[0][method]):
            row = {"method": method, **first}
            for column in first:
                if column.split("_batch")[0].endswith(results.TIMED):
                    values = [run[method][i][column] for run in runs]
                    row |= {column: statistics.median(values), f"{column}_min": min(values),
                            f"{column}_max": max(values)}
            rows.append(row)
        for batch in batches:
            print(f"\n{method}, batch {batch}: median of {args.runs} runs (min-max)")
            print(results.speed_table([row for row in rows if row["method"] == method],
                                      results.batch_column("", batch, batches)))

    results.write_csv(out / "timing.csv", rows)
    info = {"command": shlex.join(["python", "benchmarks/timing.py", *(sys.argv[1:] if argv is None else argv)]),
            **vars(args), "machine": hardware, "threads": threads, "code": code, "runs": commands,
            "checkpoint_config": net,
            "run_seconds": seconds, "unset": [name for name in OLD_OPENBLAS if name in os.environ]}
    files.write_atomic(out / "timing.json", lambda f: f.write(json.dumps(info, indent=2).encode()))
    timed = [(None, method, {}, [row for row in rows if row["method"] == method]) for method in runs[0]]
    note = (f"median of {args.runs} runs of eval.py, bars from min to max | batch {batches[0]}, "
            f"{hardware}, {threads} threads | {args.checkpoint}")
    plot.draw_plot(out / "timing.png", [], {}, note, timed)
    print(f"\nwrote {out}/timing.csv, timing.json and timing.png; each eval.py run took "
          f"{statistics.median(seconds):.0f} s (median; {min(seconds):.0f}-{max(seconds):.0f})")


if __name__ == "__main__":
    utils.run(main)
