"""The pruning methods, the masks they make, fine-tuning with a mask held, and measured sparsity."""
import copy

import pytest
import torch

import data
import checkpoints
import utils
from model import MLP
import prune as prune_module
from prune import METHODS, mask_smallest, prune, sparsity
from fastpath.compact import live_units
from retrain import retrain

SHAPES = [(784, 1000, 1000, 500, 200, 10), (7, 13, 5, 3), (30, 1, 9, 4)]
KS = [0, 1, 25, 50, 63, 90, 99]


def random_model(sizes, seed=0):
    torch.manual_seed(seed)
    return MLP(sizes)


def pruned_out(model):
    """Which weights of each hidden layer a pruned copy holds at zero."""
    return [layer.weight_mask == 0 for layer in model.hidden]


def test_ties_go_to_the_lower_index():
    scores = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 2.0])
    assert mask_smallest(scores, 3).tolist() == [0, 0, 1, 0, 1, 1]
    assert mask_smallest(scores, 0).tolist() == [1] * 6


def stable_sort_mask(scores, n):  # mask_smallest's definition, by the sort it avoids
    mask = torch.ones(scores.numel())
    mask[scores.flatten().argsort(stable=True)[:n]] = 0
    return mask.view_as(scores)


@pytest.mark.parametrize("values", [
    [0.3, -1.0, 2.5, 0.7, 1.1],  # distinct
    [1.0, 0.0, 1.0, 0.0, 1.0, 2.0, 0.0, 1.0],  # ties, on either side of the cut
    [0.0, -0.0, 1.0, -0.0, 0.0, 2.0],  # -0.0 and 0.0 are equal, so the order among them is by index
    [float("inf"), 1.0, float("-inf"), float("inf"), 1.0, float("-inf")],
    [float("nan"), 1.0, 0.0, float("nan"), 0.5, 0.0],  # a sort puts NaN last
], ids=["distinct", "ties", "signed zeros", "infinities", "nan"])
def test_the_mask_is_the_one_a_stable_sort_gives_for_every_count(values):
    scores = torch.tensor(values).repeat(3).view(3, -1)
    for n in range(scores.numel() + 2):
        assert torch.equal(mask_smallest(scores, n), stable_sort_mask(scores, n)), n


# The per-layer magnitude rules prune groups of weights as a whole: (score of each group, which groups are gone).
GROUPS = {
    "weight": lambda before, after: (before.abs(), after == 0),
    "unit": lambda before, after: (before.norm(dim=1), (after == 0).all(dim=1)),
}


@pytest.mark.parametrize("sizes", SHAPES, ids=str)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("method", GROUPS)
def test_a_per_layer_method_zeroes_exactly_k_percent_of_each_layer_the_smallest_first(method, sizes, k):
    model = random_model(sizes)
    pruned = prune(model, method, k)
    for before, after in zip(model.hidden, pruned.hidden):
        scores, gone = GROUPS[method](before.weight, after.weight)
        assert gone.sum() == round(k / 100 * gone.numel())
        weights_per_group = before.weight.numel() // gone.numel()
        assert (after.weight == 0).sum() == gone.sum() * weights_per_group  # nothing outside the pruned groups
        kept = after.weight != 0
        assert torch.equal(after.weight[kept], before.weight[kept])  # survivors untouched
        if 0 < gone.sum() < gone.numel():
            assert scores[gone].max() <= scores[~gone].min()


def test_unit_pruning_removes_the_rows_with_the_smallest_l2_norm_not_l1():
    model = MLP((3, 4, 2))
    with torch.no_grad():
        # L2 norms 2.0, 1.73, 3.0, 2.24; L1 norms 2, 3, 3, 3: by L2 the second row goes first, by L1 the first.
        model.layers[0].weight.copy_(torch.tensor([[2.0, 0, 0], [1, 1, 1], [3, 0, 0], [2, 1, 0]]))
    assert (prune(model, "unit", 25).layers[0].weight == 0).all(dim=1).tolist() == [False, True, False, False]
    assert (prune(model, "unit", 50).layers[0].weight == 0).all(dim=1).tolist() == [True, True, False, False]


