"""The model, the data loading, evaluate() and train.py."""
import numpy
import pytest
import torch

import train
import data
import checkpoints
import utils
from conftest import assert_fails_cleanly, import_script, run_main, run_script, write_dataset
from model import MLP


def test_model_has_the_layer_shapes_and_no_biases():
    model = MLP()
    assert [tuple(layer.weight.shape) for layer in model.layers] == [
        (1000, 784), (1000, 1000), (500, 1000), (200, 500), (10, 200)]
    assert all(layer.bias is None for layer in model.layers)
    assert sum(p.numel() for p in model.parameters()) == 2_386_000
    assert list(model.hidden) == list(model.layers)[:-1]
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("layout", ["torchvision", "flat"])
def test_load_data_reads_the_idx_files(tmp_path, dataset, gz, layout):
    class_name, mean, std = data.DATASETS[dataset]
    folder = tmp_path / class_name / "raw" if layout == "torchvision" else tmp_path
    written = write_dataset(folder, gz=gz)
    for split in ("train", "test"):
        images, labels = data.load_data(dataset, tmp_path, split, download=False)
        raw_images, raw_labels = written[split]
        assert images.shape == (len(raw_labels), 784) and images.dtype == torch.float32
        assert torch.allclose(images, (raw_images.reshape(-1, 784).float() / 255 - mean) / std)
        assert torch.equal(labels, raw_labels.long())


def test_evaluate_gives_the_exact_accuracy():
    model = MLP(sizes=(784, 10))  # one layer: the logit of class c is pixel c
    with torch.no_grad():
        model.layers[0].weight.zero_()
        model.layers[0].weight[:, :10] = torch.eye(10)
    labels = torch.arange(8)
    images = torch.zeros(8, 784)
    images[labels, labels] = 1.0
    images[6, 6], images[6, 9] = 0.0, 1.0  # two images that point to the wrong class
    images[7, 7], images[7, 2] = 0.0, 1.0
    assert utils.evaluate(model, (images, labels), batch_size=3) == 75.0


