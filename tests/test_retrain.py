"""Retraining after pruning: fine-tuning, rewinding to the initial weights, training from scratch; and
the small dense and distilled nets they are compared with."""
import csv
import math

import pytest
import torch

import eval as eval_script
import prune
import retrain as retraining
import checkpoints
from conftest import assert_fails_cleanly, import_script, run_main
from model import MLP
from benchmarks.harness import machine

small_dense = import_script("benchmarks/small_dense.py")


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def retrain_calls(monkeypatch):
    """Each call eval.py makes to retrain.retrain: the weights it starts from and ends with, the masks, the recipe."""
    calls, retrain = [], retraining.retrain

    def recording(model, train_data, **recipe):
        start = [layer.weight.detach().clone() for layer in model.layers]
        retrain(model, train_data, **recipe)
        calls.append({"start": start, "end": [layer.weight.detach().clone() for layer in model.layers],
                      "masks": [layer.weight_mask.clone() for layer in model.hidden], "recipe": recipe})
    monkeypatch.setattr(retraining, "retrain", recording)
    return calls


def sweep(tmp_path, checkpoint, data_dir, capsys, *extra, sparsity="weight", ks="50"):
    argv = ["--sparsity", sparsity, "--ks", ks, "--checkpoint", checkpoint, "--data-dir", data_dir,
            "--results-dir", tmp_path / "results", "--logdir", tmp_path / "runs", "--plot", tmp_path / "plot.png",
            *extra]
    return run_main(eval_script.main, argv, capsys)


def test_train_keeps_the_initial_weights_of_its_seed(checkpoint):
    saved = torch.load(checkpoint, weights_only=True)
    torch.manual_seed(saved["config"]["seed"])
    initial = MLP().state_dict()
    assert saved["initial_state_dict"].keys() == initial.keys()
    assert all(torch.equal(saved["initial_state_dict"][name], initial[name]) for name in initial)
    assert not torch.equal(saved["initial_state_dict"]["layers.0.weight"], saved["state_dict"]["layers.0.weight"])


@pytest.mark.parametrize("method", ["weight", "unit"])
def test_rewind_starts_from_exactly_the_initial_weights_masked_with_the_checkpoints_recipe(
        method, tmp_path, checkpoint, data_dir, capsys, retrain_calls):
    result = sweep(tmp_path, checkpoint, data_dir, capsys, "--retrain", "rewind", sparsity=method, ks="50,90")
    assert result.returncode == 0, result.stderr
    model, saved = checkpoints.load(checkpoint)
    initial = saved["initial_state_dict"]
    for call, k in zip(retrain_calls, (50, 90)):
        expected_masks = prune.masks(model, method, k)
        assert all(torch.equal(a, b) for a, b in zip(call["masks"], expected_masks))
        for i, (start, mask) in enumerate(zip(call["start"], [*expected_masks, 1])):
            assert torch.equal(start, initial[f"layers.{i}.weight"] * mask)  # the logits layer: rewound, whole
        config = saved["config"]
        assert call["recipe"] == {"epochs": config["epochs"], "lr": config["lr"], "batch_size": config["batch_size"],
                                  "l1": config["l1"], "weight_decay": config["weight_decay"], "seed": 0}
        for end, mask, start in zip(call["end"], call["masks"], call["start"]):
            assert torch.all(end[mask == 0] == 0)  # the mask held through training
            assert not torch.equal(end, start)  # and the rest trained
    rows = read_csv(tmp_path / "results" / "model" / f"{method}-rewind.csv")
    assert [round(float(row["sparsity"])) for row in rows] == [50, 90]
    assert "one_shot_accuracy" in rows[0] and "dense_ms" not in rows[0]


def test_scratch_starts_from_a_fresh_init_drawn_from_the_seed(tmp_path, checkpoint, data_dir, capsys, retrain_calls):
    for seed in (0, 0, 1):
        result = sweep(tmp_path, checkpoint, data_dir, capsys, "--retrain", "scratch", "--seed", seed)
        assert result.returncode == 0, result.stderr
    _, saved = checkpoints.load(checkpoint)
    first, again, other = (call["start"] for call in retrain_calls)
    for i, (start, mask) in enumerate(zip(first, [*retrain_calls[0]["masks"], 1])):
        assert torch.all(start[mask == 0] == 0)
        kept = (start != 0)
        assert not torch.equal(start[kept], saved["initial_state_dict"][f"layers.{i}.weight"][kept])
        assert not torch.equal(start[kept], saved["state_dict"][f"layers.{i}.weight"][kept])
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # the same seed, the same init
    assert not torch.equal(first[0], other[0])


