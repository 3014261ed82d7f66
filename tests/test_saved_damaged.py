"""A damaged or crafted pruned-net file: each refused in one line naming the file and the fault, before any work,
by eval.py and by inference.load alike, and never a line of its code run."""
import math

import pytest
import torch

import eval as eval_script
import inference
import utils
from conftest import assert_fails_cleanly, run_main
from fastpath import paths
from test_bad_input import assert_nothing_written, assert_one_line, eval_argv


@pytest.fixture(scope="module")
def good(tmp_path_factory, trained, data_dir):
    """A whole pruned net, weight pruning at 50 % (scattered zeros, so its layers are in CSR form), as eval.py
    --save keeps it: what each test damages."""
    folder = tmp_path_factory.mktemp("good")
    eval_script.main([str(a) for a in ["--sparsity", "weight", "--ks", "50", "--no-timing", "--checkpoint", trained[0],
                                       "--data-dir", data_dir, "--no-download", "--results-dir", folder / "results",
                                       "--logdir", folder / "runs", "--plot", folder / "plot.png", "--save",
                                       folder / "nets"]])
    return folder / "nets" / "weight-50.pt"


def set_in(layer, key, value):
    layer[key] = value


def changed(tensor, index, value):
    tensor = tensor.clone()
    tensor[index] = value
    return tensor


LAYER = 1  # hidden layer 2 (from 1), 1000 x 1000, stored in CSR at 50 %
DAMAGES = {
    "three hidden layers": (lambda net: net.update(hidden=net["hidden"][:3]),
                            "another architecture: the number of hidden layers is 3 there, 4 in the MLP"),
    "a layer of another shape": (lambda net: set_in(net["hidden"][LAYER], "shape", [300, 1000]),
                                 "another architecture: hidden layer 2 is [300, 1000] there, [1000, 1000] in the MLP"),
    "a dense layer of another shape": (lambda net: net["hidden"].__setitem__(0, {"dense": torch.zeros(300, 784)}),
                                       "another architecture: hidden layer 1 is 300x784 there, 1000x784 in the MLP"),
    "logits of another shape": (lambda net: net.update(logits=torch.zeros(10, 100)),
                                "another architecture: the logits layer is 10x100 there, 10x200 in the MLP"),
    "crow_indices one short": (lambda net: set_in(net["hidden"][LAYER], "crow_indices",
                                                  net["hidden"][LAYER]["crow_indices"][:-1]),
                               "hidden layer 2's crow_indices has 1000 entries, not rows + 1 = 1001"),
    "crow_indices not from 0": (lambda net: set_in(net["hidden"][LAYER], "crow_indices",
                                                   net["hidden"][LAYER]["crow_indices"] + 1),
                                "hidden layer 2's crow_indices do not start at 0 and rise by 0 to 1000 a row"),
    "crow_indices falling": (lambda net: set_in(net["hidden"][LAYER], "crow_indices",
                                                changed(net["hidden"][LAYER]["crow_indices"], 5, 0)),
                             "hidden layer 2's crow_indices do not start at 0 and rise by 0 to 1000 a row"),
    "crow_indices of too many nonzeros": (lambda net: set_in(net["hidden"][LAYER], "crow_indices",
                                                             changed(net["hidden"][LAYER]["crow_indices"], -1, 10**6)),
                                          "hidden layer 2's crow_indices do not start at 0 and rise by 0 to 1000"),
    "a value missing": (lambda net: set_in(net["hidden"][LAYER], "values", net["hidden"][LAYER]["values"][:-1]),
                        "hidden layer 2 has 500000 nonzeros by its crow_indices, 500000 col_indices and 499999 values"),
    "a column too large": (lambda net: set_in(net["hidden"][LAYER], "col_indices",
                                              changed(net["hidden"][LAYER]["col_indices"], 7, 1000)),
                           "hidden layer 2's col_indices leave the range 0 to 999"),
    "a negative column": (lambda net: set_in(net["hidden"][LAYER], "col_indices",
                                             changed(net["hidden"][LAYER]["col_indices"], 7, -3)),
                          "hidden layer 2's col_indices leave the range 0 to 999"),
    "a column twice in a row": (lambda net: set_in(net["hidden"][LAYER], "col_indices",
                                                   changed(net["hidden"][LAYER]["col_indices"], 1,
                                                           int(net["hidden"][LAYER]["col_indices"][0]))),
                                "hidden layer 2's col_indices do not increase within each row"),
    "columns out of order": (lambda net: set_in(net["hidden"][LAYER], "col_indices",
                                                net["hidden"][LAYER]["col_indices"].flip(0).contiguous()),
                             "hidden layer 2's col_indices do not increase within each row"),
    "int64 columns": (lambda net: set_in(net["hidden"][LAYER], "col_indices", net["hidden"][LAYER]["col_indices"].long()),
                      "hidden layer 2's col_indices is torch.int64, not torch.int16"),
    "crow_indices of two dimensions": (lambda net: set_in(net["hidden"][LAYER], "crow_indices",
                                                          net["hidden"][LAYER]["crow_indices"][None]),
                                       "hidden layer 2's crow_indices has 2 dimensions, not 1"),
    "values as a sparse tensor": (lambda net: set_in(net["hidden"][LAYER], "values",
                                                     net["hidden"][LAYER]["values"].to_sparse()),
                                  "hidden layer 2's values is not a plain tensor"),
    "crow_indices as a list": (lambda net: set_in(net["hidden"][LAYER], "crow_indices",
                                                  net["hidden"][LAYER]["crow_indices"].tolist()),
                               "hidden layer 2's crow_indices is not a plain tensor"),
    "values of stride 0": (lambda net: set_in(net["hidden"][LAYER], "values",
                                              torch.ones(1).expand(len(net["hidden"][LAYER]["values"]))),
                           "hidden layer 2's values is not contiguous"),
    "a layer missing its columns": (lambda net: net["hidden"][LAYER].pop("col_indices"),
                                    "hidden layer 2 holds ['crow_indices', 'shape', 'values'], not shape"),
    "a layer that is a tensor": (lambda net: net["hidden"].__setitem__(LAYER, torch.zeros(1000, 1000)),
                                 "hidden layer 2 is not a dict"),
    "a NaN value": (lambda net: set_in(net["hidden"][LAYER], "values",
                                       changed(net["hidden"][LAYER]["values"], 3, math.nan)),
                    "hidden layer 2's values holds values that are not finite (NaN or inf)"),
    "an inf in the logits layer": (lambda net: net.update(logits=changed(net["logits"], (0, 0), math.inf)),
                                   "the logits layer holds values that are not finite (NaN or inf)"),
    "a NaN in a dense layer": (lambda net: net["hidden"].__setitem__(0, {"dense": torch.full((1000, 784), math.nan)}),
                               "hidden layer 1 holds values that are not finite (NaN or inf)"),
    "no accuracy": (lambda net: net.pop("accuracy"), "its record's 'accuracy' is missing, or not a finite number"),
    "an accuracy of NaN": (lambda net: net.update(accuracy=math.nan),
                           "its record's 'accuracy' is missing, or not a finite number"),
    "no method": (lambda net: net["pruned"].pop("method"), "its record's 'method' is missing, or not text"),
    "another data set": (lambda net: net["dataset"].update(name="cifar10"),
                         "its data set 'cifar10' is not one of mnist, fashion-mnist with its normalisation"),
}


