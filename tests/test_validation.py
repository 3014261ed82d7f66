"""The validation split: training images held out, the same every run, never trained on (by train.py or by
retraining), measured by train.py each epoch and by eval.py --split validation."""
import csv

import pytest
import torch

import checkpoints
import data
import eval as eval_script
import retrain
import train
import utils
from conftest import assert_fails_cleanly, run_main

HELD = 60


def rows_of(images):
    return {tuple(image.tolist()) for image in images}


def test_the_split_is_disjoint_whole_and_the_same_every_run(data_dir):
    full = data.load_data("mnist", data_dir, "train", download=False)
    (kept, kept_labels), (held, held_labels) = data.split_validation(full, HELD)
    again = data.split_validation(data.load_data("mnist", data_dir, "train", download=False), HELD)
    assert torch.equal(held, again[1][0]) and torch.equal(kept, again[0][0])
    assert len(held) == HELD and len(kept) == len(full[1]) - HELD
    assert not rows_of(held) & rows_of(kept) and rows_of(held) | rows_of(kept) == rows_of(full[0])
    assert data.split_validation(full, 0) == (full, None)
    with pytest.raises(utils.UserError, match="would hold out all 300 training images"):
        data.split_validation(full, 300)


@pytest.fixture(scope="module")
def held_out_net(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("held")
    path = folder / train.default_out(None, None, validation=HELD)
    train.main(["--validation", str(HELD), "--epochs", "1", "--batch-size", "32", "--data-dir", str(data_dir),
                "--no-download", "--out", str(path), "--logdir", str(folder / "runs")])
    return path


def test_train_never_trains_on_the_validation_images_and_reports_them(data_dir, tmp_path, capsys, monkeypatch):
    seen = []
    real_epoch = utils.train_epoch
    monkeypatch.setattr(utils, "train_epoch", lambda model, images, *a, **k: seen.append(images[0]) or real_epoch(
        model, images, *a, **k))
    result = run_main(train.main, ["--validation", HELD, "--epochs", 2, "--batch-size", 32, "--data-dir", data_dir,
                                   "--no-download", "--out", tmp_path / "net.pt", "--logdir", tmp_path / "runs"],
                      capsys)
    assert result.returncode == 0, result.stderr
    held = data.split_validation(data.load_data("mnist", data_dir, "train", download=False), HELD)[1][0]
    assert len(seen) == 2 and all(not rows_of(images) & rows_of(held) for images in seen)
    assert result.stdout.count("validation accuracy") == 3  # each epoch, and the saved net's beside its test accuracy
    _, saved = checkpoints.load(tmp_path / "net.pt")
    assert saved["config"]["validation"] == HELD and saved["config"]["validation_seed"] == data.VALIDATION_SEED
    model, _ = checkpoints.load(tmp_path / "net.pt")
    assert saved["validation_accuracy"] == utils.evaluate(model, (held, data.split_validation(
        data.load_data("mnist", data_dir, "train", download=False), HELD)[1][1]))


def test_eval_measures_on_the_validation_images_and_files_it_apart(held_out_net, data_dir, tmp_path, capsys):
    argv = ["--sparsity", "weight", "--ks", "0,90", "--no-timing", "--checkpoint", held_out_net, "--data-dir", data_dir,
            "--no-download", "--results-dir", tmp_path / "results", "--logdir", tmp_path / "runs", "--plot",
            tmp_path / "plot.png"]
    for split in ("test", "validation"):
        assert run_main(eval_script.main, [*argv, "--split", split], capsys).returncode == 0
    _, saved = checkpoints.load(held_out_net)
    for folder, accuracy in (("model-val60", saved["accuracy"]), ("model-val60-validation", saved["validation_accuracy"])):
        with open(tmp_path / "results" / folder / "weight.csv") as f:
            assert float(next(csv.DictReader(f))["accuracy"]) == pytest.approx(accuracy, abs=1e-6)


def test_retraining_never_sees_the_validation_images(held_out_net, data_dir, tmp_path, capsys, monkeypatch):
    trained_on = []
    real = retrain.retrain
    monkeypatch.setattr(retrain, "retrain", lambda net, train_data, **k: trained_on.append(train_data[0]) or real(
        net, train_data, **k))
    result = run_main(eval_script.main, ["--sparsity", "weight", "--ks", "90", "--retrain", "finetune", "--split",
                                         "validation", "--checkpoint", held_out_net, "--data-dir", data_dir,
                                         "--no-download", "--results-dir", tmp_path / "results", "--logdir",
                                         tmp_path / "runs", "--plot", tmp_path / "plot.png"], capsys)
    assert result.returncode == 0, result.stderr
    held = data.split_validation(data.load_data("mnist", data_dir, "train", download=False), HELD)[1][0]
    assert len(trained_on) == 1 and len(trained_on[0]) == 300 - HELD and not rows_of(trained_on[0]) & rows_of(held)


def test_the_validation_split_of_a_net_without_one_is_one_line(checkpoint, data_dir, capsys):
    result = run_main(eval_script.main, ["--sparsity", "weight", "--split", "validation", "--checkpoint", checkpoint,
                                         "--data-dir", data_dir, "--no-download", "--no-timing"], capsys)
    assert_fails_cleanly(result, "--split validation", "holds out no validation images", "--validation N")