def test_train_saves_a_checkpoint_that_reloads_to_its_accuracy(tmp_path, data_dir):
    result = run_script("train.py", "--epochs", 2, "--batch-size", 32, "--data-dir", data_dir, "--no-download",
                        "--out", "model.pt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "epoch   2/2" in result.stdout and "saved model.pt" in result.stdout
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert checkpoint["config"]["epochs"] == 2 and checkpoint["config"]["dataset"] == "mnist"
    model, _ = checkpoints.load(tmp_path / "model.pt")
    test_data = data.load_data("mnist", data_dir, "test", download=False)
    assert utils.evaluate(model, test_data) == checkpoint["accuracy"]
    assert checkpoint["accuracy"] > 50  # the patches are easy: two epochs learn them
    assert list((tmp_path / "runs").glob("*/train-*/events.out.tfevents.*"))  # under the net's name
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_same_seed_gives_the_same_weights(tmp_path, data_dir, capsys):
    def train_with(seed, name):
        result = run_main(train.main, ["--epochs", 1, "--batch-size", 32, "--data-dir", data_dir, "--no-download",
                                       "--seed", seed, "--out", tmp_path / name, "--logdir", tmp_path / "runs"], capsys)
        assert result.returncode == 0, result.stderr
        return torch.load(tmp_path / name, weights_only=True)

    first, again, other = train_with(7, "a.pt"), train_with(7, "b.pt"), train_with(8, "c.pt")
    assert first["accuracy"] == again["accuracy"]
    for name, weight in first["state_dict"].items():
        assert torch.equal(weight, again["state_dict"][name])
    assert not torch.equal(first["state_dict"]["layers.0.weight"], other["state_dict"]["layers.0.weight"])


def test_a_diverging_loss_stops_with_a_clear_message(tmp_path, data_dir, capsys):
    result = run_main(train.main, ["--epochs", 2, "--lr", 1e30, "--data-dir", data_dir, "--no-download",
                                   "--out", tmp_path / "m.pt", "--logdir", tmp_path / "runs"], capsys)
    assert_fails_cleanly(result, "training loss became", "--lr")
    assert not (tmp_path / "m.pt").exists()


def test_l1_pulls_the_hidden_weights_towards_zero(tmp_path, data_dir, capsys):
    def hidden_magnitude(l1):
        out = tmp_path / f"l1-{l1}.pt"
        result = run_main(train.main, ["--epochs", 1, "--batch-size", 32, "--l1", l1, "--data-dir", data_dir,
                                       "--no-download", "--out", out, "--logdir", tmp_path / "runs"], capsys)
        assert result.returncode == 0, result.stderr
        state = torch.load(out, weights_only=True)["state_dict"]
        return sum(state[f"layers.{i}.weight"].abs().sum() for i in range(4))

    # Same seed, so without the L1 term the two runs would give identical weights.
    assert hidden_magnitude(1e-3) < 0.97 * hidden_magnitude(0)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("layout", ["torchvision", "flat"])
def test_the_textbook_loop_reads_the_idx_files_train_py_reads(gz, layout, tmp_path):
    """benchmarks/train_epoch.py's torchvision dataset, from the files as data.py finds them (an offline
    Fashion-MNIST is .gz files in a flat folder), leaving the data folder as it was."""
    folder = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    images, labels = write_dataset(folder, gz=gz)["train"]
    before = sorted(tmp_path.rglob("*"))
    textbook = import_script("benchmarks/train_epoch.py").textbook_dataset("fashion-mnist", tmp_path, None)
    assert len(textbook) == len(labels)
    image, label = textbook[7]
    assert label == labels[7] and torch.equal(torch.tensor(numpy.array(image)).long(), images[7].long())
    assert sorted(tmp_path.rglob("*")) == before


def test_the_textbook_loop_without_the_test_files_is_one_line(tmp_path):
    write_dataset(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(utils.UserError, match="no t10k-labels-idx1-ubyte .* needs all four IDX files"):
        import_script("benchmarks/train_epoch.py").textbook_dataset("fashion-mnist", tmp_path, None)


def test_the_step_products_count_what_a_training_step_multiplies():
    """benchmarks/train_epoch.py's count of a step's matrix products, against torch's own flop counter on a real
    forward and backward pass (which takes no gradient for the images), and its products on matrices of those shapes."""
    from torch.utils.flop_counter import FlopCounterMode

    model = MLP((12, 9, 7, 5, 3))
    products, flops = import_script("benchmarks/train_epoch.py").step_products(model, 6)
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(6, 12)).sum().backward()
    assert flops == counter.get_total_flops() == 2 * 6 * (2 * 12 * 9 + 3 * (9 * 7 + 7 * 5 + 5 * 3))
    with FlopCounterMode(display=False) as counter:
        products()
    assert counter.get_total_flops() == flops


def test_the_fused_optimizer_takes_the_loops_steps():
    """utils.sgd's fused SGD changes the cost of a step, not the numbers: on the MLP's layers (whole vectors) the
    loop's weights to the bit, and on a tensor with elements past its last whole vector, the same to rounding."""
    batches = [(torch.randn(16, 784), torch.randint(0, 10, (16,))) for _ in range(5)]
    trained = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = MLP()
        model.odd = torch.nn.Parameter(torch.randn(7, 13))  # 91 elements: 3 past the last vector of 8 or 16
        optimizer, scheduler = utils.sgd(model, 0.05, steps=10, weight_decay=5e-4)
        if not fused:
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
        assert bool(optimizer.defaults["fused"]) is fused
        first = model.layers[0].weight.detach().clone()
        for images, labels in batches * 2:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(images), labels) + (model.odd ** 2).sum()
            loss.backward()
            optimizer.step()
            scheduler.step()
        trained.append(model.state_dict())
    assert all(torch.equal(trained[0][name], trained[1][name]) for name in trained[0] if name != "odd")
    torch.testing.assert_close(trained[0]["odd"], trained[1]["odd"], rtol=1e-6, atol=1e-7)
    assert not torch.equal(trained[0]["layers.0.weight"], first)  # they trained


