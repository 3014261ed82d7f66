"""Training to be sparse: gmp's schedule and masks, train.py --sparse and eval.py --sparsity learned. (vd's and
l0's layers against their formulas: test_sparse_layers.py.)"""
import json

import pytest
import torch

import checkpoints
import data
import eval as eval_script
import results
from sparse_training import gmp, l0, vd
import sparse_training
import train
import utils
from conftest import assert_fails_cleanly, import_script, run_main
from model import MLP
from prune import apply_masks, masks, sparsity
from conftest import needs_kernel


def test_the_cubic_schedule_rises_from_zero_to_the_target():
    values = [gmp.gmp_sparsity(t, 0.9, 10, 110) for t in range(0, 130)]
    assert values[:11] == [0.0] * 11 and values[110:] == [0.9] * 20
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[60] == pytest.approx(0.9 * (1 - 0.5 ** 3))  # halfway: 7/8 of the target


def test_gmp_masks_follow_the_schedule_at_every_step_and_end_exactly_at_the_target():
    model, steps, every = MLP(), 300, 30  # ten mask updates, each checked
    after_step = gmp.gradual_magnitude_pruning(model, 95, steps, every)
    start, end = round(gmp.GMP_START * steps), round(gmp.GMP_END * steps)
    pruned_before = [torch.zeros_like(layer.weight, dtype=torch.bool) for layer in model.hidden]
    for step in range(1, steps + 1):
        if step % every == 0 or step == steps:  # a stand-in for the optimizer's steps since the last masks
            with torch.no_grad():
                for layer in model.hidden:
                    layer.weight.add_(torch.randn_like(layer.weight), alpha=1e-2)
        after_step()
        if step % every == 0 or step == steps:
            fraction = gmp.gmp_sparsity(step, 0.95, start, end) if step < steps else 0.95
            for layer, before in zip(model.hidden, pruned_before):
                pruned = layer.weight_mask == 0
                assert int(pruned.sum()) == round(fraction * layer.weight.numel()), step
                assert pruned[before].all(), step  # once pruned, pruned for good
                before.copy_(pruned)
        for layer in model.hidden:  # and held at zero after every step
            assert int(layer.weight[layer.weight_mask == 0].count_nonzero()) == 0, step
    assert sparse_training.finish(model)[0] is None
    assert [name for name, _ in model.named_parameters()] == [f"layers.{i}.weight" for i in range(5)]
    assert sparsity(model)["sparsity"] == pytest.approx(95, abs=1e-9)


def test_gmp_trains_its_last_steps_on_kept_layers_to_the_weights_of_masked_ones():
    """Given its optimizer, gmp swaps its masked layers for KeptLinear ones once the masks are final, the optimizer's
    momentum carried over: the net trains on to the same weights, up to the rounding of sums in another order."""
    images, labels = torch.randn(64, 784), torch.randint(0, 10, (64,))
    trained = []
    for swap in (True, False):
        torch.manual_seed(0)
        model, steps = MLP(), 40  # 10 epochs of 4 steps; the masks final at step 30, 10 steps before the end
        optimizer, scheduler = utils.sgd(model, 0.05, steps)
        after_step = gmp.gradual_magnitude_pruning(model, 95, steps, every=5, optimizer=optimizer if swap else None)
        shuffle = torch.Generator().manual_seed(0)
        for _ in range(10):
            utils.train_epoch(model, (images, labels), optimizer, 16, shuffle, scheduler, 1e-4, after_step=after_step)
        kinds = {type(layer).__name__ for layer in model.hidden}
        assert kinds == ({"KeptLinear"} if swap else {"MaskedLinear"})
        sparse_training.finish(model)
        trained.append(model)
    for a, b in zip(trained[0].layers, trained[1].layers):
        torch.testing.assert_close(a.weight, b.weight, rtol=1e-4, atol=1e-6)
    assert sparsity(trained[0])["sparsity"] == pytest.approx(95, abs=1e-9)


