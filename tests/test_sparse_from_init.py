"""Sparse from the first step: the layer that holds only its kept weights, the masks found at init, SET's and RigL's
moving masks, the layers' shares (uniform, ERK), and train.py --sparse static, snip, synflow, set, rigl."""
import sys

import pytest
import torch
import torch.nn.functional as F

import checkpoints
import sparse_training
import train
import utils
from conftest import assert_fails_cleanly, import_script, needs_kernel, run_main
from model import MLP
from prune import sparsity
from sparse_training import at_init, distribution, kept, regrow
from sparse_training.kept import KeptLinear

SMALL = (40, 37, 23, 11, 10)  # odd sizes: no layer a whole number of the kernel's vectors


def kept_and_dense(shape=(37, 53), density=0.1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=generator)
    mask = torch.rand(shape, generator=generator) < density
    return KeptLinear.from_dense(weight, mask), (weight * mask).requires_grad_()


@pytest.mark.parametrize("path", ["kernel", "torch"])
@pytest.mark.parametrize("batch", [1, 13, 128])
def test_a_kept_layers_output_and_gradients_are_the_dense_ones_on_the_kept_weights(path, batch, monkeypatch):
    if path == "kernel" and kept.cpu_masked_kernel() is None:
        pytest.skip("the masked kernel does not build here")
    if path == "torch":
        monkeypatch.setattr(kept, "cpu_masked_kernel", lambda: None)
    layer, dense = kept_and_dense()
    x = torch.randn(batch, 53, requires_grad=True)
    x_dense = x.detach().clone().requires_grad_()
    grad = torch.randn(batch, 37)
    layer(x).backward(grad)
    (x_dense @ dense.T).backward(grad)
    assert torch.allclose(layer(x), x_dense @ dense.T, atol=1e-5)
    assert torch.allclose(x.grad, x_dense.grad, atol=1e-5)
    assert torch.allclose(layer.values.grad, dense.grad.flatten()[layer.positions], atol=1e-5)
    assert layer.values.numel() == int((dense != 0).sum())  # the only parameter: the kept weights


@pytest.mark.parametrize("path", ["kernel", "torch"])
def test_a_kept_layer_gives_rigl_the_dense_gradient_only_where_asked(path, monkeypatch):
    if path == "kernel" and kept.cpu_masked_kernel() is None:
        pytest.skip("the masked kernel does not build here")
    if path == "torch":
        monkeypatch.setattr(kept, "cpu_masked_kernel", lambda: None)
    layer, _ = kept_and_dense()
    x, grad = torch.randn(9, 53), torch.randn(9, 37)
    layer(x).backward(grad)
    assert layer.dense_gradient is None
    layer.want_dense_gradient = True
    layer(x).backward(grad)
    assert torch.allclose(layer.dense_gradient, grad.T @ x, atol=1e-5)


def test_a_kept_layer_turns_back_into_its_dense_weights():
    model = MLP(SMALL)
    weights = [layer.weight.detach().clone() for layer in model.hidden]
    masks = [torch.rand(w.shape) < 0.2 for w in weights]
    kept.keep_hidden(model, masks)
    assert all(isinstance(layer, KeptLinear) for layer in model.hidden)
    scores, natural = sparse_training.finish(model)
    assert scores is None and natural == pytest.approx(100 * sum(int((~m).sum()) for m in masks) /
                                                       sum(m.numel() for m in masks))
    for layer, weight, mask in zip(model.hidden, weights, masks):
        assert torch.equal(layer.weight, weight * mask)


def test_the_uniform_share_counts_as_per_layer_pruning_and_erk_keeps_the_budget_in_its_proportions():
    shapes = [(1000, 784), (1000, 1000), (500, 1000), (200, 500)]
    total = sum(a * b for a, b in shapes)
    uniform, note = distribution.kept_counts(shapes, 99)
    assert uniform == [7840, 10000, 5000, 1000] and note == ""
    erk, note = distribution.kept_counts(shapes, 99, "erk")
    assert abs(sum(erk) - round(total * 0.01)) <= len(shapes) and note == ""
    densities = [count / (a * b) for count, (a, b) in zip(erk, shapes)]
    for density, (a, b) in zip(densities, shapes):  # ∝ (n_in + n_out) / (n_in n_out), to rounding
        assert density / ((a + b) / (a * b)) == pytest.approx(densities[0] / (1784 / 784000), rel=1e-3)


