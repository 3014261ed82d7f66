"""Weight and unit pruning, and eval.py's sweep, results, TensorBoard runs and plot."""
import csv
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run_main, run_script
from eval import METHODS, main, mask_smallest, prune, sparsity
from model import MLP

SHAPES = [(784, 1000, 1000, 500, 200, 10), (7, 13, 5, 3), (30, 1, 9, 4)]
KS = [0, 1, 25, 50, 63, 90, 99]


def random_model(sizes, seed=0):
    torch.manual_seed(seed)
    return MLP(sizes)


def zeros(weight):
    return weight == 0


def test_ties_go_to_the_lower_index():
    scores = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 2.0])
    assert mask_smallest(scores, 3).tolist() == [0, 0, 1, 0, 1, 1]
    assert mask_smallest(scores, 0).tolist() == [1] * 6


@pytest.mark.parametrize("sizes", SHAPES, ids=str)
@pytest.mark.parametrize("k", KS)
def test_weight_pruning_zeroes_exactly_k_percent_of_the_smallest_weights(sizes, k):
    model = random_model(sizes)
    pruned = prune(model, "weight", k)
    for before, after in zip(model.hidden, pruned.hidden):
        gone = zeros(after.weight)
        assert gone.sum() == round(k / 100 * before.weight.numel())
        assert torch.equal(after.weight[~gone], before.weight[~gone])  # survivors untouched
        if 0 < gone.sum() < gone.numel():
            assert before.weight[gone].abs().max() <= before.weight[~gone].abs().min()
    assert torch.equal(pruned.layers[-1].weight, model.layers[-1].weight)


@pytest.mark.parametrize("sizes", SHAPES, ids=str)
@pytest.mark.parametrize("k", KS)
def test_unit_pruning_zeroes_whole_rows_of_the_smallest_norm(sizes, k):
    model = random_model(sizes)
    pruned = prune(model, "unit", k)
    for before, after in zip(model.hidden, pruned.hidden):
        gone_rows = zeros(after.weight).all(dim=1)
        assert gone_rows.sum() == round(k / 100 * before.out_features)
        assert zeros(after.weight).sum() == gone_rows.sum() * before.in_features  # nothing outside those rows
        assert torch.equal(after.weight[~gone_rows], before.weight[~gone_rows])
        norms = before.weight.norm(dim=1)
        if 0 < gone_rows.sum() < len(gone_rows):
            assert norms[gone_rows].max() <= norms[~gone_rows].min()
    assert torch.equal(pruned.layers[-1].weight, model.layers[-1].weight)


def test_unit_pruning_removes_the_rows_with_the_smallest_l2_norm_not_l1():
    model = MLP((3, 4, 2))
    with torch.no_grad():
        # L2 norms 2.0, 1.73, 3.0, 2.24; L1 norms 2, 3, 3, 3: by L2 the second row goes first, by L1 the first.
        model.layers[0].weight.copy_(torch.tensor([[2.0, 0, 0], [1, 1, 1], [3, 0, 0], [2, 1, 0]]))
    assert zeros(prune(model, "unit", 25).layers[0].weight).all(dim=1).tolist() == [False, True, False, False]
    assert zeros(prune(model, "unit", 50).layers[0].weight).all(dim=1).tolist() == [True, True, False, False]


@pytest.mark.parametrize("method", METHODS)
def test_k_zero_leaves_the_weights_unchanged(method):
    model = random_model(SHAPES[0])
    for before, after in zip(model.layers, prune(model, method, 0).layers):
        assert torch.equal(before.weight, after.weight)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("tied", [False, True], ids=["distinct", "tied"])
def test_a_weight_pruned_at_k_stays_pruned_at_every_larger_k(method, tied):
    model = random_model((50, 40, 30, 5))
    if tied:  # few distinct magnitudes and row norms: the order among equals decides
        with torch.no_grad():
            for layer in model.hidden:
                layer.weight.copy_(torch.randint(-2, 3, layer.weight.shape).float())
                layer.weight[::2] = 1.0
    previous = None
    for k in range(0, 100, 3):
        pruned_now = torch.cat([layer.weight_mask.flatten() == 0 for layer in prune(model, method, k).hidden])
        if previous is not None:
            assert not (previous & ~pruned_now).any(), f"k={k} revived weights pruned at a smaller k"
        assert pruned_now.sum() >= (0 if previous is None else previous.sum())
        previous = pruned_now


