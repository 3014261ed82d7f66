"""--hidden: a net of other hidden sizes (the papers' LeNet-300-100, or odd ones) through train.py, eval.py with
every method, retraining and --save, inference.load and the C paths; its sizes recorded and checked on load."""
import pytest
import torch

import checkpoints
import eval as eval_script
import inference
import train
from conftest import assert_fails_cleanly, run_main
from model import sizes_of
from prune import METHODS, mask_seed, prune

ODD = (37, 13)  # sizes either side of no vector width, so that the kernels' remainders run


@pytest.fixture(scope="module")
def odd_net(tmp_path_factory, data_dir):
    """A checkpoint of a 784-37-13-10 net, one short epoch, named by train.py's default."""
    folder = tmp_path_factory.mktemp("odd")
    train.main(["--hidden", ",".join(map(str, ODD)), "--epochs", "1", "--batch-size", "32", "--data-dir",
                str(data_dir), "--no-download", "--out", str(folder / train.default_out(None, None, ODD)),
                "--logdir", str(folder / "runs")])
    return folder / "model-37-13.pt"


def sweep(tmp_path, checkpoint, data_dir, capsys, *extra):
    result = run_main(eval_script.main, ["--checkpoint", checkpoint, "--data-dir", data_dir, "--no-download",
                                         "--results-dir", tmp_path / "results", "--logdir", tmp_path / "runs",
                                         "--plot", tmp_path / "plot.png", *extra], capsys)
    assert result.returncode == 0, result.stderr
    return result


def test_train_records_the_sizes_and_names_the_file_after_them(odd_net):
    model, saved = checkpoints.load(odd_net)
    assert sizes_of(model) == (784, *ODD, 10) and saved["config"]["hidden"] == list(ODD)
    assert train.default_out("gmp", 99, (300, 100)) == "gmp-99-300-100.pt"


def test_every_method_and_the_c_paths_run_an_odd_net_to_its_pruned_logits(odd_net, data_dir, tmp_path, capsys):
    sweep(tmp_path, odd_net, data_dir, capsys, "--sparsity", "all", "--ks", "0,50,90", "--timing-batch", "1,7,20",
          "--save", tmp_path / "nets")
    model, saved = checkpoints.load(odd_net)
    images = torch.randn(20, 784)
    for method in METHODS:
        for k in (50, 90):
            net = inference.load(tmp_path / "nets" / f"{method}-{k}.pt", device="cpu")
            assert torch.load(net.path, weights_only=True)["sizes"] == [784, *ODD, 10]
            with torch.no_grad():
                expected = prune(model, method, k, mask_seed(0, saved["sha256"]))(images)  # eval.py's seed
            for batch in (1, 7, 20):
                torch.testing.assert_close(net(images[:batch]), expected[:batch], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["finetune", "rewind", "scratch"])
def test_an_odd_net_retrains_by_every_variant(variant, odd_net, data_dir, tmp_path, capsys):
    sweep(tmp_path, odd_net, data_dir, capsys, "--sparsity", "weight", "--ks", "90", "--retrain", variant,
          "--retrain-epochs", "1", "--save", tmp_path / "nets")
    model, _ = checkpoints.load(tmp_path / "nets" / f"weight-{eval_script.retrain.VARIANTS[variant]}-90.pt")
    assert sizes_of(model) == (784, *ODD, 10)


@pytest.mark.parametrize("flags", [["--sparse", "gmp", "--target", "90"], ["--sparse", "vd"], ["--sparse", "l0"]])
def test_the_sparse_methods_train_an_odd_net(flags, data_dir, tmp_path, capsys):
    out = tmp_path / "net.pt"
    result = run_main(train.main, [*flags, "--hidden", "37,13", "--epochs", "1", "--batch-size", "64", "--data-dir",
                                   data_dir, "--no-download", "--out", out, "--logdir", tmp_path / "runs"], capsys)
    assert result.returncode == 0, result.stderr
    assert sizes_of(checkpoints.load(out)[0]) == (784, *ODD, 10)


@pytest.mark.parametrize("value", ["0", "300,x", "", "40000", "20000,20000", "300,-1"])
def test_bad_hidden_sizes_are_one_line(value, capsys):
    result = run_main(train.main, ["--hidden", value], capsys)
    assert result.returncode == 2
    assert_fails_cleanly(result, "--hidden", "expected")


@pytest.mark.parametrize("sizes", [[784, 30000, 30000, 10], [784, 0, 10], [10, 300, 10], "784-300-10"],
                         ids=["too many weights", "an empty layer", "another input", "not a list"])
def test_a_file_that_asks_for_a_net_it_may_not_be_is_refused_before_it_is_made(sizes, odd_net, data_dir, tmp_path,
                                                                             capsys):
    sweep(tmp_path, odd_net, data_dir, capsys, "--sparsity", "weight", "--ks", "50", "--no-timing", "--save",
          tmp_path / "nets")
    net = torch.load(tmp_path / "nets" / "weight-50.pt", weights_only=True)
    net["sizes"] = sizes
    torch.save(net, tmp_path / "bad.pt")
    with pytest.raises(checkpoints.UserError, match="gives its net's sizes as"):
        checkpoints.load(tmp_path / "bad.pt")


def test_checkpoints_of_different_sizes_are_not_seeds_of_one_recipe(odd_net, checkpoint, data_dir, tmp_path, capsys):
    result = run_main(eval_script.main, ["--sparsity", "weight", "--checkpoint", odd_net, checkpoint, "--data-dir",
                                         data_dir, "--no-download", "--no-timing"], capsys)
    assert_fails_cleanly(result, "nets of different sizes", "784-1000-1000-500-200-10", "784-37-13-10")


def test_another_size_replaces_a_checkpoint_only_with_overwrite(checkpoint, data_dir, capsys):
    result = run_main(train.main, ["--hidden", "300,100", "--out", checkpoint, "--data-dir", data_dir,
                                   "--no-download"], capsys)
    assert_fails_cleanly(result, "another recipe (dense on mnist)", "dense 784-300-100-10 on mnist", "--overwrite")
