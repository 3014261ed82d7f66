"""Choices made on the validation split (benchmarks/choices.py), the papers' table (benchmarks/papers.py), and
random pruning's mask drawn for each checkpoint."""
import csv
import json
import re

import torch

from conftest import import_script, run_main
from model import MLP
from prune import mask_seed, masks


def test_the_choice_is_the_candidate_with_the_best_mean_validation_accuracy(data_dir, tmp_path, capsys):
    choices = import_script("benchmarks/choices.py")
    out = tmp_path / "finetune.md"
    result = run_main(choices.main, ["finetune", "--data-dir", data_dir, "--validation", 60, "--epochs", 1,
                                     "--out", out], capsys)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" not in result.stdout  # the table alone; the scripts' logs went to stderr
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in out.read_text().splitlines()[2:]]
    assert len(rows) == len(choices.CHOICES["finetune"][0]) == 6
    means = [float(row[-1].strip("* ")) for row in rows]
    bold = [row[0].startswith("**") for row in rows]
    assert bold.count(True) == 1 and means[bold.index(True)] == max(means)
    for row in rows:  # every column a validation accuracy, and the mean theirs
        cells = [float(cell.strip("* ")) for cell in row[1:]]
        assert all(0 <= cell <= 100 for cell in cells)
        assert abs(sum(cells[:-1]) / len(cells[:-1]) - cells[-1]) < 0.011  # each cell rounded to 0.005


def test_the_choices_refuse_a_split_larger_than_the_training_set(data_dir, tmp_path, capsys):
    choices = import_script("benchmarks/choices.py")
    result = run_main(choices.main, ["l1", "--data-dir", data_dir, "--out", tmp_path / "l1.md"], capsys)
    assert result.returncode != 0 and result.stderr.count("\n") == 1 and "5000" in result.stderr
    assert not (tmp_path / "l1.md").exists()


def write_results(path, accuracy, epochs=15, retrain=None):
    """A results CSV and its JSON, as eval.py writes them, for the ks of benchmarks/papers.py."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["k", "sparsity", "accuracy", "accuracy_std"])
        for k, a in accuracy.items():
            writer.writerow([k, k, a, 0.1])
    config = {"checkpoint_config": {"epochs": epochs}, "retrain": retrain,
              "retrain_recipe": {"epochs": 2} if retrain else None}
    path.with_suffix(".json").write_text(json.dumps({"config": config}))


def test_the_papers_table_gives_error_at_each_sparsity_beside_the_published(tmp_path, capsys):
    papers = import_script("benchmarks/papers.py")
    ks = papers.KS
    accuracy = {k: 98 - i for i, k in enumerate(ks)}
    for name in ("dense/weight", "dense/global", "vd/learned", "l0/learned"):
        write_results(tmp_path / f"{name}.csv", {0: 98.5, **accuracy})
    for name in ("dense/weight-finetuned", "dense/global-finetuned"):
        write_results(tmp_path / f"{name}.csv", accuracy, retrain="finetune")
    for k in ks:
        write_results(tmp_path / f"gmp{k:g}" / "weight.csv", {k: 97.0})
    result = run_main(papers.main, ["--results", tmp_path, "--out", tmp_path / "lenet.md"], capsys)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "lenet.md").read_text().splitlines()
    one_shot = next(line for line in lines if "one-shot, per layer" in line).split(" | ")
    assert one_shot[1] == "pruned once; 15 epochs" and one_shot[2] == "1.50 ± 0.10"
    assert one_shot[3:] == [f"{100 - a:.2f} ± 0.10" for a in accuracy.values()][:-1] + ["6.00 ± 0.10 |"]
    assert "+ 2 epochs at each k" in next(line for line in lines if "fine-tuned, per layer" in line)
    gmp = next(line for line in lines if "this repo, gmp" in line)
    assert gmp.count("3.00 ± 0.10") == len(ks)
    han = next(line for line in lines if line.startswith("| Han"))
    assert re.search(r"\| 1\.64 \| 1\.59 \|", han)
    (tmp_path / "vd" / "learned.csv").unlink()
    result = run_main(papers.main, ["--results", tmp_path], capsys)
    assert result.returncode != 0 and "learned.csv" in result.stderr and "make.sh lenet" in result.stderr


def test_each_checkpoint_draws_its_own_random_mask():
    model = MLP([20, 30, 30, 10])
    def drawn(seed, sha256):
        return masks(model, "random", 50, mask_seed(seed, sha256))
    same = drawn(0, "a" * 64)
    assert all(torch.equal(x, y) for x, y in zip(same, drawn(0, "a" * 64)))
    assert not all(torch.equal(x, y) for x, y in zip(same, drawn(0, "b" * 64)))
    assert not all(torch.equal(x, y) for x, y in zip(same, drawn(1, "a" * 64)))
