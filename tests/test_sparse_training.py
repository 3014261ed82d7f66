"""Training to be sparse: gradual magnitude pruning's schedule, its masks at every step, and train.py --sparse."""
import pytest
import torch

import checkpoints
import sparse_training
import train
from conftest import assert_fails_cleanly, run_main
from model import MLP
from prune import sparsity


def test_the_cubic_schedule_rises_from_zero_to_the_target():
    values = [sparse_training.gmp_sparsity(t, 0.9, 10, 110) for t in range(0, 130)]
    assert values[:11] == [0.0] * 11 and values[110:] == [0.9] * 20
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[60] == pytest.approx(0.9 * (1 - 0.5 ** 3))  # halfway: 7/8 of the target


def test_gmp_masks_follow_the_schedule_at_every_step_and_end_exactly_at_the_target():
    model, steps, every = MLP(), 1000, 100
    after_step = sparse_training.gradual_magnitude_pruning(model, 95, steps, every)
    start, end = round(sparse_training.GMP_START * steps), round(sparse_training.GMP_END * steps)
    pruned_before = [torch.zeros_like(layer.weight, dtype=torch.bool) for layer in model.hidden]
    for step in range(1, steps + 1):
        with torch.no_grad():  # a stand-in for an optimizer step: every weight moves
            for layer in model.hidden:
                layer.weight_orig.add_(torch.randn_like(layer.weight_orig), alpha=1e-3)
        after_step()
        if step % every == 0 or step == steps:
            fraction = sparse_training.gmp_sparsity(step, 0.95, start, end) if step < steps else 0.95
            for layer, before in zip(model.hidden, pruned_before):
                pruned = layer.weight_mask == 0
                assert int(pruned.sum()) == round(fraction * layer.weight.numel()), step
                assert pruned[before].all(), step  # once pruned, held at zero
                before.copy_(pruned)
    sparse_training.remove_masks(model)
    assert [name for name, _ in model.named_parameters()] == [f"layers.{i}.weight" for i in range(5)]
    assert sparsity(model)["sparsity"] == pytest.approx(95, abs=1e-9)


def test_train_gmp_saves_a_plain_checkpoint_at_exactly_the_target(data_dir, tmp_path, capsys):
    out = tmp_path / "gmp.pt"
    result = run_main(train.main, ["--sparse", "gmp", "--target", "90", "--epochs", "1", "--data-dir", str(data_dir),
                                   "--no-download", "--out", str(out), "--logdir", str(tmp_path / "runs")], capsys)
    assert result.returncode == 0, result.stderr
    plain = torch.load(out, weights_only=True)
    assert set(plain["state_dict"]) == {f"layers.{i}.weight" for i in range(5)}
    model, checkpoint = checkpoints.load(out)
    measured = sparsity(model)
    assert all(measured[f"sparsity_layer{i}"] == pytest.approx(90, abs=1e-9) for i in range(1, 5))
    assert checkpoint["natural_sparsity"] == measured["sparsity"] and checkpoint["natural_accuracy"] == checkpoint["accuracy"]
    assert checkpoint["config"]["sparse"] == "gmp" and checkpoint["config"]["target"] == 90


@pytest.mark.parametrize("flags, words", [
    (["--sparse", "gmp"], "--sparse gmp needs --target"),
    (["--target", "90"], "--target is gmp's final sparsity: give it with --sparse gmp"),
    (["--sparse", "gmp", "--target", "100"], "expected a percentage from 0 to below 100, got '100'"),
    (["--sparse", "gmp", "--target", "-1"], "expected a percentage from 0 to below 100, got '-1'"),
    (["--sparse", "vd2"], "invalid choice: 'vd2'"),
])
def test_a_bad_sparse_flag_is_one_line_before_any_training(flags, words, tmp_path, capsys):
    result = run_main(train.main, [*flags, "--out", str(tmp_path / "x.pt"), "--logdir", str(tmp_path / "runs")], capsys)
    assert_fails_cleanly(result, words)
    assert not any(tmp_path.iterdir())
