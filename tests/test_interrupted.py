"""Interruption and failed writes: Ctrl-C, SIGTERM, kill -9, a crash mid-sweep, a full disk, a path that
cannot take a file, two sweeps at once. Nothing the user had is lost, and an error is one line.

The last rows of the table in docs/errors.md, "When something is wrong", in its order (test_bad_input.py has
the others).
"""
import csv
import errno
import json
import os
import resource
import signal
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import eval as eval_script
import train
import checkpoints
import utils
from conftest import REPO, run_main
from test_bad_input import assert_one_line, eval_argv, train_argv


# Ctrl-C or SIGTERM during training: the previous model.pt is intact and loadable, no temporary file is left

def terminal_ctrl_c():
    """Give the child a terminal's Ctrl-C even when this suite runs where SIGINT is ignored (a shell's
    background job, some CI runners): Python turns SIGINT into KeyboardInterrupt only if it is not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_stopping_training_keeps_the_previous_checkpoint(stop, code, tmp_path, checkpoint, data_dir):
    before = checkpoint.read_bytes()
    earlier_runs = set((tmp_path / "runs" / "model").glob("train-*"))
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
    [interrupted_run] = set((tmp_path / "runs" / "model").glob("train-*")) - earlier_runs
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
    kept = {p: p.read_bytes() for p in [*(tmp_path / "results" / "model").iterdir(), tmp_path / "plot.png",
                                        *(tmp_path / "runs" / "model" / "weight").iterdir()]}
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
    assert sorted((tmp_path / "results" / "model").iterdir()) == sorted(p for p in kept if p.parent.name == "model")
    assert [p.name for p in (tmp_path / "runs" / "model").iterdir() if p.name.startswith(".")] == []


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
    taken = {"plot": tmp_path / "plot.png", "results csv": tmp_path / "results" / "model" / "weight.csv",
             "results json": tmp_path / "results" / "model" / "weight.json"}[output]
    taken.mkdir(parents=True)
    result = run_main(eval_script.main, eval_argv(tmp_path, checkpoint, data_dir), capsys)
    assert_one_line(result, f"cannot write {taken}: it is a folder")
    assert "pruning of" not in result.stdout
    assert not (tmp_path / "runs" / "model" / "weight").exists()


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
    run = tmp_path / "runs" / "model" / "weight"
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
    with open(tmp_path / "results" / "model" / "weight.csv") as f:
        assert [row["k"] for row in csv.DictReader(f)] == ["0", "50", "90"]
    json.loads((tmp_path / "results" / "model" / "weight.json").read_text())
    events = EventAccumulator(str(tmp_path / "runs" / "model" / "weight"))
    events.Reload()
    assert [e.step for e in events.Scalars("accuracy")] == [0, 301, 1000]  # 1000 · log10(1 / share kept)
    assert [p.name for p in (tmp_path / "runs" / "model").iterdir() if p.name.startswith(".")] == []
