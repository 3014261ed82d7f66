"""fastpath/compact.py: a pruned net without its dead units is a smaller dense net with the same outputs."""
import torch

import checkpoints
import data
import utils
from fastpath.compact import compact
from fastpath.paths import dense_forward, transposed
from prune import prune
from test_speed import pruned_weights


def test_compact_at_k_zero_keeps_every_shape():
    _, weights = pruned_weights("unit", 0)
    assert [w.shape for w in compact(weights)] == [w.shape for w in weights]


def test_compact_drops_the_pruned_units_and_their_input_columns():
    _, weights = pruned_weights("unit", 90)
    shapes = [tuple(w.shape) for w in compact(weights)]
    assert shapes == [(100, 784), (100, 100), (50, 100), (20, 50), (10, 20)]


def test_compact_keeps_one_unit_when_a_layer_loses_them_all():
    pruned, weights = pruned_weights("unit", 99, sizes=(7, 13, 5, 3))  # round(0.99 * 5) = 5: all of layer 2
    assert all(pruned.layers[1].weight.eq(0).all(dim=1))
    smaller = compact(weights)
    assert [w.shape[0] for w in smaller[:-1]] == [1, 1] and smaller[-1].shape == (3, 1)
    x = torch.randn(4, 7)
    with torch.no_grad():
        torch.testing.assert_close(dense_forward(transposed(smaller), x), pruned(x))


def test_compact_model_has_the_pruned_models_accuracy(tmp_path, data_dir, checkpoint):
    model, _ = checkpoints.load(checkpoint)
    test_data = data.load_data("mnist", data_dir, "test", download=False)
    for k in (50, 80, 90):
        pruned = prune(model, "unit", k)
        smaller = compact([layer.weight.detach() for layer in pruned.layers])
        with torch.no_grad():
            compact_predictions = dense_forward(transposed(smaller), test_data[0]).argmax(1)
        compact_accuracy = 100 * int((compact_predictions == test_data[1]).sum()) / len(test_data[1])
        assert compact_accuracy == utils.evaluate(pruned, test_data)
