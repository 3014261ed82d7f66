"""How long a user's process waits for a saved pruned net: `inference.load` in a new process, with the kernels'
cache cold (the first run on a machine, which compiles them) and warm (every later one, which loads them).

Each run is a fresh `python -c` that imports inference (timed apart: torch's import is most of it) and then
times inference.load(path) and one call on a batch of 100 images; the cold runs each get an empty cache folder
($XDG_CACHE_HOME), the warm ones share one filled beforehand. Runs alternate cold and warm, so that a slow spell
of a shared machine hits both. Prints, and with --out writes, the median and range of each as a Markdown table.

    python benchmarks/load_time.py --net nets/weight-95.pt --runs 7 --out docs/speed/load_time.md
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import checkpoints  # noqa: E402
import files  # noqa: E402
import results  # noqa: E402
import utils  # noqa: E402
from benchmarks.harness import machine  # noqa: E402

PROCESS = """
import json, sys, time
start = time.perf_counter()
import torch, inference
imported = time.perf_counter()
net = inference.load(sys.argv[1], device="cpu")
loaded = time.perf_counter()
net(torch.zeros(100, 784))
called = time.perf_counter()
print(json.dumps({"import_s": imported - start, "load_s": loaded - imported, "first_call_s": called - loaded,
                  "kernel": net.kernel}))
"""


def one_run(net, cache):
    environment = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    done = subprocess.run([sys.executable, "-c", PROCESS, str(net)], cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise utils.UserError(f"inference.load({net}) failed in a new process: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--net", type=Path, required=True, help="a pruned net that eval.py --save kept")
    parser.add_argument("--runs", type=utils.positive_int, default=7, help="runs of each, cold and warm")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    if not args.net.is_file():
        raise utils.UserError(f"no pruned net at {args.net}: make one with eval.py --save DIR")
    if args.out:
        files.check_outputs(files=[args.out])
    runs = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as folder:
        warm = Path(folder) / "warm"
        one_run(args.net, warm)  # fills the warm cache
        for n in range(args.runs):
            runs["cold"].append(one_run(args.net, Path(folder) / f"cold-{n}"))
            runs["warm"].append(one_run(args.net, warm))
    keys = ("import_s", "load_s", "first_call_s")
    cells = {cache: [f"{ms(statistics.median(v))} ({ms(min(v))}-{ms(max(v))})" for v in
                     ([run[key] for run in runs[cache]] for key in keys)] for cache in runs}
    text = "\n".join([
        f"`inference.load` of `{args.net.name}` ({described(args.net)}) in a new process, median of {args.runs} runs each (range), "
        f"{machine('cpu')}, {torch.get_num_threads()} threads; run by {runs['warm'][0]['kernel']} "
        f"(`python benchmarks/load_time.py --net {args.net} --runs {args.runs}`):", "",
        results.markdown(["kernels' cache", "import inference (torch)", "inference.load", "first call, 100 images"],
                         [["cold: the first run on a machine compiles them", *cells["cold"]],
                          ["warm: every later run loads them", *cells["warm"]]], text_columns=(0,))])
    print(text)
    if args.out:
        files.write_atomic(args.out, lambda f: f.write((text + "\n").encode()))


def described(path):
    """What the net is, from its own record: method, k and data set."""
    _, record = checkpoints.load(path)
    pruned = record.get("pruned", {})
    return f"{pruned.get('method', 'unpruned')} pruning at {pruned.get('k', 0):g} %, {record['dataset']['name']}"


def ms(seconds):
    return f"{seconds * 1e3:.0f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.2f} ms"


if __name__ == "__main__":
    utils.run(main)
