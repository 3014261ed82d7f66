"""eval.py's sweep end to end: methods by name, fine-tuning, the table, CSV, JSON, TensorBoard runs and plot."""
import csv
import json
import math
import shutil
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import plot
import prune
import data
import results
import checkpoints
import utils
from conftest import REPO, run_main, run_script, train_tiny, write_dataset
from eval import main


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def accuracy_points(run_dir):
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(e.step, pytest.approx(e.value, abs=1e-4)) for e in events.Scalars("accuracy")]  # TensorBoard: float32


def sweep(tmp_path, checkpoint, data_dir, capsys, *extra, sparsity="both", ks="0,50,90"):
    timing = [] if "--timing-batch" in extra or "--retrain" in extra else ["--no-timing"]
    argv = ["--sparsity", sparsity, "--ks", ks, *timing, "--checkpoint", checkpoint, "--data-dir", data_dir,
            "--results-dir", tmp_path / "results", "--logdir", tmp_path / "runs", "--plot", tmp_path / "plot.png",
            *extra]
    result = run_main(main, argv, capsys)
    assert result.returncode == 0, result.stderr
    return result


def test_eval_writes_a_table_csv_tensorboard_run_and_plot(tmp_path, checkpoint, data_dir):
    ks = [0, 50, 90, 99]
    result = run_script("eval.py", "--sparsity", "all", "--ks", "0,50,90,99", "--data-dir", data_dir,
                        "--no-download", "--no-timing", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for method in prune.METHODS:
        rows = read_csv(tmp_path / "results" / "model" / f"{method}.csv")
        assert [int(r["k"]) for r in rows] == ks
        assert {"k", "sparsity", "total_sparsity", "accuracy"} <= set(rows[0])
        assert [round(float(r["sparsity"])) for r in rows] == ks  # the achieved sparsity, measured
        assert f"| {rows[-1]['accuracy'][:4]}" in result.stdout  # the printed table has the same numbers
        assert accuracy_points(tmp_path / "runs" / "model" / method) == [(results.tensorboard_step(int(r["k"])), float(r["accuracy"])) for r in rows]
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("flag, methods", [("weight", ["weight"]), ("global,random", ["global", "random"]),
                                           ("both", ["weight", "unit"]), ("all", list(prune.METHODS))])
def test_sparsity_takes_one_method_a_list_both_or_all(flag, methods, tmp_path, checkpoint, data_dir, capsys):
    sweep(tmp_path, checkpoint, data_dir, capsys, sparsity=flag, ks="50")
    assert sorted(p.stem for p in (tmp_path / "results" / "model").glob("*.csv")) == sorted(methods)


def test_the_csv_gives_each_hidden_layers_measured_sparsity(tmp_path, checkpoint, data_dir, capsys):
    sweep(tmp_path, checkpoint, data_dir, capsys, sparsity="global,weight", ks="0,90")
    for method in ("global", "weight"):
        rows = read_csv(tmp_path / "results" / "model" / f"{method}.csv")
        layers = [[float(row[f"sparsity_layer{i}"]) for i in range(1, 5)] for row in rows]
        assert layers[0] == [0.0] * 4
        sizes = [784_000, 1_000_000, 500_000, 100_000]  # the hidden layers' weights
        assert sum(s * n for s, n in zip(layers[1], sizes)) / sum(sizes) == pytest.approx(90, abs=1e-3)
    assert layers[1] == pytest.approx([90] * 4, abs=1e-3)  # weight pruning: each layer on its own
    global_layers = [float(read_csv(tmp_path / "results" / "model" / "global.csv")[1][f"sparsity_layer{i}"]) for i in range(1, 5)]
    assert max(global_layers) - min(global_layers) > 1  # global pruning: each layer its own share


def test_a_toy_method_named_in_methods_runs_the_whole_sweep(tmp_path, checkpoint, data_dir, capsys, monkeypatch):
    def first_rows(weight, fraction):  # the toy rule: zero the first rows, as many as the fraction says
        mask = torch.ones_like(weight)
        mask[:round(fraction * weight.shape[0])] = 0
        return mask
    monkeypatch.setitem(prune.METHODS, "first-rows", prune.per_layer(first_rows))
    result = sweep(tmp_path, checkpoint, data_dir, capsys, sparsity="first-rows,weight", ks="0,50")
    assert "first-rows pruning" in result.stdout
    rows = read_csv(tmp_path / "results" / "model" / "first-rows.csv")
    assert [round(float(r["sparsity"])) for r in rows] == [0, 50]
    assert accuracy_points(tmp_path / "runs" / "model" / "first-rows") == [(results.tensorboard_step(int(r["k"])), float(r["accuracy"])) for r in rows]


def test_the_unpruned_row_reproduces_the_checkpoint_accuracy(tmp_path, checkpoint, data_dir, capsys):
    sweep(tmp_path, checkpoint, data_dir, capsys, sparsity="weight", ks="0")
    recorded = torch.load(checkpoint, weights_only=True)["accuracy"]
    assert float(read_csv(tmp_path / "results" / "model" / "weight.csv")[0]["accuracy"]) == pytest.approx(recorded, abs=1e-6)


def test_eval_takes_the_checkpoints_dataset_and_data_folder(tmp_path, checkpoint, data_dir, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_main(main, ["--sparsity", "unit", "--ks", "0", "--no-timing", "--checkpoint", checkpoint,
                             "--no-download", "--results-dir", elsewhere / "results", "--logdir", elsewhere / "runs",
                             "--plot", elsewhere / "plot.png"], capsys)
    assert result.returncode == 0, result.stderr
    assert "on mnist" in result.stdout
    with open(elsewhere / "results" / "model" / "unit.json") as f:
        assert json.load(f)["config"]["data_dir"] == str(data_dir)


def test_running_a_method_again_replaces_its_curve(tmp_path, checkpoint, data_dir, capsys):
    for ks in ("0,50,90", "0,25,50,90"):
        sweep(tmp_path, checkpoint, data_dir, capsys, sparsity="unit", ks=ks)
    run_dir = tmp_path / "runs" / "model" / "unit"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert [step for step, _ in accuracy_points(run_dir)] == [0, 125, 301, 1000]  # 1000 · log10(1 / share kept)
    assert [p.name for p in (tmp_path / "runs" / "model").iterdir() if p.name.startswith(".")] == []  # no temporary runs
    assert sorted(p.name for p in (tmp_path / "results" / "model").iterdir()) == ["unit.csv", "unit.json"]


def test_finetuned_results_get_their_own_csv_and_run_beside_the_one_shot_ones(tmp_path, checkpoint, data_dir, capsys):
    sweep(tmp_path, checkpoint, data_dir, capsys)
    result = sweep(tmp_path, checkpoint, data_dir, capsys, "--retrain", "finetune", "--retrain-lr", 0.05)
    assert "weight-finetuned pruning" in result.stdout and "one-shot accuracy %" in result.stdout
    assert sorted(p.name for p in (tmp_path / "results" / "model").glob("*.csv")) == [
        "unit-finetuned.csv", "unit.csv", "weight-finetuned.csv", "weight.csv"]
    assert {"weight", "unit", "weight-finetuned", "unit-finetuned"} <= {p.name for p in (tmp_path / "runs" / "model").iterdir()}
    one_shot = read_csv(tmp_path / "results" / "model" / "unit.csv")
    tuned = read_csv(tmp_path / "results" / "model" / "unit-finetuned.csv")
    assert [r["one_shot_accuracy"] for r in tuned] == [r["accuracy"] for r in one_shot]
    assert [r["sparsity"] for r in tuned] == [r["sparsity"] for r in one_shot]
    assert "dense_ms" not in tuned[0]


def test_several_checkpoints_give_the_mean_and_standard_deviation_of_their_accuracies(
        tmp_path, seeds, data_dir, capsys):
    sweep(tmp_path, seeds[0], data_dir, capsys, "--checkpoint", *seeds, sparsity="weight,random",
          ks="0,99")
    test_data = data.load_data("mnist", data_dir, "test", download=False)
    loaded = [checkpoints.load(path) for path in seeds]
    for method in ("weight", "random"):
        rows = read_csv(tmp_path / "results" / "seed0+seed1+seed2" / f"{method}.csv")  # three seeds, one name
        info = json.loads((tmp_path / "results" / "seed0+seed1+seed2" / f"{method}.json").read_text())
        assert [c["seed"] for c in info["checkpoints"]] == [0, 1, 2]
        for row in rows:
            k = int(row["k"])
            # each checkpoint's mask drawn from --seed (0) and the checkpoint
            by_hand = [utils.evaluate(prune.prune(model, method, k, prune.mask_seed(0, saved["sha256"])), test_data)
                       for model, saved in loaded]
            assert info["accuracy_per_checkpoint"][str(k)] == by_hand
            mean = sum(by_hand) / 3
            std = math.sqrt(sum((a - mean) ** 2 for a in by_hand) / 2)  # the sample standard deviation
            assert float(row["accuracy"]) == pytest.approx(mean, abs=1e-6)
            assert float(row["accuracy_std"]) == pytest.approx(std, abs=1e-6)
    assert float(read_csv(tmp_path / "results" / "seed0+seed1+seed2" / "random.csv")[1]["accuracy_std"]) > 0


def test_one_checkpoint_reports_no_standard_deviation(tmp_path, checkpoint, data_dir, capsys):
    sweep(tmp_path, checkpoint, data_dir, capsys, sparsity="weight", ks="0,90")
    assert "accuracy_std" not in read_csv(tmp_path / "results" / "model" / "weight.csv")[0]


def test_accuracy_is_the_one_top_level_tensorboard_tag(tmp_path, checkpoint, data_dir, capsys):
    sweep(tmp_path, checkpoint, data_dir, capsys, "--timing-batch", 10, sparsity="unit", ks="0,90")
    sweep(tmp_path, checkpoint, data_dir, capsys, "--retrain", "finetune", sparsity="unit", ks="90")
    for run in ("unit", "unit-finetuned"):
        events = EventAccumulator(str(tmp_path / "runs" / "model" / run))
        events.Reload()
        tags = events.Tags()["scalars"]
        assert [tag for tag in tags if "/" not in tag] == ["accuracy"], tags
    assert {"sparsity/sparsity_layer1", "one_shot/one_shot_accuracy"} <= set(tags)


def test_the_plot_draws_every_net_and_leaves_out_what_it_cannot_trust(tmp_path, checkpoint, data_dir, capsys):
    other = train_tiny(tmp_path / "other.pt", data_dir, seed=5)
    sweep(tmp_path, other, data_dir, capsys, "--checkpoint", other, sparsity="unit", ks="0,90")
    results_dir = tmp_path / "results"
    strays = {"mine.csv": "k,accuracy\n0,notanumber\n", "model/empty.json": "", "model/notes.txt": "my notes",
              "old.csv": "k,sparsity,accuracy\n0,0,90\n", "model/old.json": json.dumps({"method": "weight"})}
    (results_dir / "model").mkdir()
    for name, text in strays.items():
        (results_dir / name).write_text(text)
    result = sweep(tmp_path, checkpoint, data_dir, capsys, sparsity="weight", ks="0,90")
    assert not [line for line in result.stdout.splitlines() if "leaves out the results" in line]  # both nets drawn
    [note] = [line for line in result.stdout.splitlines() if line.startswith("note: the plot leaves out")]
    for name in ["mine.csv", "model/empty.json", "old.csv", "model/old.json"]:
        assert name in note
    assert "weight.csv" not in note and "unit.csv" not in note and "notes.txt" not in note
    assert all((results_dir / name).read_text() == text for name, text in strays.items())  # left as they were
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    train_tiny(other, data_dir, seed=6)  # other.pt trained again: its results no longer describe it
    result = run_main(plot.main, ["--results-dir", results_dir, "--plot", tmp_path / "again.png"], capsys)
    assert result.returncode == 0, result.stderr
    [changed] = [line for line in result.stdout.splitlines() if "leaves out the results" in line]
    assert f"other ({other})" in changed and "has changed since" in changed and "model" not in changed.split(":")[1]
    assert "model (mnist, 1 checkpoint)" in result.stdout.splitlines()[-1]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_quick_start_leaves_a_fresh_clone_clean(tmp_path):
    clone = tmp_path / "clone"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("the repository is not a git checkout")
    for name in files.stdout.splitlines():
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, clone / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "clone"]):
        subprocess.run([*git, *command], cwd=clone, check=True)
    write_dataset(clone / "data" / "MNIST" / "raw")  # where train.py would download MNIST
    for script, *args in (["train.py", "--epochs", "1", "--batch-size", "32"],
                          ["eval.py", "--sparsity", "weight", "--ks", "0,90", "--timing-batch", "10"]):
        result = subprocess.run([sys.executable, script, *args], cwd=clone, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert {"model.pt", "results", "runs", "plot.png"} <= {p.name for p in clone.iterdir()}
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == ""
