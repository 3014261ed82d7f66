"""Write the tables of README.md from the results eval.py and the benchmarks saved, so that no number
there is typed by hand.

README.md marks each generated table with a pair of comments; everything between them is replaced:

    <!-- generated: accuracy -->
    ...
    <!-- end -->

    python docs/fill_readme.py [--results-dir results]
"""
import argparse
import csv
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import utils  # noqa: E402
from prune import METHODS  # noqa: E402
from results import markdown  # noqa: E402

BLOCK = re.compile(r"(<!-- generated: ([\w-]+) -->\n).*?(<!-- end -->)", re.S)


def read_rows(results_dir, name):
    path = results_dir / f"{name}.csv"
    if not path.is_file():
        raise utils.UserError(f"no {path}: run the command in README.md that makes it")
    with open(path) as f:
        return {int(row["k"]): row for row in csv.DictReader(f)}


def accuracy_table(results_dir):
    """Test accuracy of every method against k, one column per method."""
    results = {method: read_rows(results_dir, method) for method in METHODS}
    ks = sorted(set.intersection(*(set(rows) for rows in results.values())))
    return markdown(["k %", *METHODS], [[k, *(f"{float(results[m][k]['accuracy']):.2f}" for m in METHODS)]
                                         for k in ks])


def global_layers_table(results_dir):
    """The sparsity global pruning gives each hidden layer, against k."""
    rows = read_rows(results_dir, "global")
    return markdown(["k %", "layer 1", "layer 2", "layer 3", "layer 4"],
                    [[k, *(f"{float(row[f'sparsity_layer{i}']):.1f}" for i in range(1, 5))]
                     for k, row in rows.items() if k])


TABLES = {"accuracy": accuracy_table, "global-layers": global_layers_table}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=REPO / "results", help="default: %(default)s")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md", help="default: %(default)s")
    args = parser.parse_args(argv)

    text = args.readme.read_text()
    unknown = [name for _, name, _ in BLOCK.findall(text) if name not in TABLES]
    if unknown:
        raise utils.UserError(f"{args.readme} asks for a table this script does not make: {unknown[0]}")
    text = BLOCK.sub(lambda m: m[1] + TABLES[m[2]](args.results_dir) + "\n" + m[3], text)
    utils.write_atomic(args.readme, lambda f: f.write(text.encode()))


if __name__ == "__main__":
    utils.run(main)
