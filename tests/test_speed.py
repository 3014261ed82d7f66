"""The fast paths compute what the pruned model computes: torch.sparse, the CSR kernel and compaction."""
import ctypes
import os

import pytest
import torch

from conftest import BUILDS, kernel_build, needs_kernel
from prune import METHODS, prune
from fastpath import plan as kernel_plan
from fastpath.plan import column_plan, cpu_kernel, csr_kernel_forward, l1_bytes, sparse_plan, sparse_path
from fastpath.compact import compact
from fastpath.paths import dense_forward, flop_ceiling, torch_sparse_forward, transposed
from benchmarks.harness import machine, numpy_dense_forward, peer_paths
from model import MLP


def pruned_weights(method, k, sizes=(784, 1000, 1000, 500, 200, 10)):
    torch.manual_seed(0)
    model = MLP(sizes)
    pruned = prune(model, method, k)
    return pruned, [layer.weight.detach() for layer in pruned.layers]


needs_compiler = needs_kernel("forward")


@needs_compiler
def test_the_kernel_builds_where_there_is_a_c_compiler():
    kernel, why_not = cpu_kernel()
    assert kernel is not None, why_not
    assert sparse_path("cpu") == "csr_kernel.c"


# Sizes either side of a vector (8 floats with AVX2, 16 with AVX-512) and of a tile (kernel_plan.TILE per thread), one
# image (column_kernel.c), and more than one round of tiles.
BATCHES = (1, 2, 7, 15, 16, 17, 100, 130, 256, 1000, 1001)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [0, 50, 90, 99])
def test_every_forward_path_gives_the_pruned_models_logits(method, k):
    pruned, weights = pruned_weights(method, k)
    x = torch.randn(max(BATCHES), 784)
    x[:3, :300] = x[0, 0]  # a blank part of the image, as column_kernel.c skips it
    with torch.no_grad():
        expected = pruned(x)
        paths = {"dense": dense_forward(transposed(weights), x),
                 "dense by numpy": numpy_dense_forward([w.numpy() for w in transposed(weights)], x),
                 "compact": dense_forward(transposed(compact(weights)), x)}
        for name, (forward, layers) in peer_paths(weights)[0].items():
            paths[name] = forward(layers, x[:7])
        for batch in (1, 7):  # torch's own sparse paths: slow at low sparsity, and not this repo's code
            paths[f"coo, batch {batch}"] = torch_sparse_forward([w.to_sparse() for w in weights], x[:batch])
            paths[f"csr, batch {batch}"] = torch_sparse_forward([w.to_sparse_csr() for w in weights], x[:batch])
    for name, logits in paths.items():
        torch.testing.assert_close(logits, expected[:len(logits)], rtol=1e-4, atol=1e-4, msg=name)


@needs_compiler
@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("method, k", [("unit", 90), ("weight", 90), ("unit", 50), ("global", 95), ("random", 99)])
def test_the_kernels_give_the_pruned_models_logits_at_every_batch(build, method, k, monkeypatch):
    library = kernel_build("forward", build)
    monkeypatch.setattr(kernel_plan, "cpu_kernel", lambda: (library, ""))
    pruned, weights = pruned_weights(method, k)
    x = torch.randn(max(BATCHES), 784)
    x[:3, :300] = x[0, 0]  # a blank part of the image, as column_kernel.c skips it
    plans = {planned: sparse_plan(weights, planned) for planned in (1, 100, 1001)}
    with torch.no_grad():
        expected = pruned(x)
        for planned, plan in plans.items():
            for batch in BATCHES:
                for start in (0, batch) if batch < 500 else (0,):  # other images next: nothing carried over
                    logits = csr_kernel_forward(plan, x[start:start + batch])
                    assert logits.shape == (batch, 10)
                    torch.testing.assert_close(logits, expected[start:start + batch], rtol=1e-4, atol=1e-4,
                                               msg=f"{build} build, planned for {planned}, batch {batch}")


@needs_compiler
@pytest.mark.parametrize("method, k", [("weight", 50), ("weight", 90), ("unit", 90), ("random", 99)])
def test_the_one_image_plan_holds_each_weight_once_by_column(method, k):
    _, weights = pruned_weights(method, k)
    smaller = compact(weights)
    plan = column_plan(smaller)
    # what the call passes to C: these layers, all of them, this scratch and these threads
    assert plan["arguments"] == (ctypes.addressof(plan["layers"]), len(smaller), plan["scratch"].data_ptr(),
                                 plan["threads"])
    for number, (arrays, layer, weight) in enumerate(zip(plan["arrays"], plan["layers"], smaller)):
        rows, columns = weight.shape
        assert (layer.rows, layer.columns, bool(layer.dense)) == (rows, columns, "start" not in arrays)
        assert ("row_sum" in arrays) == (number == 0)
        if number == 0:
            torch.testing.assert_close(arrays["row_sum"], weight.sum(dim=1))
        if layer.dense:
            assert torch.equal(arrays["val"].T, weight)
            continue
        start, row, val = arrays["start"], arrays["row"].long(), arrays["val"]
        assert start[0] == 0 and start[-1] == len(row) == weight.count_nonzero()
        rebuilt = torch.zeros(rows, columns)
        for j in range(columns):
            rows_j = row[start[j]:start[j + 1]]
            assert (rows_j.diff() > 0).all()  # each row once, in order
            rebuilt[rows_j, j] = val[start[j]:start[j + 1]]
        assert torch.equal(rebuilt, weight)