# --out: named after the recipe by default, and a checkpoint of another recipe is replaced only with --overwrite

def train_here(data_dir, capsys, *flags):
    """train.py in the test's folder (the current one), one short epoch."""
    return run_main(train.main, ["--epochs", 1, "--batch-size", 64, "--data-dir", data_dir, "--no-download", *flags],
                    capsys)


@pytest.mark.parametrize("flags, name", [([], "model.pt"), (["--sparse", "gmp", "--target", "99"], "gmp-99.pt"),
                                         (["--sparse", "gmp-global", "--target", "99.8"], "gmp-global-99.8.pt"),
                                         (["--sparse", "vd"], "vd.pt"), (["--sparse", "l0-unit"], "l0-unit.pt"),
                                         (["--sparse", "rigl", "--target", "99"], "rigl-99.pt"),
                                         (["--sparse", "set", "--target", "99", "--distribution", "erk"], "set-99-erk.pt")])
def test_the_default_out_names_the_recipe(flags, name):
    assert train.parse_args(flags).out == name


def test_a_sparse_recipe_leaves_the_dense_model_alone(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train_here(data_dir, capsys).returncode == 0
    dense = (tmp_path / "model.pt").read_bytes()
    result = train_here(data_dir, capsys, "--sparse", "gmp", "--target", "90")
    assert result.returncode == 0, result.stderr
    assert "saved gmp-90.pt" in result.stdout
    assert (tmp_path / "model.pt").read_bytes() == dense


@pytest.mark.parametrize("flags, held", [(["--sparse", "gmp", "--target", "90", "--out", "model.pt"], "dense on mnist"),
                                         (["--dataset", "fashion-mnist"], "dense on mnist")],
                         ids=["another method", "another data set"])
def test_another_recipe_replaces_a_checkpoint_only_with_overwrite(flags, held, tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "data"  # both data sets, in a folder of the test's own
    for name in ("MNIST", "FashionMNIST"):
        write_dataset(data_dir / name / "raw")
    assert train_here(data_dir, capsys).returncode == 0
    before = (tmp_path / "model.pt").read_bytes()
    result = train_here(data_dir, capsys, *flags)
    assert_fails_cleanly(result, "model.pt holds a checkpoint of another recipe", f"({held})", "--overwrite")
    assert "epoch" not in result.stdout  # refused before any training
    assert (tmp_path / "model.pt").read_bytes() == before
    result = train_here(data_dir, capsys, *flags, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "model.pt").read_bytes() != before


def test_a_rerun_of_the_same_recipe_replaces_its_checkpoint(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train_here(data_dir, capsys, "--seed", 1).returncode == 0
    before = (tmp_path / "model.pt").read_bytes()
    assert train_here(data_dir, capsys, "--seed", 2).returncode == 0
    assert (tmp_path / "model.pt").read_bytes() != before


def test_a_checkpoint_from_before_distributions_is_the_uniform_recipe_and_erk_another():
    old = {"sparse": "gmp", "target": 99.0}  # a config saved before --distribution existed
    assert train.recipe(old) == train.recipe(vars(train.parse_args(["--sparse", "gmp", "--target", "99"])))
    assert train.recipe(old) != train.recipe(vars(train.parse_args(["--sparse", "gmp", "--target", "99",
                                                                     "--distribution", "erk"])))
    assert train.recipe({"sparse": "vd"}) == train.recipe(vars(train.parse_args(["--sparse", "vd"])))


def test_a_file_that_is_not_a_checkpoint_is_replaced_only_with_overwrite(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.pt").write_text("my notes")
    result = train_here(data_dir, capsys)
    assert_fails_cleanly(result, "model.pt holds a file that is not a checkpoint train.py saved", "--overwrite")
    assert (tmp_path / "model.pt").read_text() == "my notes"
