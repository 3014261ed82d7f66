"""Bad input: one clear line, a non-zero exit, and nothing written. A test per row of docs/errors.md's table, in its
order, to the outputs that cannot be written (test_interrupted.py: the rest; test_compare.py: --name and plot.py)."""
import gzip
import os
import pickle
import shutil
import urllib.error

import pytest
import torch

import eval as eval_script
import train
import checkpoints
from conftest import assert_fails_cleanly, run_main, run_script, write_dataset, write_idx
from model import MLP


def eval_argv(tmp_path, checkpoint, data_dir, *extra):
    return ["--sparsity", "weight", "--ks", "0,90", "--no-timing", "--checkpoint", checkpoint, "--data-dir", data_dir,
            "--no-download", "--results-dir", tmp_path / "results", "--logdir", tmp_path / "runs",
            "--plot", tmp_path / "plot.png", *extra]


def train_argv(tmp_path, data_dir, out=None):
    return ["--epochs", 1, "--batch-size", 32, "--data-dir", data_dir, "--no-download",
            "--out", out or tmp_path / "new.pt", "--logdir", tmp_path / "runs"]


def assert_one_line(result, *words):
    line = assert_fails_cleanly(result, *words)
    assert result.stderr.strip() == line, result.stderr
    return line


def assert_nothing_written(tmp_path):
    assert not (tmp_path / "results").exists() and not (tmp_path / "plot.png").exists()
    runs = tmp_path / "runs"  # the checkpoint fixture's training log may be there, a sweep's may not
    assert not runs.exists() or not any(p.name in ("weight", "unit") for p in runs.iterdir())


# unknown --sparsity, unknown --dataset, unknown flag: an argparse usage error

@pytest.mark.parametrize("script, argv, words", [
    (eval_script, ["--sparsity", "magic"], ["--sparsity", "invalid choice: 'magic'"]),
    (eval_script, ["--sparsity", "weight,magic"], ["--sparsity", "invalid choice: 'magic'"]),
    (eval_script, ["--sparsity", "weight", "--dataset", "cifar10"], ["--dataset", "invalid choice: 'cifar10'"]),
    (train, ["--dataset", "cifar10"], ["--dataset", "invalid choice: 'cifar10'"]),
    (eval_script, ["--sparsity", "weight", "--prune-harder"], ["unrecognized arguments: --prune-harder"]),
    (train, ["--epochz", "3"], ["unrecognized arguments: --epochz"]),
], ids=["eval-sparsity", "eval-sparsity-list", "eval-dataset", "train-dataset", "eval-flag", "train-flag"])
def test_an_unknown_choice_or_flag_is_a_usage_error(script, argv, words, capsys):
    result = run_main(script.main, argv, capsys)
    assert result.returncode == 2
    assert_fails_cleanly(result, *words)
    assert result.stderr.startswith("usage:")


# a flag that another flag makes meaningless, or one that is gone: refused, naming what to say instead

@pytest.mark.parametrize("argv, words", [
    (["--retrain-epochs", "3"], ["--retrain-epochs", "give it with --retrain"]),
    (["--retrain-lr", "0.5"], ["--retrain-lr", "give it with --retrain"]),
    (["--no-timing", "--timing-batch", "1000"], ["--timing-batch", "--no-timing turns off"]),
    (["--no-timing", "--timing-peers"], ["--timing-peers", "--no-timing turns off"]),
    (["--retrain", "finetune", "--timing-batch", "10"], ["--timing-batch", "a --retrain run does not do"]),
    (["--finetune-epochs", "3"], ["--finetune-epochs is gone", "--retrain finetune --retrain-epochs N"]),
    (["--retrain", "rewind", "--finetune-lr", "0.5"], ["--finetune-lr is gone", "--retrain finetune --retrain-lr LR"]),
], ids=["epochs-alone", "lr-alone", "batch-untimed", "peers-untimed", "batch-retrained", "finetune-epochs",
        "finetune-lr"])
def test_a_flag_that_would_mean_nothing_is_refused(argv, words, tmp_path, capsys):
    result = run_main(eval_script.main, ["--sparsity", "weight", "--checkpoint", tmp_path / "none.pt", *argv], capsys)
    assert result.returncode == 2
    assert_fails_cleanly(result, *words)


@pytest.mark.parametrize("value", ["90", "90,95", "99.5"])
def test_a_sparsity_given_to_sparsity_points_to_ks(value, capsys):
    result = run_main(eval_script.main, ["--sparsity", value], capsys)
    assert_fails_cleanly(result, "--sparsity", f"'{value}' is a sparsity: give it to --ks (--ks {value})")


# --ks empty, non-numeric, 100, -5, two decimals: a clear error naming the bad value

