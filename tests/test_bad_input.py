"""Bad input and interruption: one clear line, a non-zero exit, and nothing the user had is lost.

One test per row of the table in docs/errors.md, "When something is wrong", in its order.
"""
import csv
import errno
import gzip
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import urllib.error

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import eval as eval_script
import train
import checkpoints
import utils
from conftest import REPO, assert_fails_cleanly, run_main, run_script, write_dataset, write_idx
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


# Ctrl-C or SIGTERM during training: the previous model.pt is intact and loadable, no temporary file is left

def terminal_ctrl_c():
    """Give the child a terminal's Ctrl-C even when this suite runs where SIGINT is ignored (a shell's
    background job, some CI runners): Python turns SIGINT into KeyboardInterrupt only if it is not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_stopping_training_keeps_the_previous_checkpoint(stop, code, tmp_path, checkpoint, data_dir):
    before = checkpoint.read_bytes()
    earlier_runs = set((tmp_path / "runs").glob("train-*"))
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), "--epochs", "100000", "--batch-size", "8",
                                "--data-dir", str(data_dir), "--no-download", "--out", str(checkpoint)],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=terminal_ctrl_c)
    while not process.stdout.readline().startswith("epoch"):  # wait until an epoch is done: it is training now
        assert process.poll() is None, process.stderr.read()
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code
    assert stderr.strip().splitlines()[-1] == "interrupted: files from earlier runs are left as they were"
    assert "Traceback" not in stderr
    assert checkpoint.read_bytes() == before
    checkpoints.load(checkpoint)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    [interrupted_run] = set((tmp_path / "runs").glob("train-*")) - earlier_runs
    events = EventAccumulator(str(interrupted_run))
    events.Reload()
    assert len(events.Scalars("train/loss")) >= 1  # the epochs done before the signal are kept


# kill -9 while a checkpoint is being written: the previous model.pt is intact and loadable

STALLED_SAVE = """
import sys, time, torch
sys.path.insert(0, sys.argv[1])
import checkpoints
from model import MLP

def stalled_save(obj, f):  # writes part of a checkpoint, then hangs until it is killed
    f.write(b"PK\\x03\\x04 half of a checkpoint")
    f.flush()
    print("writing", flush=True)
    time.sleep(120)