def test_gmp_global_counts_the_hidden_layers_together_and_ends_exactly_at_the_target():
    model, steps, every = MLP(), 300, 100
    after_step = gmp.gradual_magnitude_pruning(model, 99, steps, every, sparse_training.GMP["gmp-global"])
    total = sum(layer.weight.numel() for layer in model.hidden)
    for step in range(1, steps + 1):
        with torch.no_grad():
            model.hidden[0].weight.mul_(0.9)  # the first layer shrinks, so it loses more than its share
        after_step()
        if step % every == 0 or step == steps:
            fraction = gmp.gmp_sparsity(step, 0.99, round(gmp.GMP_START * steps),
                                                    round(gmp.GMP_END * steps)) if step < steps else 0.99
            assert sum(int((layer.weight_mask == 0).sum()) for layer in model.hidden) == round(fraction * total)
    assert bool((model.hidden[0].weight_mask == 0).all())  # all of the shrunken layer, rather than 99 % of each
    sparse_training.finish(model)
    assert sparsity(model)["sparsity"] == pytest.approx(99, abs=1e-9)


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
    (["--target", "90"], "--target is the final sparsity of a net trained to be sparse: give it with --sparse gmp"),
    (["--sparse", "gmp", "--target", "100"], "expected a percentage from 0 to below 100, got '100'"),
    (["--sparse", "gmp", "--target", "-1"], "expected a percentage from 0 to below 100, got '-1'"),
    (["--sparse", "vd2"], "invalid choice: 'vd2'"),
])
def test_a_bad_sparse_flag_is_one_line_before_any_training(flags, words, tmp_path, capsys):
    result = run_main(train.main, [*flags, "--out", str(tmp_path / "x.pt"), "--logdir", str(tmp_path / "runs")], capsys)
    assert_fails_cleanly(result, words)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------
# train.py --sparse vd, l0 and l0-unit, and eval.py --sparsity learned


SPARSE_RUNS = {  # a tiny data set takes few steps: a large rate and strength make the methods sparsify in them
    "vd": ["--epochs", "2", "--strength", "1"],
    "l0": ["--epochs", "3", "--lr", "0.005", "--strength", "10"],
    "l0-unit": ["--epochs", "3", "--lr", "0.005", "--strength", "10"],
}