@pytest.mark.parametrize("ks, words", [
    ("", ["--ks", "got nothing"]),
    ("50,abc", ["--ks", "'abc'"]),
    ("50,100", ["--ks", "'100'"]),
    ("-5", ["--ks", "'-5'"]),
    ("12.55", ["--ks", "'12.55'"]),
    ("1e1", ["--ks", "'1e1'"]),
    ("99.95", ["--ks", "at most one decimal", "'99.95'"]),
])
def test_a_bad_k_is_named(ks, words, capsys):
    result = run_main(eval_script.main, ["--sparsity", "weight", "--ks", ks], capsys)
    assert result.returncode == 2
    assert_fails_cleanly(result, *words)


# --checkpoint missing: "no checkpoint at ...; run train.py first"

def test_a_missing_checkpoint_says_to_train_first(tmp_path, data_dir, capsys):
    result = run_main(eval_script.main, eval_argv(tmp_path, tmp_path / "none.pt", data_dir), capsys)
    assert_one_line(result, f"no checkpoint at {tmp_path / 'none.pt'}; run train.py first")
    assert_nothing_written(tmp_path)


# checkpoint truncated or not a checkpoint: a clear error, nothing written

@pytest.mark.parametrize("damage", ["truncated", "text", "empty", "a tensor, not a dict"])
def test_a_damaged_checkpoint_is_refused_and_nothing_is_written(damage, tmp_path, checkpoint, data_dir, capsys):
    bad = tmp_path / "bad.pt"
    if damage == "truncated":
        bad.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    elif damage == "text":
        bad.write_text("these are not the weights you are looking for\n")
    elif damage == "empty":
        bad.write_bytes(b"")
    else:
        torch.save(torch.zeros(3), bad)
    result = run_main(eval_script.main, eval_argv(tmp_path, bad, data_dir), capsys)
    expected = "is not a readable checkpoint"
    if damage.startswith("a tensor"):
        expected = "is not a checkpoint saved by train.py"
    assert_one_line(result, f"{bad} {expected}")
    assert_nothing_written(tmp_path)


# checkpoint from another architecture: a clear error naming the mismatch

def test_a_checkpoint_of_another_architecture_names_the_mismatch(tmp_path, data_dir, capsys):
    other = tmp_path / "other.pt"
    checkpoints.save(other, MLP((784, 300, 100, 10)), {"dataset": "mnist"}, 0.0)
    result = run_main(eval_script.main, eval_argv(tmp_path, other, data_dir), capsys)
    assert_one_line(result, "another architecture", "layers.0.weight is (300, 784) there, (1000, 784) in the MLP "
                                                    "784-1000-1000-500-200-10")
    assert_nothing_written(tmp_path)


# a checkpoint that is a pickle which would run code: refused by weights_only=True, the code never runs

class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this calls open(marker, "w"): code from the file would run
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer, protocol", [("torch.save", 2), ("torch.save", 4), ("pickle.dump", 5)])
def test_a_checkpoint_that_would_run_code_is_refused_in_one_line_and_the_code_never_runs(
        writer, protocol, tmp_path, data_dir):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    payload = {"state_dict": {}, "config": RunsCode(str(marker))}
    if writer == "torch.save":
        torch.save(payload, evil, pickle_protocol=protocol)
    else:
        evil.write_bytes(pickle.dumps(payload, protocol=protocol))
    result = run_script("eval.py", *eval_argv(tmp_path, evil, data_dir), cwd=tmp_path)
    assert_one_line(result, f"{evil} was refused: loading it would run code (io.open)")  # no torch warning before it
    assert not marker.exists()
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_checkpoint_with_weights_that_are_not_finite_is_refused(bad, tmp_path, checkpoint, data_dir, capsys):
    saved = torch.load(checkpoint, weights_only=True)
    saved["state_dict"]["layers.2.weight"][3, 4] = bad
    diverged = tmp_path / "diverged.pt"
    torch.save(saved, diverged)
    result = run_main(eval_script.main, eval_argv(tmp_path, diverged, data_dir), capsys)
    assert_one_line(result, str(diverged), "not finite", "layers.2.weight")
    assert_nothing_written(tmp_path)


# data folder missing and no internet: where to put the files

def test_missing_data_offline_says_where_to_put_the_files(tmp_path, checkpoint, capsys):
    result = run_main(eval_script.main, eval_argv(tmp_path, checkpoint, tmp_path / "nowhere"), capsys)
    assert_one_line(result, "no mnist test data", "t10k-images-idx3-ubyte", str(tmp_path / "nowhere" / "MNIST" / "raw"))
    result = run_main(train.main, train_argv(tmp_path, tmp_path / "nowhere"), capsys)
    assert_one_line(result, "no mnist train data", "train-images-idx3-ubyte")