def test_erk_keeps_a_layer_whole_where_its_density_would_pass_1_and_says_so():
    shapes = [(1000, 784), (1000, 1000), (500, 1000), (200, 500)]
    counts, note = distribution.kept_counts(shapes, 50, "erk")
    assert counts[3] == 200 * 500 and "hidden layer 4" in note and "kept whole" in note
    assert abs(sum(counts) - sum(a * b for a, b in shapes) // 2) <= len(shapes)
    assert all(count <= a * b for count, (a, b) in zip(counts, shapes))


@pytest.mark.parametrize("method", ["static", "snip", "synflow"])
@pytest.mark.parametrize("share", ["uniform", "erk"])
def test_masks_found_at_init_keep_exactly_their_counts_and_the_kept_weights_their_init_scaled(method, share):
    torch.manual_seed(0)
    model = MLP(SMALL)
    before = [layer.weight.detach().clone() for layer in model.hidden]
    images, labels = torch.rand(64, 40), torch.randint(0, 10, (64,))
    counts = distribution.kept_counts(sparse_training.shapes(model), 90, share)[0]
    assert sparse_training.prepare(method, model, 10, (images, labels), 16, 90, None, share) is None
    for layer, count, weight in zip(model.hidden, counts, before):
        assert isinstance(layer, KeptLinear) and len(layer.positions) == count
        mask = layer.kept()
        fan_in = mask.sum(dim=1, keepdim=True).clamp(min=1)
        assert torch.allclose(layer.dense_weight(), weight * mask * (weight.shape[1] / fan_in).sqrt())


def test_snip_keeps_the_weights_the_loss_is_most_sensitive_to():
    torch.manual_seed(0)
    model = MLP(SMALL)
    images, labels = torch.rand(16, 40), torch.randint(0, 10, (16,))
    torch.manual_seed(1)
    masks = at_init.snip_masks(model, [100] * 3, images, labels, 16, batches=1)
    torch.manual_seed(1)  # the same batch again, by hand
    batch = torch.randint(16, (16,))
    F.cross_entropy(model(images[batch]), labels[batch]).backward()
    for layer, mask in zip(model.hidden, masks):
        scores = (layer.weight.grad * layer.weight).abs()
        assert scores[mask].min() >= scores[~mask].max()


def test_synflow_keeps_what_carries_the_flow_and_never_leaves_a_layer_cut():
    torch.manual_seed(0)
    model = MLP(SMALL)
    masks = at_init.synflow_masks(model, [20, 20, 20], rounds=10)
    assert [int(m.sum()) for m in masks] == [20] * 3
    flow = torch.ones(1, 40)
    for layer, mask in zip(model.hidden, masks):
        flow = flow @ (layer.weight.detach().abs() * mask).T
    assert float(flow.sum()) > 0  # some path from input to logits survives


def train_sparse(method, steps, every, target=90, seed=0):
    """A KeptLinear net of `method` and its after_step, trained by SGD with momentum on random data."""
    torch.manual_seed(seed)
    model = MLP(SMALL)
    data = (torch.rand(64, 40), torch.randint(0, 10, (64,)))
    sparse_training.prepare(method, model, steps, data, 16, target)
    optimizer, scheduler = utils.sgd(model, 0.05, steps)
    after_step = regrow.regrowth(model, optimizer, steps, regrow.GROWTH[method], every)
    return model, data, optimizer, after_step


def dense(layer, kept_values):
    """A vector over a KeptLinear layer's kept weights, placed in its dense shape."""
    flat = torch.zeros(layer.shape[0] * layer.shape[1])
    flat[layer.positions] = kept_values.detach()
    return flat.view(layer.shape)


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_set_and_rigl_move_their_masks_only_every_delta_t_steps_keep_their_size_and_grow_at_zero(method):
    steps, every = 60, 5
    model, (images, labels), optimizer, after_step = train_sparse(method, steps, every)
    counts = [len(layer.positions) for layer in model.hidden]
    moved_at = []
    for step in range(1, steps + 1):
        masks = [layer.kept().clone() for layer in model.hidden]
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        values = [dense(layer, layer.values) for layer in model.hidden]
        momenta = [dense(layer, optimizer.state[layer.values]["momentum_buffer"]) for layer in model.hidden]
        after_step()
        if any(not torch.equal(m, layer.kept()) for m, layer in zip(masks, model.hidden)):
            moved_at.append(step)
        share = regrow.drop_share(step, steps) if step % every == 0 else 0.0
        for layer, mask, value, momentum, count in zip(model.hidden, masks, values, momenta, counts):
            assert len(layer.positions) == count and int(layer.kept().sum()) == count  # exact sparsity every step
            # the survivors: all but the round(share · count) kept weights of the smallest |w|
            order = value[mask].abs().argsort(stable=True)
            survivors = torch.zeros(int(mask.sum()), dtype=torch.bool)
            survivors[order[round(share * count):]] = True
            survived = torch.zeros_like(mask)
            survived[mask] = survivors
            now_values = dense(layer, layer.values)
            now_momenta = dense(layer, optimizer.state[layer.values]["momentum_buffer"])
            assert layer.kept()[survived].all()
            assert torch.equal(now_values[survived], value[survived])  # they keep their values
            assert torch.equal(now_momenta[survived], momentum[survived])  # and their momentum
            grown = layer.kept() & ~survived
            assert int(grown.sum()) == count - int(survived.sum())
            assert int(now_values[grown].count_nonzero()) == 0  # a grown weight starts at zero
            assert int(now_momenta[grown].count_nonzero()) == 0  # its momentum cleared
    end = regrow.REGROW_END * steps
    assert moved_at and all(step % every == 0 and step < end for step in moved_at)
    assert after_step.regrown > 0


def test_rigl_grows_where_the_dense_gradient_is_largest():
    model, (images, labels), optimizer, after_step = train_sparse("rigl", 100, 1)
    layer = model.hidden[1]
    before = layer.kept().clone()
    optimizer.zero_grad()
    F.cross_entropy(model(images), labels).backward()
    gradient = layer.dense_gradient.abs().clone()  # asked for on every step, as every = 1
    optimizer.step()
    after_step()
    grown = layer.kept() & ~before
    free_not_grown = ~layer.kept()
    assert grown.any() and gradient[grown].min() >= gradient[free_not_grown & ~before].max()


def test_the_drop_share_anneals_from_alpha_to_zero_on_a_cosine():
    assert regrow.drop_share(0, 1000) == pytest.approx(regrow.REGROW_ALPHA)
    assert regrow.drop_share(375, 1000) == pytest.approx(regrow.REGROW_ALPHA / 2)
    assert regrow.drop_share(750, 1000) == 0 and regrow.drop_share(999, 1000) == 0


@needs_kernel("masked")
@pytest.mark.parametrize("method", ["static", "rigl"])
def test_train_sparse_from_init_saves_a_plain_checkpoint_at_its_target_that_loads(method, data_dir, tmp_path, capsys):
    out = tmp_path / f"{method}.pt"
    result = run_main(train.main, ["--sparse", method, "--target", "95", "--distribution", "erk", "--epochs", "2",
                                   "--data-dir", data_dir, "--no-download", "--out", out, "--logdir",
                                   tmp_path / "runs"], capsys)
    assert result.returncode == 0, result.stderr
    model, checkpoint = checkpoints.load(out)
    config = checkpoint["config"]
    assert config["sparse"] == method and config["distribution"] == "erk" and config["target"] == 95
    assert ("regrown" in config) == (method == "rigl")
    counts = distribution.kept_counts(sparse_training.shapes(model), 95, "erk")[0]
    for layer, count in zip(model.hidden, counts):  # at most the kept count: a weight may also train to zero
        assert int(layer.weight.count_nonzero()) <= count
    total = sum(layer.weight.numel() for layer in model.hidden)
    assert checkpoint["natural_sparsity"] == pytest.approx(100 * (1 - sum(counts) / total))  # the mask's, exactly
    assert sparsity(model)["sparsity"] >= checkpoint["natural_sparsity"]


@pytest.mark.parametrize("flags, words", [
    (["--sparse", "rigl"], "--sparse rigl needs --target"),
    (["--sparse", "set", "--target", "100"], "expected a percentage from 0 to below 100, got '100'"),
    (["--sparse", "snip", "--target", "0"], "--target 0 keeps every weight"),
    (["--distribution", "erk"], "the dense net has none"),
    (["--sparse", "vd", "--distribution", "uniform"], "--sparse vd decides each layer's sparsity itself"),
    (["--sparse", "gmp-global", "--target", "99", "--distribution", "erk"], "--sparse gmp-global decides"),
    (["--sparse", "vd", "--target", "99"], "--sparse vd finds its own"),
    (["--sparse", "rigl", "--target", "99", "--distribution", "normal"], "invalid choice: 'normal'"),
])
def test_a_bad_flag_of_the_methods_sparse_from_init_is_one_line_before_any_training(flags, words, tmp_path, capsys):
    result = run_main(train.main, [*flags, "--out", tmp_path / "x.pt", "--logdir", tmp_path / "runs"], capsys)
    assert_fails_cleanly(result, words)
    assert not any(tmp_path.iterdir())


def test_an_erk_target_a_layer_cannot_hold_is_trained_with_a_note(data_dir, tmp_path, capsys):
    result = run_main(train.main, ["--sparse", "static", "--target", "10", "--distribution", "erk", "--epochs", "1",
                                   "--hidden", "300,100", "--data-dir", data_dir, "--no-download", "--out",
                                   tmp_path / "x.pt", "--logdir", tmp_path / "runs"], capsys)
    assert result.returncode == 0, result.stderr
    assert "note: ERK at 10 % would give hidden layer" in result.stdout and "kept whole" in result.stdout


@pytest.mark.parametrize("script, module, words", [
    ("benchmarks/peer_sparseprop.py", "sparseprop", "SparseProp is not installed"),
    ("benchmarks/peer_rigl.py", "rigl_torch", "rigl-torch is not installed"),
])
def test_a_peer_that_is_not_installed_is_one_line(script, module, words, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # an import of it raises ImportError, as where it is missing
    if module == "rigl_torch":
        monkeypatch.setitem(sys.modules, "rigl_torch.RigL", None)
    result = run_main(import_script(script).main, ["--out", tmp_path / "x.json"], capsys)
    assert_fails_cleanly(result, words)
    assert not any(tmp_path.iterdir())


@needs_kernel("masked")
def test_the_sparseprop_comparison_checks_both_sides_against_dense_and_tables_every_layer(tmp_path, capsys):
    pytest.importorskip("sparseprop")
    peer = import_script("benchmarks/peer_sparseprop.py")
    rows = peer.measure([95], batch=16, rounds=1)
    assert [row["layer"] for row in rows] == ["784→1000", "1000→1000", "1000→500", "500→200"]
    assert all(len(row[side]) == 1 and row[side][0] > 0 for row in rows for side in ("dense", "this repo", "SparseProp"))
    text = peer.table({1: rows}, 16)
    assert text.count("| 95 % | 1 |") == 4


def test_the_sparseprop_comparison_refuses_a_side_that_differs_from_dense():
    peer = import_script("benchmarks/peer_sparseprop.py")
    layers = {"dense": torch.nn.Linear(4, 3, bias=False), "this repo": torch.nn.Linear(4, 3, bias=False)}
    with pytest.raises(utils.UserError, match="this repo's products differ from the dense ones"):
        peer.check(layers, torch.randn(2, 4), torch.randn(2, 3))