torch.save = stalled_save
checkpoints.save(sys.argv[2], MLP(), {}, 0.0)
"""


def test_kill_9_while_saving_keeps_the_previous_checkpoint(tmp_path, checkpoint):
    before = checkpoint.read_bytes()
    process = subprocess.Popen([sys.executable, "-c", STALLED_SAVE, str(REPO), str(checkpoint)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"  # the new checkpoint is half written now
    process.kill()
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert checkpoint.read_bytes() == before
    model, saved = checkpoints.load(checkpoint)
    assert saved["config"]["epochs"] == 1


# a crash in the middle of a sweep does not leave a half-written CSV in place of a good one

def test_an_interrupted_sweep_keeps_the_previous_results(tmp_path, checkpoint, data_dir, capsys, monkeypatch):
    argv = eval_argv(tmp_path, checkpoint, data_dir)
    assert run_main(eval_script.main, argv, capsys).returncode == 0
    kept = {p: p.read_bytes() for p in [*(tmp_path / "results").iterdir(), tmp_path / "plot.png",
                                        *(tmp_path / "runs" / "weight").iterdir()]}
    calls, evaluate = [], utils.evaluate

    def evaluate_then_ctrl_c(model, data):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(model, data)

    monkeypatch.setattr(utils, "evaluate", evaluate_then_ctrl_c)
    result = run_main(eval_script.main, [*argv[:argv.index("--ks")], "--ks", "0,50,90", *argv[argv.index("--ks") + 2:]],
                      capsys)
    assert result.returncode == 130
    assert {p: p.read_bytes() for p in kept} == kept
    assert sorted((tmp_path / "results").iterdir()) == sorted(p for p in kept if p.parent.name == "results")
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")] == []


# an output path that exists but cannot take the file: said before any work, for every output

@pytest.mark.parametrize("what", ["a folder", "a fifo", "a name too long"])
def test_a_checkpoint_path_that_cannot_take_the_file_fails_before_training(what, tmp_path, data_dir, capsys):
    out = tmp_path / "model.pt"
    if what == "a folder":
        out.mkdir()
        words = [f"cannot write {out}: it is a folder"]
    elif what == "a fifo":
        os.mkfifo(out)
        words = [f"cannot write {out}: it exists and is not a plain file"]
    else:
        out = tmp_path / ("m" * 250 + ".pt")  # its temporary name, beside it, is longer than a name may be
        words = [f"cannot write to {tmp_path}", "too long"]
    result = run_main(train.main, train_argv(tmp_path, data_dir, out=out), capsys)
    assert_one_line(result, *words)
    assert "epoch" not in result.stdout and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("output", ["plot", "results csv", "results json"])
def test_an_eval_output_path_taken_by_a_folder_fails_before_the_sweep(output, tmp_path, checkpoint, data_dir, capsys):
    taken = {"plot": tmp_path / "plot.png", "results csv": tmp_path / "results" / "weight.csv",
             "results json": tmp_path / "results" / "weight.json"}[output]
    taken.mkdir(parents=True)
    result = run_main(eval_script.main, eval_argv(tmp_path, checkpoint, data_dir), capsys)
    assert_one_line(result, f"cannot write {taken}: it is a folder")
    assert "pruning of" not in result.stdout
    assert not (tmp_path / "runs" / "weight").exists()


# a write that fails midway (a full disk, a file-size limit): one line naming the file, the old file intact,
# no temporary file left

def limit_file_size(size):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def test_a_checkpoint_write_that_fails_midway_keeps_the_previous_one(tmp_path, checkpoint, data_dir):
    before = checkpoint.read_bytes()
    result = subprocess.run([sys.executable, str(REPO / "train.py"), *map(str, train_argv(tmp_path, data_dir,
                                                                                         out=checkpoint))],
                            cwd=tmp_path, capture_output=True, text=True, preexec_fn=limit_file_size(2_000_000))
    assert_one_line(result, f"cannot write {checkpoint}", "File too large")
    assert checkpoint.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_plot_write_that_fails_midway_keeps_the_previous_one(tmp_path, checkpoint, data_dir, capsys):
    argv = [str(a) for a in eval_argv(tmp_path, checkpoint, data_dir)]
    assert run_main(eval_script.main, argv, capsys).returncode == 0
    plot = tmp_path / "plot.png"
    before = plot.read_bytes()
    result = subprocess.run([sys.executable, str(REPO / "eval.py"), *argv], cwd=tmp_path, capture_output=True,
                            text=True, preexec_fn=limit_file_size(len(before) // 2))
    assert_one_line(result, f"cannot write {plot}", "File too large")
    assert plot.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_tensorboard_write_that_fails_keeps_the_previous_run(tmp_path, checkpoint, data_dir, capsys, monkeypatch):
    from torch.utils import tensorboard

    argv = eval_argv(tmp_path, checkpoint, data_dir)
    assert run_main(eval_script.main, argv, capsys).returncode == 0
    run = tmp_path / "runs" / "weight"
    before = {p.name: p.read_bytes() for p in run.iterdir()}

    class FullDisk(tensorboard.SummaryWriter):
        def add_scalar(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tensorboard, "SummaryWriter", FullDisk)
    result = run_main(eval_script.main, argv, capsys)
    assert_one_line(result, f"cannot write {run}: No space left on device")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert [p.name for p in run.parent.iterdir() if p.name.startswith(".")] == []


FULL_TENSORBOARD = """
import sys, pathlib
sys.path.insert(0, sys.argv[1])
import results, utils
rows = [{"k": k, "accuracy": 90.0, "sparsity": float(k)} for k in range(100)] * 50
utils.run(lambda: results.write_tensorboard(pathlib.Path(sys.argv[2]), rows))
"""


def test_a_tensorboard_run_that_hits_a_file_size_limit_fails_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-c", FULL_TENSORBOARD, str(REPO), str(tmp_path / "weight")],
                            capture_output=True, text=True, preexec_fn=limit_file_size(2000))
    assert_one_line(result, f"cannot write {tmp_path / 'weight'}", "File too large")  # the writer thread is quiet
    assert list(tmp_path.iterdir()) == []


# two sweeps writing into the same folders at once both finish, with whole files

def test_two_sweeps_into_the_same_folders_at_once_both_finish_with_whole_files(tmp_path, checkpoint, data_dir):
    argv = [str(a) for a in eval_argv(tmp_path, checkpoint, data_dir)]
    argv[argv.index("--ks") + 1] = "0,50,90"
    sweeps = [subprocess.Popen([sys.executable, str(REPO / "eval.py"), *argv], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for sweep in sweeps:
        _, stderr = sweep.communicate(timeout=300)
        assert sweep.returncode == 0, stderr
    with open(tmp_path / "results" / "weight.csv") as f:
        assert [row["k"] for row in csv.DictReader(f)] == ["0", "50", "90"]
    json.loads((tmp_path / "results" / "weight.json").read_text())
    events = EventAccumulator(str(tmp_path / "runs" / "weight"))
    events.Reload()
    assert [e.step for e in events.Scalars("accuracy")] == [0, 500, 900]  # k in tenths of a percent
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("how", ["the same path twice", "a copy"])
def test_the_same_checkpoint_twice_is_refused_as_no_spread(how, tmp_path, checkpoint, data_dir, capsys):
    again = checkpoint if how == "the same path twice" else shutil.copy(checkpoint, tmp_path / "copy.pt")
    argv = eval_argv(tmp_path, checkpoint, data_dir)
    argv.insert(argv.index("--checkpoint") + 2, again)
    result = run_main(eval_script.main, argv, capsys)
    assert_one_line(result, f"{again} is the same file as an earlier --checkpoint (the same sha256)")
    assert_nothing_written(tmp_path)