@pytest.mark.parametrize("sizes", SHAPES, ids=str)
@pytest.mark.parametrize("k", KS)
def test_global_pruning_zeroes_k_percent_of_all_hidden_weights_the_smallest_across_layers(sizes, k):
    model = random_model(sizes)
    pruned = prune(model, "global", k)
    gone = torch.cat([mask.flatten() for mask in pruned_out(pruned)])
    magnitudes = torch.cat([layer.weight.detach().abs().flatten() for layer in model.hidden])
    assert gone.sum() == round(k / 100 * len(gone))
    if 0 < gone.sum() < len(gone):
        assert magnitudes[gone].max() <= magnitudes[~gone].min()
    for before, after in zip(model.hidden, pruned.hidden):
        kept = after.weight_mask == 1
        assert torch.equal(after.weight[kept], before.weight[kept])
        assert torch.all(after.weight[~kept] == 0)


def test_global_pruning_gives_each_layer_the_sparsity_its_magnitudes_earn():
    model = MLP((4, 10, 10, 2))
    with torch.no_grad():
        model.layers[0].weight.fill_(1.0)
        model.layers[1].weight.fill_(0.1)  # every weight of layer 2 is smaller than any of layer 1
    pruned_per_layer = [int(gone.sum()) for gone in pruned_out(prune(model, "global", 80))]
    assert pruned_per_layer == [12, 100]  # 112 of 140: all 100 of layer 2, then 12 of layer 1's 40


@pytest.mark.parametrize("sizes", SHAPES, ids=str)
@pytest.mark.parametrize("k", KS)
def test_random_pruning_zeroes_exactly_k_percent_of_each_layer(sizes, k):
    model = random_model(sizes)
    for layer, gone in zip(model.hidden, pruned_out(prune(model, "random", k, seed=3))):
        assert gone.sum() == round(k / 100 * layer.weight.numel())


def test_random_pruning_is_fixed_by_the_seed():
    model = random_model(SHAPES[1])
    def masks(seed):
        return pruned_out(prune(model, "random", 50, seed))
    assert all(torch.equal(a, b) for a, b in zip(masks(1), masks(1)))
    assert not all(torch.equal(a, b) for a, b in zip(masks(1), masks(2)))


def test_random_pruning_leaves_torchs_own_random_numbers_alone():
    model = random_model(SHAPES[1])
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    prune(model, "random", 50, seed=9)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("method", METHODS)
def test_k_zero_leaves_the_weights_unchanged_and_no_method_touches_the_logits_layer(method):
    model = random_model(SHAPES[1])
    for before, after in zip(model.layers, prune(model, method, 0).layers):
        assert torch.equal(before.weight, after.weight)
    for k in (50, 99):
        pruned = prune(model, method, k)
        assert torch.equal(pruned.layers[-1].weight, model.layers[-1].weight)
        assert not hasattr(pruned.layers[-1], "weight_mask")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("tied", [False, True], ids=["distinct", "tied"])
def test_a_weight_pruned_at_k_stays_pruned_at_every_larger_k(method, tied):
    model = random_model((50, 40, 30, 5))
    if tied:  # few distinct magnitudes and row norms: the order among equals decides
        with torch.no_grad():
            for layer in model.hidden:
                layer.weight.copy_(torch.randint(-2, 3, layer.weight.shape).float())
                layer.weight[::2] = 1.0
    previous = None
    for k in range(0, 100, 3):
        pruned_now = torch.cat([gone.flatten() for gone in pruned_out(prune(model, method, k, seed=4))])
        if previous is not None:
            assert not (previous & ~pruned_now).any(), f"k={k} revived weights pruned at a smaller k"
            assert pruned_now.sum() >= previous.sum()
        previous = pruned_now


def test_sparsity_reports_the_hidden_layers_the_whole_net_and_each_hidden_layer():
    model = MLP((4, 10, 5, 2))  # 40 + 50 hidden weights, 10 in the logits layer
    with torch.no_grad():
        model.layers[0].weight.fill_(1.0)
        model.layers[1].weight.fill_(1.0)
        model.layers[1].weight[:2] = 0.0  # 20 zeros
        model.layers[2].weight.fill_(0.0)  # 10 zeros, in the logits layer
    assert sparsity(model) == {"sparsity": pytest.approx(100 * 20 / 90), "total_sparsity": pytest.approx(30.0),
                               "sparsity_layer1": 0.0, "sparsity_layer2": pytest.approx(40.0)}


# Fine-tuning: the mask holds, the survivors learn.

