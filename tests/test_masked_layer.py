"""sparse_training/masked.py: a pruned layer's products over its kept weights, in the forward pass and both gradients, equal to
the dense ones of the masked weights, on every build of masked_kernel.c, and without one."""

import pytest
import torch
import torch.nn.functional as F

from sparse_training import kept, masked as masked_layer
from sparse_training.masked import MaskedLinear, SPARSE_FROM
from model import MLP
from prune import apply_masks, masks as prune_masks
from retrain import retrain
from conftest import kernel_build, needs_kernel
from test_speed import BATCHES, BUILDS


def layer_and_reference(pruned, seed=0, shape=(300, 200)):
    """A MaskedLinear of random weights, `pruned` of them zero by its mask, and the same weights for F.linear."""
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.rand(shape, generator=generator) >= pruned).float()
    weight = torch.randn(shape, generator=generator) * mask
    masked = torch.nn.Parameter(weight.clone())
    return MaskedLinear(masked, mask), torch.nn.Parameter(weight.clone()), mask


def products(layer, weight, batch, seed=1):
    """(output, input's gradient, weights' gradient) through `layer` and through F.linear with `weight`, for a loss
    that weighs every output differently, after a ReLU, as the MLP has one."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, weight.shape[1], generator=generator)
    scale = torch.randn(weight.shape[0], generator=generator)
    got = []
    for forward, w in ((layer, layer.weight), (lambda x: F.linear(x, weight), weight)):
        x_ = x.clone().requires_grad_()
        y = torch.relu(forward(x_))
        (y * scale).sum().backward()
        got.append((y.detach(), x_.grad, w.grad))
    return got


def use_build(build, monkeypatch):
    library = kernel_build("masked", build)
    monkeypatch.setattr(masked_layer, "cpu_masked_kernel", lambda: library)


@needs_kernel("masked")
@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("pruned", [0.8, 0.95, 0.995])
def test_the_kernel_gives_the_dense_products_of_the_masked_weights_at_every_batch(build, pruned, monkeypatch):
    use_build(build, monkeypatch)
    for batch in BATCHES:
        layer, weight, mask = layer_and_reference(pruned, seed=batch)
        (y, grad_x, grad_w), (y_ref, grad_x_ref, grad_w_ref) = products(layer, weight, batch)
        assert layer.lists is not None  # the kernel ran
        torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(grad_x, grad_x_ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(grad_w[mask == 1], grad_w_ref[mask == 1], rtol=1e-4, atol=1e-4)
        assert int(grad_w[mask == 0].count_nonzero()) == 0  # exactly zero where pruned


@needs_kernel("masked")
def test_rows_and_columns_without_a_kept_weight_give_zeros():
    layer, weight, mask = layer_and_reference(0.9)
    with torch.no_grad():
        for tensor in (layer.weight, weight, layer.weight_mask):
            tensor[:50] = 0
            tensor[:, -30:] = 0
    (y, grad_x, grad_w), (y_ref, grad_x_ref, _) = products(layer, weight, 64)
    assert layer.lists is not None
    assert int(y[:, :50].count_nonzero()) == 0 and int(grad_x[:, -30:].count_nonzero()) == 0
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_x, grad_x_ref, rtol=1e-4, atol=1e-4)
    assert int(grad_w[:50].count_nonzero()) == 0


def test_a_mask_that_keeps_most_weights_gives_the_dense_products_exactly():
    layer, weight, mask = layer_and_reference(SPARSE_FROM / 2)
    (y, grad_x, grad_w), (y_ref, grad_x_ref, grad_w_ref) = products(layer, weight, 100)
    assert layer.lists is None
    assert torch.equal(y, y_ref) and torch.equal(grad_x, grad_x_ref) and torch.equal(grad_w, grad_w_ref)


def test_without_a_compiler_the_layer_is_a_plain_linear(monkeypatch):
    monkeypatch.setattr(masked_layer, "cpu_masked_kernel", lambda: None)
    layer, weight, mask = layer_and_reference(0.95)
    (y, grad_x, grad_w), (y_ref, grad_x_ref, grad_w_ref) = products(layer, weight, 100)
    assert torch.equal(y, y_ref) and torch.equal(grad_x, grad_x_ref) and torch.equal(grad_w, grad_w_ref)


@needs_kernel("masked")
def test_a_mask_changed_in_place_takes_effect_at_the_next_call():
    layer, weight, mask = layer_and_reference(0.9)
    products(layer, weight, 32)
    first = layer.lists
    with torch.no_grad():
        more = torch.rand(mask.shape, generator=torch.Generator().manual_seed(5)) < 0.5
        for tensor in (layer.weight_mask, layer.weight, weight):
            tensor[more] = 0
    layer.weight.grad = weight.grad = None
    (y, _, grad_w), (y_ref, _, _) = products(layer, weight, 32)
    assert layer.lists is not first
    assert int(layer.lists[0][2].numel()) == int(layer.weight_mask.count_nonzero())
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    assert int(grad_w[layer.weight_mask == 0].count_nonzero()) == 0


@needs_kernel("masked")
def test_retraining_through_the_kernel_reaches_the_weights_of_dense_products(monkeypatch):
    """Three epochs of fine-tuning a net pruned to 95 % (every hidden layer a KeptLinear, through the kernel) against
    the same without the kernel (dense products of the scattered weights): the same weights, up to the rounding of
    sums taken in another order."""
    torch.manual_seed(0)
    model = MLP()
    images, labels = torch.randn(96, 1, 28, 28), torch.randint(0, 10, (96,))
    trained, calls, product = [], [], masked_layer.MaskedProduct.apply
    monkeypatch.setattr(masked_layer.MaskedProduct, "apply", lambda *args: calls.append(1) or product(*args))
    for kernel in (kept.cpu_masked_kernel(), None):
        monkeypatch.setattr(kept, "cpu_masked_kernel", lambda: kernel)
        pruned = apply_masks(model, prune_masks(model, "weight", 95))
        retrain(pruned, (images, labels), epochs=3, lr=0.05, batch_size=32, seed=0, l1=1e-4)
        trained.append(pruned)
        assert len(calls) == (4 * 3 * 3 if kernel else 0)  # each hidden layer, each step of 3 epochs of 3 steps
        calls.clear()
    for a, b in zip(trained[0].layers, trained[1].layers):
        torch.testing.assert_close(a.weight, b.weight, rtol=1e-4, atol=1e-6)
    for layer in trained[0].hidden:
        assert int(layer.weight[layer.weight_mask == 0].count_nonzero()) == 0
    assert not torch.equal(trained[0].layers[0].weight, model.layers[0].weight * trained[0].layers[0].weight_mask)