def test_a_failed_download_says_where_to_put_the_files(tmp_path, capsys, monkeypatch):
    import torchvision.datasets.mnist

    def no_internet(url, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", no_internet)
    result = run_main(train.main, ["--data-dir", tmp_path / "data", "--out", tmp_path / "out" / "m.pt",
                                   "--logdir", tmp_path / "runs"], capsys)
    line = assert_fails_cleanly(result, "could not download MNIST", "Name or service not known",
                                str(tmp_path / "data" / "MNIST" / "raw"),
                                "Fashion-MNIST is a drop-in: apt-get install -y dataset-fashion-mnist")
    assert result.stderr.strip().splitlines() == [f"downloading MNIST into {tmp_path / 'data' / 'MNIST' / 'raw'}", line]
    assert list(tmp_path.iterdir()) == []  # no checkpoint, and none of the folders the run would have made


# IDX file truncated or of the wrong size: a clear error naming the file

def damage_idx(folder, how):
    name = "t10k-images-idx3-ubyte"
    path = folder / name
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif how == "truncated .gz":
        gz = folder / f"{name}.gz"
        gz.write_bytes(gzip.compress(path.read_bytes())[:3000])
        path.unlink()
        path = gz
    elif how == "not IDX":
        path.write_bytes(b"<html>404 Not Found</html>")
    elif how == "wrong image size":
        write_idx(path, torch.zeros(100, 14, 14, dtype=torch.uint8))
    elif how == "fewer labels than images":
        path = folder / "t10k-labels-idx1-ubyte"
        write_idx(path, torch.zeros(60, dtype=torch.uint8))
    elif how == "label out of range":
        path = folder / "t10k-labels-idx1-ubyte"
        write_idx(path, torch.full((100,), 10, dtype=torch.uint8))
    return path


@pytest.mark.parametrize("how", ["truncated", "truncated .gz", "not IDX", "wrong image size",
                                 "fewer labels than images", "label out of range"])
def test_a_damaged_idx_file_is_named(how, tmp_path, capsys):
    folder = tmp_path / "data" / "MNIST" / "raw"
    write_dataset(folder)
    path = damage_idx(folder, how)
    checkpoint = tmp_path / "model.pt"
    checkpoints.save(checkpoint, MLP(), {"dataset": "mnist"}, 0.0)
    result = run_main(eval_script.main, eval_argv(tmp_path, checkpoint, tmp_path / "data"), capsys)
    assert_one_line(result, str(path))
    assert_nothing_written(tmp_path)


# --epochs 0, negative batch size or lr: a clear error

@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--batch-size", "-5"), ("--lr", "-0.1"), ("--lr", "nan"),
                                         ("--epochs", "two"), ("--l1", "-1"), ("--weight-decay", "-1"),
                                         ("--timing-batch", "0")])
def test_a_non_positive_number_is_refused(flag, value, tmp_path, capsys):
    script = eval_script if flag == "--timing-batch" else train
    argv = ["--sparsity", "weight"] if script is eval_script else []
    result = run_main(script.main, [*argv, flag, value], capsys)
    assert result.returncode == 2
    assert_fails_cleanly(result, flag, value)


# output folder not writable: a clear error, before any training is spent

def test_an_unwritable_output_folder_fails_before_training(tmp_path, data_dir, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder should be")
    result = run_main(train.main, train_argv(tmp_path, data_dir, out=blocker / "model.pt"), capsys)
    assert_one_line(result, f"cannot write to {blocker}")
    assert "epoch" not in result.stdout  # failed before the first epoch
    assert not (tmp_path / "runs").exists()


def test_an_unwritable_log_folder_fails_before_training(tmp_path, data_dir, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder should be")
    argv = train_argv(tmp_path, data_dir)
    argv[argv.index("--logdir") + 1] = blocker / "runs"
    result = run_main(train.main, argv, capsys)
    assert_one_line(result, f"cannot write to {blocker / 'runs'}")
    assert "epoch" not in result.stdout and not (tmp_path / "new.pt").exists()


def test_an_unwritable_results_folder_fails_before_the_sweep(tmp_path, checkpoint, data_dir, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder should be")
    argv = eval_argv(tmp_path, checkpoint, data_dir)
    argv[argv.index("--results-dir") + 1] = blocker / "results"
    result = run_main(eval_script.main, argv, capsys)
    assert_one_line(result, f"cannot write to {blocker / 'results'}")
    assert not (tmp_path / "plot.png").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_a_read_only_folder_fails_before_training(tmp_path, data_dir, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    result = run_main(train.main, train_argv(tmp_path, data_dir, out=locked / "model.pt"), capsys)
    assert_one_line(result, f"cannot write to {locked}")


@pytest.mark.parametrize("how", ["the same path twice", "a copy"])
def test_the_same_checkpoint_twice_is_refused_as_no_spread(how, tmp_path, checkpoint, data_dir, capsys):
    again = checkpoint if how == "the same path twice" else shutil.copy(checkpoint, tmp_path / "copy.pt")
    argv = eval_argv(tmp_path, checkpoint, data_dir)
    argv.insert(argv.index("--checkpoint") + 2, again)
    result = run_main(eval_script.main, argv, capsys)
    assert_one_line(result, f"{again} is the same file as an earlier --checkpoint (the same sha256)")
    assert_nothing_written(tmp_path)