@pytest.fixture(scope="module")
def sparse_checkpoints(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("sparse")
    for method, flags in SPARSE_RUNS.items():
        train.main(["--sparse", method, *flags, "--batch-size", "32", "--data-dir", str(data_dir), "--no-download",
                    "--out", str(folder / f"{method}.pt"), "--logdir", str(folder / "runs")])
    return folder


def natural_masks(method, scores):
    """What each method zeroes on its own, read from its scores: vd's log α ≥ 3, l0's gates that are shut
    (sigmoid(log α)(ζ − γ) + γ ≤ 0)."""
    if method == "vd":
        return [score > -3 for score in scores]
    return [torch.sigmoid(score) * 1.2 - 0.1 > 0 for score in scores]


@pytest.mark.parametrize("method", list(SPARSE_RUNS))
def test_a_sparse_checkpoint_is_plain_and_its_scores_give_its_natural_sparsity_and_accuracy(
        method, sparse_checkpoints, data_dir):
    path = sparse_checkpoints / f"{method}.pt"
    plain = torch.load(path, weights_only=True)
    assert set(plain["state_dict"]) == {f"layers.{i}.weight" for i in range(5)}
    model, checkpoint = checkpoints.load(path)
    scores = checkpoint["scores"]
    assert [tuple(s.shape) for s in scores] == [tuple(layer.weight.shape) for layer in model.hidden]
    if method == "l0-unit":  # one gate per row
        assert all((s == s[:, :1]).all() for s in scores)
    kept = natural_masks(method, scores)
    zeros = 100 * sum(int((~k).sum()) for k in kept) / sum(k.numel() for k in kept)
    assert checkpoint["natural_sparsity"] == pytest.approx(zeros, abs=1e-9)
    assert 1 < zeros < 99, zeros  # the tiny runs prune some weights, not all: the checks below mean something
    assert all((layer.weight != 0).all() for layer in model.hidden)  # the values are kept unthresholded
    test_data = data.load_data("mnist", data_dir, "test", False, "cpu")
    assert checkpoint["accuracy"] == utils.evaluate(model, test_data)
    assert checkpoint["natural_accuracy"] == utils.evaluate(apply_masks(model, kept), test_data)


@needs_kernel("vd")
def test_a_vd_checkpoint_says_that_its_terms_came_from_the_kernel(sparse_checkpoints):
    assert torch.load(sparse_checkpoints / "vd.pt", weights_only=True)["config"]["vd_path"] == "vd_kernel.c"


@pytest.mark.parametrize("method, terms", [("vd", "vd's σ² and KL"), ("l0", "l0's gates")])
def test_without_a_compiler_train_py_says_its_terms_run_in_torch_and_records_it(method, terms, tmp_path, data_dir,
                                                                                capsys, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    result = run_main(train.main, ["--sparse", method, "--epochs", "1", "--data-dir", data_dir, "--no-download",
                                   "--out", tmp_path / "net.pt", "--logdir", tmp_path / "runs"], capsys)
    assert result.returncode == 0, result.stderr
    assert f"note: {terms} run in torch, as {method}_kernel.c did not build" in result.stdout
    assert "no-such-cc" in result.stdout
    assert torch.load(tmp_path / "net.pt", weights_only=True)["config"][f"{method}_path"] == "torch"


def test_a_record_holds_a_checkpoints_numbers_without_its_weights(sparse_checkpoints, tmp_path, capsys):
    """benchmarks/sparse.py --record: what its tables read, small enough to keep in docs/ beside them."""
    sparse_tables = import_script("benchmarks/sparse.py")
    sparse_tables.main(["--docs", str(tmp_path), "--record", str(sparse_checkpoints / "vd.pt")])
    record = json.loads((tmp_path / "sparse" / "runs" / "vd.json").read_text())
    _, checkpoint = checkpoints.load(sparse_checkpoints / "vd.pt")
    assert set(record) == {"accuracy", "natural_sparsity", "natural_accuracy", "config", "sha256"}
    assert {key: record[key] for key in ("accuracy", "natural_sparsity", "natural_accuracy", "sha256")} == {
        key: checkpoint[key] for key in ("accuracy", "natural_sparsity", "natural_accuracy", "sha256")}
    assert record["config"]["sparse"] == "vd" and record["config"]["strength"] == 1.0


def test_the_tables_give_each_training_commands_wall_time_per_machine(tmp_path, capsys):
    sparse_tables = import_script("benchmarks/sparse.py")
    (tmp_path / "times").mkdir()
    (tmp_path / "times" / "sparse.csv").write_text(
        '"python train.py --sparse vd",100.0,CPU A\n"python train.py --sparse vd",300.0,CPU A\n'
        '"python eval.py --sparsity weight,global (3 dense checkpoints)",9.0,CPU A\n'
        '"python train.py --sparse vd",200.0,CPU A\n"python train.py --sparse vd",50.0,"CPU B, 2 runs at a time"\n')
    sparse_tables.main(["--docs", str(tmp_path), "--out", str(tmp_path / "sparse.md")])
    text = (tmp_path / "sparse.md").read_text()
    first, second = text.split("On CPU A:")[1].split("On CPU B, 2 runs at a time:")
    assert "| `python train.py --sparse vd` | 200 s | 100–300 s | 3 |" in first
    assert "| `python train.py --sparse vd` | 50 s | 50–50 s | 1 |" in second
    assert "eval.py" not in text  # the training commands only


def test_the_tables_give_what_each_method_zeroes_on_its_own_over_the_seeds_recorded(tmp_path, capsys):
    sparse_tables = import_script("benchmarks/sparse.py")
    (tmp_path / "sparse" / "runs").mkdir(parents=True)
    for name, natural in [("vd-seed0", 97.0), ("vd-seed1", 98.0), ("l0-unit-seed0", 99.5)]:
        record = {"accuracy": 88.0, "natural_sparsity": natural, "natural_accuracy": 87.0}
        (tmp_path / "sparse" / "runs" / f"{name}.json").write_text(json.dumps(record))
    sparse_tables.main(["--docs", str(tmp_path), "--out", str(tmp_path / "sparse.md")])
    text = (tmp_path / "sparse.md").read_text()
    assert "| vd (the ELBO) | 97.50 ± 0.71 (n=2) | 87.00 ± 0.00 (n=2) | 88.00 ± 0.00 (n=2) |" in text
    assert "| l0-unit | 99.50 (n=1) | 87.00 (n=1) | 88.00 (n=1) |" in text
    assert "| l0 |" not in text  # no record, no row


def test_the_tables_give_each_method_trained_to_a_target_the_equal_time_row_and_the_peer(tmp_path, capsys):
    sparse_tables = import_script("benchmarks/sparse.py")
    runs = tmp_path / "sparse" / "runs"
    runs.mkdir(parents=True)
    for seed, accuracy in enumerate([97.0, 98.0, 99.0]):
        (runs / f"rigl99-seed{seed}.json").write_text(json.dumps({"accuracy": accuracy}))
        (runs / f"snip99.8-seed{seed}.json").write_text(json.dumps({"accuracy": accuracy - 10}))
        (runs / f"rigl-equal-time99-seed{seed}.json").write_text(json.dumps({"accuracy": accuracy + 0.5,
                                                                             "config": {"epochs": 70}}))
    (tmp_path / "sparse" / "rigl-torch").mkdir()
    (tmp_path / "sparse" / "rigl-torch" / "seed0.json").write_text(json.dumps(
        {"accuracy": 95.0, "hidden_sparsity": 66.1, "config": {"epochs": 15}}))
    sparse_tables.main(["--docs", str(tmp_path), "--ks", "99,99.8", "--out", str(tmp_path / "sparse.md"),
                        "--headline", str(tmp_path / "headline.md")])
    text = (tmp_path / "sparse.md").read_text()
    headline = (tmp_path / "headline.md").read_text()
    assert "with 99 % of the hidden weights pruned:" in headline and "; rigl 98.00 ± 1.00." in headline
    assert "a random mask held –; rigl –." in headline  # 99.8 %: no rigl record there
    assert "| rigl to each target | 15 | 98.00 ± 1.00 | – |" in text
    assert "| snip to each target | 15 | – | 88.00 ± 1.00 |" in text
    assert "| set to each target | 15 | – | – |" in text  # no record: a row of dashes, not a missing method
    assert "| rigl in the dense recipe's wall time | 70 | 98.50 ± 1.00 |  |" in text
    assert ("| rigl-torch, torch's dense init (its first layer dense: 66.1 % of the hidden weights pruned) | 15 | "
            "95.00 (n=1) |  |") in text
    assert "rigl-torch, the sparse fan-in init" not in text  # no record, no row


def test_equal_time_epochs_scale_rigls_epochs_to_the_dense_runs_median_on_the_same_machine(tmp_path, capsys):
    sparse_tables = import_script("benchmarks/sparse.py")
    (tmp_path / "times").mkdir()
    (tmp_path / "times" / "train.csv").write_text('python train.py,200.0,CPU A\npython train.py,260.0,CPU A\n'
                                                   'python train.py,10.0,CPU B\n')
    assert_fails_cleanly(run_main(sparse_tables.main, ["--docs", tmp_path, "--equal-time-epochs"], capsys),
                         "no machine has times of both")
    (tmp_path / "times" / "sparse.csv").write_text('"python train.py --sparse rigl --target 99",30.0,CPU A\n'
                                                    '"python train.py --sparse rigl --target 99",50.0,CPU A\n')
    result = run_main(sparse_tables.main, ["--docs", tmp_path, "--equal-time-epochs"], capsys)
    assert result.returncode == 0 and result.stdout.strip() == str(int(15 * 230 / 40))


def test_train_speed_times_a_step_of_every_method_and_writes_its_table(tmp_path, capsys):
    """benchmarks/train_speed.py: a row for the dense recipe and one for each method of train.py --sparse, dense
    the unit of the ratios, the table written whole where asked; checked for what it lists, never its timings."""
    train_speed = import_script("benchmarks/train_speed.py")
    out = tmp_path / "steps.md"
    result = run_main(train_speed.main, ["--rounds", 1, "--steps", 2, "--batch-size", 16, "--targets", "90,99",
                                         "--out", out], capsys)
    assert result.returncode == 0, result.stderr
    header, _, *rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| ")]
    in_torch = ([train_speed.VD_IN_TORCH] if vd.vd_path("cpu")[0] == "vd_kernel.c" else []) + \
        ([train_speed.L0_IN_TORCH] if l0.l0_path("cpu")[0] == "l0_kernel.c" else [])
    named = []
    for m in sparse_training.METHODS:  # snip and synflow hold a mask as static does: static stands for them
        named += [f"{m} at {k} %" for k in (90, 99)] if m in train_speed.TIMED else [] if m in ("snip", "synflow") else [m]
    assert [row[0].strip() for row in rows] == ["dense", *named, *in_torch]
    assert rows[0][2].strip() == "1.00x" and all(float(row[1]) > 0 for row in rows)
    assert out.read_text() in result.stdout + "\n"


@pytest.mark.parametrize("method", ["vd", "l0-unit"])
def test_learned_pruning_counts_exactly_nests_in_k_and_follows_the_scores(method, sparse_checkpoints):
    model, checkpoint = checkpoints.load(sparse_checkpoints / f"{method}.pt")
    scores, total = checkpoint["scores"], sum(layer.weight.numel() for layer in model.hidden)
    before = None
    for k in (0, 25, 50, 90, 95, 99, 99.5, 99.8):
        kept = masks(model, "learned", k, scores=scores)
        pruned = sum(int((m == 0).sum()) for m in kept)
        assert pruned == round(k / 100 * total), k
        if before is not None:
            assert all((m <= b).all() for m, b in zip(kept, before)), k  # what k prunes, a larger k prunes too
        highest_pruned = max((s[m == 0].max() for s, m in zip(scores, kept) if (m == 0).any()), default=None)
        lowest_kept = min(s[m == 1].min() for s, m in zip(scores, kept) if (m == 1).any())
        assert highest_pruned is None or highest_pruned <= lowest_kept, k  # ranked across the layers
        before = kept


def test_eval_learned_sweeps_a_sparse_checkpoint_and_all_leaves_it_out(sparse_checkpoints, tmp_path, data_dir, capsys):
    result = run_main(eval_script.main, ["--sparsity", "learned", "--checkpoint", sparse_checkpoints / "vd.pt",
                                         "--ks", "50,99.5", "--no-timing", "--results-dir", tmp_path / "results",
                                         "--logdir", tmp_path / "runs", "--plot", tmp_path / "plot.png"], capsys)
    assert result.returncode == 0, result.stderr
    rows = results.read_rows(tmp_path / "results" / "vd" / "learned.csv")
    assert [row["k"] for row in rows] == [50, 99.5]
    assert [row["sparsity"] for row in rows] == pytest.approx([50, 99.5], abs=1e-3)
    assert "learned" not in eval_script.parse_methods("all")


@pytest.mark.parametrize("flags, words", [
    (["--sparse", "l0", "--strength", "-1"], "expected a number >= 0, got '-1'"),
    (["--strength", "1"], "--strength is the penalty of vd, l0 and l0-unit"),
    (["--sparse", "gmp", "--target", "90", "--strength", "1"], "--strength is the penalty of vd, l0 and l0-unit"),
    (["--sparse", "vd", "--l1", "1e-5"], "--sparse vd brings its own"),
])
def test_a_bad_strength_or_penalty_is_one_line_before_any_training(flags, words, tmp_path, capsys):
    result = run_main(train.main, [*flags, "--out", str(tmp_path / "x.pt"), "--logdir", str(tmp_path / "runs")], capsys)
    assert_fails_cleanly(result, words)
    assert not any(tmp_path.iterdir())


def test_learned_on_a_checkpoint_without_scores_is_one_line(checkpoint, tmp_path, capsys):
    result = run_main(eval_script.main, ["--sparsity", "weight,learned", "--checkpoint", checkpoint, "--no-timing",
                                         "--results-dir", tmp_path / "results", "--logdir", tmp_path / "runs"], capsys)
    assert_fails_cleanly(result, f"{checkpoint} holds no learned scores")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("damage", ["a layer short", "a wrong shape", "not finite", "float64"])
def test_damaged_learned_scores_are_refused_in_one_line(damage, sparse_checkpoints, tmp_path, capsys):
    saved = torch.load(sparse_checkpoints / "vd.pt", weights_only=True)
    scores = saved["scores"]
    if damage == "a layer short":
        scores.pop()
    elif damage == "a wrong shape":
        scores[1] = scores[1][:, :-1].contiguous()
    elif damage == "not finite":
        scores[2][0, 0] = float("nan")
    else:
        scores[0] = scores[0].double()
    torch.save(saved, tmp_path / "bad.pt")
    result = run_main(eval_script.main, ["--sparsity", "learned", "--checkpoint", tmp_path / "bad.pt", "--no-timing",
                                         "--results-dir", tmp_path / "results", "--logdir", tmp_path / "runs"], capsys)
    assert_fails_cleanly(result, "holds learned scores that are not one finite float32 matrix per hidden layer")
