"""Fine-tuning a pruned net: the mask holds, the survivors learn, and 0 epochs is the one-shot sweep."""
import csv

import pytest
import torch

import utils
from conftest import run_main
from eval import finetune, main, prune, sparsity


@pytest.fixture
def data(data_dir):
    return (utils.load_data("mnist", data_dir, "train", download=False),
            utils.load_data("mnist", data_dir, "test", download=False))


@pytest.mark.parametrize("method, k", [("weight", 50), ("weight", 95), ("unit", 80)])
def test_finetuning_keeps_every_pruned_weight_at_zero_and_trains_the_rest(method, k, checkpoint, data):
    train_data, _ = data
    model, _ = utils.load_checkpoint(checkpoint)
    pruned = prune(model, method, k)
    before = [layer.weight.detach().clone() for layer in pruned.layers]
    sparsity_before = sparsity(pruned)
    finetune(pruned, train_data, epochs=2, lr=0.05, batch_size=32, seed=0)
    for layer, old in zip(pruned.hidden, before):
        gone = layer.weight_mask == 0
        assert gone.sum() > 0
        assert torch.all(layer.weight[gone] == 0)  # exactly zero, not small
        assert not torch.equal(layer.weight[~gone], old[~gone])  # the survivors were trained
    assert not torch.equal(pruned.layers[-1].weight, before[-1])  # the logits layer is trained, never pruned
    assert sparsity(pruned) == sparsity_before


def test_finetuning_improves_a_heavily_pruned_net(checkpoint, data):
    train_data, test_data = data
    model, _ = utils.load_checkpoint(checkpoint)
    pruned = prune(model, "unit", 90)
    one_shot = utils.evaluate(pruned, test_data)
    finetune(pruned, train_data, epochs=3, lr=0.05, batch_size=32, seed=0)
    assert utils.evaluate(pruned, test_data) > one_shot


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def sweep(tmp_path, checkpoint, data_dir, capsys, *extra):
    argv = ["--sparsity", "both", "--ks", "0,50,90", "--no-timing", "--checkpoint", checkpoint, "--data-dir", data_dir,
            "--results-dir", tmp_path / "results", "--logdir", tmp_path / "runs", "--plot", tmp_path / "plot.png",
            *extra]
    result = run_main(main, argv, capsys)
    assert result.returncode == 0, result.stderr
    return result


def test_zero_finetune_epochs_gives_exactly_the_one_shot_results(tmp_path, checkpoint, data_dir, capsys):
    sweep(tmp_path / "a", checkpoint, data_dir, capsys)
    sweep(tmp_path / "b", checkpoint, data_dir, capsys, "--finetune-epochs", 0)
    for method in ("weight", "unit"):
        assert read_rows(tmp_path / "b" / "results" / f"{method}.csv") == read_rows(
            tmp_path / "a" / "results" / f"{method}.csv")
    assert not list((tmp_path / "b" / "results").glob("*finetuned*"))


def test_finetuned_results_get_their_own_csv_and_run_beside_the_one_shot_ones(tmp_path, checkpoint, data_dir, capsys):
    sweep(tmp_path, checkpoint, data_dir, capsys)
    result = sweep(tmp_path, checkpoint, data_dir, capsys, "--finetune-epochs", 1, "--finetune-lr", 0.05)
    assert "weight-finetuned pruning" in result.stdout and "one-shot accuracy %" in result.stdout
    assert sorted(p.name for p in (tmp_path / "results").glob("*.csv")) == [
        "unit-finetuned.csv", "unit.csv", "weight-finetuned.csv", "weight.csv"]
    assert {"weight", "unit", "weight-finetuned", "unit-finetuned"} <= {p.name for p in (tmp_path / "runs").iterdir()}
    one_shot = read_rows(tmp_path / "results" / "unit.csv")
    tuned = read_rows(tmp_path / "results" / "unit-finetuned.csv")
    assert [r["one_shot_accuracy"] for r in tuned] == [r["accuracy"] for r in one_shot]
    assert [r["sparsity"] for r in tuned] == [r["sparsity"] for r in one_shot]
    assert "dense_ms" not in tuned[0]