@pytest.mark.parametrize("damage", [*DAMAGES, "truncated"])
def test_a_damaged_saved_net_is_refused_in_one_line_before_any_work(damage, good, data_dir, tmp_path, capsys,
                                                                    monkeypatch):
    bad = tmp_path / "bad.pt"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
        expected = f"{bad} is not a readable checkpoint (truncated"
    else:
        net = torch.load(good, weights_only=True)
        change, fault = DAMAGES[damage]
        change(net)
        torch.save(net, bad)
        expected = f"{bad} {'holds' if 'another architecture' in fault else 'is a damaged pruned net:'} {fault}"
    run_data = tmp_path / "run"
    result = run_main(eval_script.main, eval_argv(run_data, bad, data_dir), capsys)
    assert expected in assert_one_line(result)
    assert_nothing_written(run_data)

    def never(*args):
        raise AssertionError("the fast path was built from a file that was not checked")
    monkeypatch.setattr(paths, "sparse_plan", never)
    with pytest.raises(utils.UserError) as refused:
        inference.load(bad)
    assert expected in f"error: {refused.value}" and "\n" not in str(refused.value)


def test_a_saved_net_that_would_run_code_is_refused(good, tmp_path, data_dir, capsys):
    import test_bad_input
    bad, marker = tmp_path / "bad.pt", tmp_path / "ran"
    net = torch.load(good, weights_only=True)
    net["pruned"]["note"] = test_bad_input.RunsCode(str(marker))
    torch.save(net, bad)
    result = run_main(eval_script.main, eval_argv(tmp_path / "run", bad, data_dir), capsys)
    assert_fails_cleanly(result, "was refused: loading it would run code")
    assert not marker.exists()