@needs_compiler
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("method, k", [("weight", 90), ("unit", 50), ("random", 99)])
def test_one_image_on_any_number_of_threads_gives_the_pruned_models_logits(method, k, threads):
    """Each thread takes a share of a layer's active columns; with 3, shares of a third, and of nothing where a
    layer has fewer active columns than threads."""
    pruned, weights = pruned_weights(method, k)
    plan = sparse_plan(weights, 1)
    plan["one"] = column_plan(compact(weights), threads)
    x = torch.randn(4, 784)
    x[0, :300] = x[0, 0]  # a blank part of the image, skipped
    x[1] = 0.5  # all background: no active column in the first layer
    x[2] = -x[2].abs()  # no pixel above the background
    with torch.no_grad():
        for image in x:
            torch.testing.assert_close(csr_kernel_forward(plan, image[None]), pruned(image[None]), rtol=1e-4,
                                       atol=1e-4)


@needs_compiler
def test_one_image_takes_two_threads_only_where_the_net_has_the_work_for_them(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    cases = [("weight", 90), ("weight", 99), ("unit", 80)]
    threads = {case: column_plan(compact(pruned_weights(*case)[1]))["threads"] for case in cases}
    # 240,000 nonzeros; 24,000; 221,000 weights in dense layers, which count for an eighth
    assert threads == {("weight", 90): 2, ("weight", 99): 1, ("unit", 80): 1}
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert column_plan(compact(pruned_weights("weight", 90)[1]))["threads"] == 1


@needs_compiler
@pytest.mark.parametrize("method, k", [("weight", 25), ("weight", 50), ("weight", 90), ("weight", 99), ("unit", 90)])
def test_the_plan_holds_each_weight_once_dense_or_in_segments_shortest_first(method, k):
    _, weights = pruned_weights(method, k)
    plan = sparse_plan(weights)
    smaller = compact(weights)
    assert len(plan["arrays"]) == len(smaller)
    for number, (arrays, layer, weight) in enumerate(zip(plan["arrays"], plan["layers"], smaller), 1):
        rows, columns = weight.shape
        assert (layer.rows, layer.columns) == (rows, columns)
        assert layer.dense == (weight.count_nonzero() >= 0.75 * weight.numel())
        if layer.dense:
            assert torch.equal(arrays["val"].view(rows, columns), weight)
            continue
        start, row, offset, val, first = (arrays[name] for name in ("start", "row", "offset", "val", "panel"))
        assert (offset % (4 * plan["width"]) == 0).all()
        col = offset // (4 * plan["width"])  # each nonzero's column, from the offset of its row of activations
        assert first[0] == 0 and first[-1] == len(row)
        rebuilt = torch.zeros(rows, columns)
        for q in range(layer.panels):
            segments = range(int(first[q]), int(first[q + 1]))
            lengths = [int(start[g + 1] - start[g]) for g in segments]
            assert lengths == sorted(lengths)
            panel_rows = row[first[q]:first[q + 1]].tolist()
            assert len(set(panel_rows)) == len(panel_rows)  # one segment per row and panel
            if q == 0 or (q == layer.panels - 1 and number < len(smaller)):  # sets the sums, or applies ReLU
                assert sorted(panel_rows) == list(range(rows))
            for g in segments:
                cols = col[start[g]:start[g + 1]]
                assert (cols * layer.panels // columns == q).all()  # in its panel's columns
                assert (cols.diff() > 0).all()  # in order, each column once
                rebuilt[int(row[g]), cols.long()] = val[start[g]:start[g + 1]]
        assert torch.equal(rebuilt, weight)  # every nonzero, in its place, and nothing else
    dense = [bool(layer.dense) for layer in plan["layers"]]
    assert dense == {25: [True] * 5, 50: [False] * 4 + [True], 90: [method == "unit"] * 4 + [True],
                     99: [False] * 4 + [True]}[k]
    if (method, k) == ("weight", 90):
        assert [layer.panels for layer in plan["layers"]][:3] != [1, 1, 1]  # the L1 panels are in use


@needs_compiler
@pytest.mark.parametrize("threads", [1, 3, 8])
def test_the_kernel_gives_the_same_logits_on_any_number_of_threads(threads, monkeypatch):
    """Each thread takes a slice of the batch; with more threads than vectors, some have nothing to do."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    _, weights = pruned_weights("weight", 90)
    plan = sparse_plan(weights)
    assert plan["threads"] == threads
    for batch in (1, 7, 100):
        x = torch.randn(batch, 784)
        with torch.no_grad():
            torch.testing.assert_close(csr_kernel_forward(plan, x), dense_forward(transposed(weights), x),
                                       rtol=1e-4, atol=1e-4)


@needs_compiler
def test_the_machine_is_named_with_the_vectors_the_kernel_was_built_for_and_its_l1():
    """A timing says what it ran on: the vectors that -march=native gave the kernel, and the L1 of its panels."""
    text = machine("cpu")
    assert f"{os.cpu_count()} CPUs" in text and f"{l1_bytes() // 1024} KB L1d" in text
    width = cpu_kernel()[0].vector_width()
    assert ("AVX-512" in text) == (width == 16), (text, width)


def test_flop_ceiling_counts_the_nonzero_weights():
    weights = [torch.ones(4, 3), torch.ones(2, 4)]  # 20 multiply-adds per sample when dense
    sparse = [torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 2, 0], [0, 0, 3]]),
              torch.tensor([[0, 0, 0, 1.0], [0, 0, 0, 0]])]
    assert flop_ceiling(weights, weights) == 1.0
    assert flop_ceiling(weights, sparse) == 20 / 4
    _, pruned = pruned_weights("weight", 90)
    nonzero = sum(int((w != 0).sum()) for w in pruned)
    assert flop_ceiling(pruned, pruned) == pytest.approx(2_386_000 / nonzero)
    assert nonzero == round(0.1 * 784_000) + round(0.1 * 1_000_000) + round(0.1 * 500_000) + round(0.1 * 100_000) + 2000