def test_sparsity_reports_the_hidden_layers_and_the_whole_net():
    model = MLP((4, 10, 5, 2))  # 40 + 50 hidden weights, 10 in the logits layer
    with torch.no_grad():
        model.layers[0].weight.fill_(1.0)
        model.layers[1].weight.fill_(1.0)
        model.layers[1].weight[:2] = 0.0  # 20 zeros
        model.layers[2].weight.fill_(0.0)  # 10 zeros, in the logits layer
    assert sparsity(model) == {"sparsity": pytest.approx(100 * 20 / 90), "total_sparsity": pytest.approx(30.0)}


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def accuracy_points(run_dir):
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(e.step, round(e.value, 4)) for e in events.Scalars("accuracy")]


def test_eval_writes_a_table_csv_tensorboard_run_and_plot(tmp_path, checkpoint, data_dir):
    ks = [0, 50, 90, 99]
    result = run_script("eval.py", "--sparsity", "both", "--ks", "0,50,90,99", "--data-dir", data_dir,
                        "--no-download", "--no-timing", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for method in METHODS:
        rows = read_csv(tmp_path / "results" / f"{method}.csv")
        assert [int(r["k"]) for r in rows] == ks
        assert {"k", "sparsity", "total_sparsity", "accuracy"} <= set(rows[0])
        assert [round(float(r["sparsity"])) for r in rows] == ks  # the achieved sparsity, measured
        assert f"| {rows[-1]['accuracy'][:4]}" in result.stdout  # the printed table has the same numbers
        assert accuracy_points(tmp_path / "runs" / method) == [(int(r["k"]), float(r["accuracy"])) for r in rows]
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_unpruned_row_reproduces_the_checkpoint_accuracy(tmp_path, checkpoint, data_dir, capsys):
    result = run_main(main, ["--sparsity", "weight", "--ks", "0", "--no-timing", "--checkpoint", checkpoint,
                             "--data-dir", data_dir,
                             "--results-dir", tmp_path / "results", "--logdir", tmp_path / "runs",
                             "--plot", tmp_path / "plot.png"], capsys)
    assert result.returncode == 0, result.stderr
    recorded = torch.load(checkpoint, weights_only=True)["accuracy"]
    assert float(read_csv(tmp_path / "results" / "weight.csv")[0]["accuracy"]) == round(recorded, 4)


def test_eval_takes_the_checkpoints_dataset_and_data_folder(tmp_path, checkpoint, data_dir, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_main(main, ["--sparsity", "unit", "--ks", "0", "--no-timing", "--checkpoint", checkpoint,
                             "--no-download", "--results-dir", elsewhere / "results", "--logdir", elsewhere / "runs",
                             "--plot", elsewhere / "plot.png"], capsys)
    assert result.returncode == 0, result.stderr
    assert "on mnist" in result.stdout
    with open(elsewhere / "results" / "unit.json") as f:
        assert json.load(f)["data_dir"] == str(data_dir)


def test_running_a_method_again_replaces_its_curve(tmp_path, checkpoint, data_dir, capsys):
    argv = ["--sparsity", "unit", "--no-timing", "--checkpoint", checkpoint, "--data-dir", data_dir, "--results-dir",
            tmp_path / "results", "--logdir", tmp_path / "runs", "--plot", tmp_path / "plot.png"]
    for ks in ("0,50,90", "0,25,50,90"):
        result = run_main(main, [*argv, "--ks", ks], capsys)
        assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "unit"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert [step for step, _ in accuracy_points(run_dir)] == [0, 25, 50, 90]
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")] == []  # no temporary runs
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["unit.csv", "unit.json"]