def test_masks_held_in_place_train_to_the_weights_torchs_prune_hooks_train_to():
    torch.manual_seed(0)
    images, labels = torch.randn(96, 20), torch.randint(0, 3, (96,))
    model = MLP((20, 16, 12, 3))
    masks = prune_module.masks(model, "weight", 60)
    hooked, held = prune_module.apply_masks(model, masks), copy.deepcopy(model)
    zero_pruned = prune_module.hold_at_zero(held.hidden, masks)
    for net, after_step in ((hooked, None), (held, zero_pruned)):
        optimizer, scheduler = utils.sgd(net, 0.1, 3 * 6, weight_decay=1e-3)
        order = torch.Generator().manual_seed(0)
        for _ in range(3):
            utils.train_epoch(net, (images, labels), optimizer, 16, order, scheduler, l1=1e-3, after_step=after_step)
    for a, b, before in zip(hooked.layers, held.layers, model.layers):
        weight = a.weight_orig * a.weight_mask if hasattr(a, "weight_mask") else a.weight  # .weight: the last forward's
        assert torch.equal(weight, b.weight)  # kept and pruned alike (as floats: 0.0 equals -0.0)
        assert not torch.equal(b.weight, before.weight)  # both trained
    for layer, mask in zip(held.hidden, masks):
        assert int(layer.weight[mask == 0].count_nonzero()) == 0 and int((mask == 0).sum()) > 0

@pytest.fixture
def splits(data_dir):
    return (data.load_data("mnist", data_dir, "train", download=False),
            data.load_data("mnist", data_dir, "test", download=False))


@pytest.mark.parametrize("method, k", [("weight", 50), ("weight", 95), ("unit", 80), ("global", 90), ("random", 90)])
def test_finetuning_keeps_every_pruned_weight_at_zero_and_trains_the_rest(method, k, checkpoint, splits):
    train_data, _ = splits
    model, _ = checkpoints.load(checkpoint)
    pruned = prune(model, method, k)
    before = [layer.weight.detach().clone() for layer in pruned.layers]
    sparsity_before = sparsity(pruned)
    retrain(pruned, train_data, epochs=2, lr=0.05, batch_size=32, seed=0)
    for layer, old in zip(pruned.hidden, before):
        gone = layer.weight_mask == 0
        assert gone.sum() > 0
        assert torch.all(layer.weight[gone] == 0)  # exactly zero, not small
        assert not torch.equal(layer.weight[~gone], old[~gone])  # the survivors were trained
    assert not torch.equal(pruned.layers[-1].weight, before[-1])  # the logits layer is trained, never pruned
    assert sparsity(pruned) == sparsity_before


def test_finetuning_improves_a_heavily_pruned_net(checkpoint, splits):
    train_data, test_data = splits
    model, _ = checkpoints.load(checkpoint)
    pruned = prune(model, "unit", 90)
    one_shot = utils.evaluate(pruned, test_data)
    retrain(pruned, train_data, epochs=3, lr=0.05, batch_size=32, seed=0)
    assert utils.evaluate(pruned, test_data) > one_shot


@pytest.mark.parametrize("method, k", [("unit", 80), ("weight", 99), ("global", 95)])
def test_retraining_the_live_units_alone_trains_what_the_whole_masked_net_would(method, k, checkpoint, splits):
    train_data, (test_images, _) = splits
    model, _ = checkpoints.load(checkpoint)
    pruned = prune(model, method, k)
    rows, columns = live_units([*(layer.weight_mask for layer in pruned.hidden), pruned.layers[-1].weight])
    assert sum(map(len, rows)) < sum(layer.out_features for layer in pruned.layers)  # some units are left out
    whole = prune(model, method, k)  # every unit trained, as a masked net trains without retrain's compaction
    optimizer, scheduler = utils.sgd(whole, 0.05, 2 * -(-len(train_data[1]) // 32))
    order = torch.Generator().manual_seed(0)
    for _ in range(2):
        utils.train_epoch(whole, train_data, optimizer, 32, order, scheduler, l1=3e-5)
    retrain(pruned, train_data, epochs=2, lr=0.05, batch_size=32, seed=0, l1=3e-5)
    with torch.no_grad():
        torch.testing.assert_close(pruned(test_images), whole(test_images), rtol=1e-4, atol=1e-4)
    for layer, reference, r, c in zip(pruned.layers, whole.layers, rows, columns):
        torch.testing.assert_close(layer.weight[r][:, c], reference.weight[r][:, c], rtol=1e-4, atol=1e-5)
    for layer, r, c in zip(pruned.hidden, rows, columns):
        dead = torch.ones(layer.out_features, dtype=torch.bool)
        dead[r] = False
        assert torch.all(layer.weight[dead][:, c] == 0)  # exactly: what makes them dead