def test_retrain_flags_override_the_checkpoints_recipe(tmp_path, checkpoint, data_dir, capsys, retrain_calls):
    result = sweep(tmp_path, checkpoint, data_dir, capsys, "--retrain", "scratch", "--retrain-epochs", 2,
                   "--retrain-lr", 0.02)
    assert result.returncode == 0, result.stderr
    assert retrain_calls[0]["recipe"]["epochs"] == 2 and retrain_calls[0]["recipe"]["lr"] == 0.02


def test_finetune_keeps_its_own_recipe_unless_told_otherwise(tmp_path, checkpoint, data_dir, capsys, retrain_calls):
    for extra in (["--retrain", "finetune"], ["--retrain", "finetune", "--retrain-epochs", 2, "--retrain-lr", 0.03]):
        result = sweep(tmp_path, checkpoint, data_dir, capsys, *extra)
        assert result.returncode == 0, result.stderr
    assert [call["recipe"] for call in retrain_calls] == [
        {**retraining.FINETUNE, "batch_size": 32, "seed": 0}, {"epochs": 2, "lr": 0.03, "batch_size": 32, "seed": 0}]
    model, _ = checkpoints.load(checkpoint)
    assert all(torch.equal(start, weight.detach() * mask) for start, weight, mask in zip(
        retrain_calls[0]["start"], [layer.weight for layer in model.layers], [*retrain_calls[0]["masks"], 1]))


def test_a_checkpoint_without_initial_weights_cannot_be_rewound_but_still_loads(tmp_path, checkpoint, data_dir,
                                                                                 capsys):
    old = tmp_path / "old.pt"
    saved = torch.load(checkpoint, weights_only=True)
    del saved["initial_state_dict"]
    torch.save(saved, old)
    result = sweep(tmp_path, old, data_dir, capsys, "--retrain", "rewind")
    line = assert_fails_cleanly(result, str(old), "no initial weights", "--retrain finetune or scratch")
    assert result.stderr.strip() == line
    assert not (tmp_path / "results").exists()
    for extra in ([], ["--retrain", "scratch"]):
        assert sweep(tmp_path, old, data_dir, capsys, "--no-timing", *extra).returncode == 0


def test_the_variants_get_their_own_results_beside_the_one_shot_ones(tmp_path, checkpoint, data_dir, capsys):
    for extra in ([], ["--retrain", "finetune"], ["--retrain", "rewind"], ["--retrain", "scratch"]):
        assert sweep(tmp_path, checkpoint, data_dir, capsys, "--no-timing", *extra).returncode == 0
    assert sorted(p.stem for p in (tmp_path / "results" / "model").glob("*.csv")) == [
        "weight", "weight-finetuned", "weight-rewind", "weight-scratch"]
    assert {"weight-rewind", "weight-scratch"} <= {p.name for p in (tmp_path / "runs" / "model").iterdir()}


# The small dense and distilled nets of benchmarks/small_dense.py

@pytest.mark.parametrize("k", [50, 80, 90, 95, 97, 99])
def test_the_small_dense_net_has_the_pruned_nets_weights_within_one_percent(k):
    target = round((100 - k) / 100 * 2_384_000) + 2000  # the hidden layers' share, and the whole logits layer
    sizes = small_dense.small_dense_sizes(target)
    assert sizes[0] == 784 and sizes[-1] == 10 and len(sizes) == 6
    assert abs(small_dense.count_weights(sizes) - target) <= 0.01 * target
    if k == 90:
        assert sizes == (784, 213, 213, 107, 43, 10)


def test_the_distillation_loss_is_the_documented_mix_of_soft_and_hard_targets():
    student, teacher, label = torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([1])
    temperature, alpha = 2.0, 0.5
    p_teacher = [math.e / (math.e + 1), 1 / (math.e + 1)]  # softmax of the teacher's logits / 2
    kl = sum(p * math.log(p / 0.5) for p in p_teacher)  # the student's softened output is (0.5, 0.5)
    by_hand = alpha * temperature ** 2 * kl + (1 - alpha) * math.log(2)  # its cross-entropy with label 1: ln 2
    loss = small_dense.distillation_loss(student, teacher, label, temperature, alpha)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert small_dense.distillation_loss(student, teacher, label, temperature, 0.0).item() == pytest.approx(math.log(2))


def test_the_small_dense_benchmark_runs_its_quick_setting(tmp_path, checkpoint, capsys):
    out = tmp_path / "small_dense.md"
    result = run_main(small_dense.main, ["--checkpoint", checkpoint, "--quick", "--out", out], capsys)
    assert result.returncode == 0, result.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 90 |")]
    assert len(rows) == 4
    assert "| 784-213-213-107-43-10 | 240,183 |" in rows[2]  # small dense from scratch: its sizes and weights
    assert f"timed at batch 100 on {machine('cpu')}, " in out.read_text()  # where the speedups were measured
